"""A fully configured app for `bastion check` (config, project tree, live webhook) and its mutants."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiohttp import web

KEY_ENVS = {"CHECK_TEST_ANTHROPIC_KEY": "sk-ant-test", "CHECK_TEST_OPENAI_KEY": "sk-test"}

GATE_WORKFLOW = """\
name: evals
on: [push]
jobs:
  gate:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      # the gate, written over two lines
      - run: |
          scripts/dev bastion eval run evals/support.yaml \\
            --gate --require-baseline
"""

APP_CODE = """\
from bastion.safety.retrieval import AccessContext, SqliteFtsRetriever
from bastion.safety.tools import ToolExecutor, ToolRegistry


async def answer(user, state, retriever: SqliteFtsRetriever, registry: ToolRegistry, calls):
    docs = await retriever.search("refund", AccessContext(user.tenant, groups=user.groups), 5)
    results = await ToolExecutor(registry, state).run_calls(calls, user.principal)
    return docs, results
"""


def _two(primary: str, fallback: str) -> dict[str, Any]:
    return {
        "deployments": [
            {"provider": "anthropic", "model": primary, "timeouts": {"first_token": 10}},
            {"provider": "openai", "model": fallback, "timeouts": {"first_token": 10}},
        ]
    }


def good_config(tmp: Path, webhook: str) -> dict[str, Any]:
    """Every checklist item set up: each feature pinned (with evidence), capped, guarded."""
    return {
        "store": {"url": f"sqlite:///{tmp / 'bastion.db'}"},
        "state": {"url": f"sqlite:///{tmp / 'state.db'}"},
        "observability": {"spill_path": str(tmp / "spill.jsonl")},
        "providers": {
            "anthropic": {"kind": "anthropic", "api_key_env": "CHECK_TEST_ANTHROPIC_KEY"},
            "openai": {"kind": "openai", "api_key_env": "CHECK_TEST_OPENAI_KEY"},
        },
        "models": {
            "claude-sonnet-5": _two("claude-sonnet-5", "gpt-4.1"),
            "claude-haiku-5-5": _two("claude-haiku-5-5", "gpt-4.1-mini"),
        },
        "cost": {
            "caps": {"global_daily_usd": 20, "end_user_caps": True},
            "provider_caps_usd": {"anthropic": 1000, "openai": 700},
            "provider_caps_period": {"anthropic": "month", "openai": "month"},
            "rate_limits": {"per_user": {"calls_per_day": 200, "requests_per_minute": 20}},
            "alerts": {"webhooks": [webhook], "forecast_usd": 10},
        },
        "features": {
            "default": {
                "model": "claude-haiku-5-5",
                "degraded": {"mode": "message"},
                "safety": {"injection_action": "block"},
            },
            "drafts": {
                "model": "claude-sonnet-5",
                "degraded": {"mode": "message"},
                "safety": {
                    "sql_tools": {"run_sql": "query"},
                    "sql_grants": {"check": {"orders": ["id", "status"]}},
                },
            },
        },
    }


def write_project(root: Path, *, ci: str | None = GATE_WORKFLOW, app_code: str = APP_CODE) -> Path:
    """An app's repository: eval suite and baseline, CI workflow, and the app's own code."""
    (root / "evals" / "baselines").mkdir(parents=True, exist_ok=True)
    (root / "evals" / "support.yaml").write_text("name: support\ncases: []\n")
    (root / "evals" / "baselines" / "support__m__v1.json").write_text("{}")
    if ci is not None:
        wf = root / ".github" / "workflows"
        wf.mkdir(parents=True, exist_ok=True)
        (wf / "evals.yml").write_text(ci)
    (root / "app").mkdir(exist_ok=True)
    (root / "app" / "main.py").write_text(app_code)
    return root


def write_config(root: Path, data: dict[str, Any], *, simulated: bool = False) -> Path:
    """The config file, with `eval select` evidence beside it for every pinned feature."""
    path = root / "bastion.yaml"
    path.write_text(yaml.safe_dump(data))
    for name, f in data["features"].items():
        if f.get("model"):
            evidence = {
                "kind": "bastion.eval.select",
                "feature": name,
                "suite": "support",
                "choice": f["model"],
                "simulated": simulated,
                "at": "2026-12-01T00:00:00Z",
                "candidates": [{"model": "claude-sonnet-5"}, {"model": f["model"]}],
            }
            (root / f"bastion.select.{name}.json").write_bytes(orjson.dumps(evidence))
    return path


def mutate(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy with ``a.b.c`` set to ``value`` (``...`` deletes the key)."""
    out = copy.deepcopy(data)
    *parents, last = path.split(".")
    node = out
    for p in parents:
        node = node.setdefault(p, {})
    if value is ...:
        node.pop(last, None)
    else:
        node[last] = value
    return out


@pytest.fixture
def provider_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in KEY_ENVS.items():
        monkeypatch.setenv(k, v)


@pytest.fixture
async def hooks() -> AsyncIterator[str]:
    """A local alert receiver: /ok answers 200, /bad 500, /slow never within the 2 s bound."""
    import asyncio

    async def ok(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="ok")

    async def bad(request: web.Request) -> web.Response:
        return web.Response(status=500, text="no")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="late")

    app = web.Application()
    app.router.add_post("/ok", ok)
    app.router.add_post("/bad", bad)
    app.router.add_post("/slow", slow)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()

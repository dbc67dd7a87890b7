"""Mutation tests of `bastion check` (issue #17 item 3): every item the checker can emit has a
config (or CI file, or app tree) lacking exactly that item, which must not PASS, and the fully
set-up app, which must PASS. A new item without an entry here fails the coverage test."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tests.check._check_fixtures import (
    APP_CODE,
    GATE_WORKFLOW,
    good_config,
    mutate,
    write_config,
    write_project,
)
from tests.conftest import free_port

from bastion.check import ITEMS, run_check

SOLO = {"deployments": [{"provider": "anthropic", "model": "claude-opus-5"}]}
NO_TOOLS_CODE = "def answer():\n    return 'no tools, no retrieval'\n"


@dataclass(frozen=True)
class Lack:
    """One way of lacking an item: a config edit, and/or a different CI file, app code or env."""

    name: str
    edit: Callable[[dict[str, Any]], dict[str, Any]] = lambda d: d
    ci: str | None = GATE_WORKFLOW
    app_code: str = APP_CODE
    unset_env: tuple[str, ...] = ()
    simulated: bool = False
    hook: str = "/ok"
    expect_features: tuple[str, ...] = field(default=())


def _pin_solo(d: dict[str, Any]) -> dict[str, Any]:
    """The issue's case: `drafts` pinned to a single-deployment model, other aliases fine."""
    d = mutate(d, "models.solo", SOLO)
    return mutate(d, "features.drafts.model", "solo")


def _pin_solo_error(d: dict[str, Any]) -> dict[str, Any]:
    return mutate(_pin_solo(d), "features.drafts.degraded.mode", "error")


MUTATIONS: dict[str, list[Lack]] = {
    "cost.daily_cap": [
        Lack(
            "no cap",
            lambda d: mutate(d, "cost.caps.global_daily_usd", ...),
            expect_features=("default", "drafts"),
        ),
        Lack(
            "console cap without period",
            lambda d: mutate(d, "cost.provider_caps_period", {"anthropic": "month"}),
        ),
        Lack(
            "monthly console cap below 30 app days",
            lambda d: mutate(d, "cost.provider_caps_usd.openai", 500),
        ),
    ],
    "cost.per_user_limit": [
        Lack("no per-user limit", lambda d: mutate(d, "cost.rate_limits.per_user", {})),
        Lack("limit counts the key", lambda d: mutate(d, "cost.caps.end_user_caps", False)),
    ],
    "cost.max_tokens": [
        Lack(
            "uncapped limit",
            lambda d: mutate(d, "features.drafts.max_tokens_limit", 1_000_000),
            expect_features=("drafts",),
        ),
    ],
    "cost.cheapest_model": [
        Lack(
            "no pin", lambda d: mutate(d, "features.drafts.model", ...), expect_features=("drafts",)
        ),
        Lack("simulated evidence", simulated=True),
    ],
    "cost.prompt_caching": [
        Lack(
            "caching off",
            lambda d: mutate(d, "features.drafts.prompt_caching", False),
            expect_features=("drafts",),
        ),
    ],
    "cost.spend_alerts": [
        Lack("no webhook", lambda d: mutate(d, "cost.alerts.webhooks", [])),
        Lack("webhook on a closed port", hook="closed"),
        Lack("webhook answering 500", hook="/bad"),
    ],
    "latency.streaming": [
        Lack(
            "no per-key stream limit",
            lambda d: mutate(d, "server.max_concurrent_streams_per_key", None),
        ),
    ],
    "latency.timeout_fallback": [
        Lack("single deployment, error mode", _pin_solo_error, expect_features=("drafts",)),
    ],
    "latency.ttft": [
        Lack(
            "no TTFT budget",
            lambda d: mutate(d, "features.drafts.latency_budget", {"first_token_ms": None}),
            expect_features=("drafts",),
        ),
    ],
    "latency.parallel_tools": [Lack("no tool executor in app code", app_code=NO_TOOLS_CODE)],
    "reliability.readiness": [Lack("key unset", unset_env=("CHECK_TEST_OPENAI_KEY",))],
    "reliability.failover": [
        Lack("feature pinned to a single deployment", _pin_solo, expect_features=("drafts",)),
    ],
    "reliability.retries": [
        Lack("no retries", lambda d: mutate(d, "reliability.retry", {"attempts_per_deployment": 1}))
    ],
    "reliability.degradation": [
        Lack(
            "error mode",
            lambda d: mutate(d, "features.drafts.degraded.mode", "error"),
            expect_features=("drafts",),
        ),
    ],
    "reliability.breaker": [
        Lack("breaker off", lambda d: mutate(d, "reliability.breaker", {"enabled": False}))
    ],
    "reliability.kill_switch": [
        Lack("process-local state", lambda d: mutate(d, "state.url", "memory://"))
    ],
    "safety.injection": [
        Lack(
            "scanning off everywhere",
            lambda d: mutate(
                mutate(d, "features.drafts.safety.injection_action", "off"),
                "features.default.safety.injection_action",
                "off",
            ),
            expect_features=("default", "drafts"),
        ),
        Lack(
            "scanning off",
            lambda d: mutate(d, "features.drafts.safety.injection_action", "off"),
            expect_features=("drafts",),
        ),
        Lack(
            "documents only flagged",
            lambda d: mutate(d, "features.drafts.safety.injection_doc_action", "flag"),
            expect_features=("drafts",),
        ),
    ],
    "safety.output_validation": [
        Lack(
            "leak watching off",
            lambda d: mutate(d, "features.drafts.safety.leak_action", "off"),
            expect_features=("drafts",),
        ),
        Lack("no SQL tools", lambda d: mutate(d, "features.drafts.safety.sql_tools", {})),
        Lack(
            "SQL only flagged",
            lambda d: mutate(d, "features.drafts.safety.sql_action", "flag"),
            expect_features=("drafts",),
        ),
    ],
    "safety.pii_logging": [
        Lack("names unscrubbed", lambda d: mutate(d, "safety", {"pii": {"ner": "off"}}))
    ],
    "safety.rag_authorization": [
        Lack("no authorized retrieval in app code", app_code=NO_TOOLS_CODE)
    ],
    "safety.tool_sandbox": [Lack("no tool executor in app code", app_code=NO_TOOLS_CODE)],
    "observability.call_logs": [
        Lack("no bodies recorded", lambda d: mutate(d, "observability.body_max_chars", 0))
    ],
    "observability.eval_ci": [
        Lack(
            "gate swallowed by || true",
            ci=GATE_WORKFLOW.replace(
                "--require-baseline", "--require-baseline || true  # never blocks"
            ),
        ),
        Lack(
            "gate commented out",
            ci=GATE_WORKFLOW.replace("scripts/dev bastion", "# scripts/dev bastion"),
        ),
        Lack(
            "continue-on-error",
            ci=GATE_WORKFLOW.replace(
                "      - run: |", "      - continue-on-error: true\n        run: |"
            ),
        ),
        Lack(
            "job disabled", ci=GATE_WORKFLOW.replace("    runs-on:", "    if: false\n    runs-on:")
        ),
        Lack("no CI", ci=None),
    ],
    "observability.dashboards": [
        Lack("no quality sampling", lambda d: mutate(d, "observability.quality_rate", 0.0)),
    ],
}

LACKS = [
    pytest.param(item_id, lack, id=f"{item_id}: {lack.name}")
    for item_id, lacks in MUTATIONS.items()
    for lack in lacks
]


def test_every_item_the_checker_emits_has_a_mutation_test() -> None:
    assert set(MUTATIONS) == {i.id for i in ITEMS}
    assert all(MUTATIONS.values())


async def _run(tmp: Path, hooks: str, item_id: str, lack: Lack | None) -> Any:
    lack = lack or Lack("none")
    # a port just bound and released: nothing listens there
    hook = f"http://127.0.0.1:{free_port()}/alert" if lack.hook == "closed" else hooks + lack.hook
    data = lack.edit(good_config(tmp, hook))
    project = write_project(tmp, ci=lack.ci, app_code=lack.app_code)
    cfg = write_config(tmp, data, simulated=lack.simulated)
    (result,) = await run_check(cfg, project_dir=project, only=item_id)
    assert result.id == item_id
    assert not any("check crashed" in e for e in result.evidence), result.evidence
    return result


@pytest.mark.parametrize("item_id", list(MUTATIONS))
async def test_the_fully_set_up_app_passes_the_item(
    tmp_path: Path, hooks: str, provider_keys: None, item_id: str
) -> None:
    result = await _run(tmp_path, hooks, item_id, None)
    assert result.status == "PASS", result.evidence
    assert not result.failing_features


@pytest.mark.parametrize(("item_id", "lack"), LACKS)
async def test_an_app_lacking_the_item_does_not_pass_it(
    tmp_path: Path,
    hooks: str,
    provider_keys: None,
    monkeypatch: pytest.MonkeyPatch,
    item_id: str,
    lack: Lack,
) -> None:
    for name in lack.unset_env:
        monkeypatch.delenv(name)
    result = await _run(tmp_path, hooks, item_id, lack)
    assert result.status in ("WARN", "FAIL"), result.evidence
    for feat in lack.expect_features:
        assert feat in result.failing_features, (result.failing_features, result.evidence)

"""`bastion check` and `/readyz` give one readiness verdict for one config (one function decides)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from tests.asgi import asgi_request

from bastion.check import run_check
from bastion.config import load_config
from bastion.gateway import Gateway
from bastion.server.app import create_app

KEY = "CHECK_READY_TEST_KEY"


def _config(tmp: Path) -> Path:
    path = tmp / "bastion.yaml"
    path.write_text(
        f"""
store: {{url: "sqlite:///{tmp / "b.db"}"}}
state: {{url: "memory://"}}
observability: {{spill_path: "{tmp / "spill.jsonl"}"}}
providers:
  anthropic: {{kind: anthropic, api_key_env: {KEY}}}
models:
  claude-sonnet-5: {{deployments: [{{provider: anthropic, model: claude-sonnet-5}}]}}
"""
    )
    return path


async def _both(cfg: Path) -> tuple[int, str, str]:
    async with Gateway(load_config(cfg)) as gw:
        status, _, body = await asgi_request(create_app(gw), "GET", "/readyz")
    (item,) = await run_check(cfg, project_dir=cfg.parent, only="reliability.readiness")
    return status, orjson.loads(body)["status"], item.status


@pytest.mark.parametrize("key", [None, "sk-ant-test"])
async def test_check_fails_exactly_when_readyz_is_not_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str | None
) -> None:
    if key is None:
        monkeypatch.delenv(KEY, raising=False)
    else:
        monkeypatch.setenv(KEY, key)
    status, verdict, item = await _both(_config(tmp_path))
    if key is None:
        assert (status, verdict, item) == (503, "not_ready", "FAIL")
    else:
        assert (status, verdict, item) == (200, "ready", "PASS")


async def test_an_unreachable_record_store_is_not_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY, "sk-ant-test")
    cfg = _config(tmp_path)
    cfg.write_text(
        cfg.read_text().replace(
            f"sqlite:///{tmp_path / 'b.db'}", "postgresql://nobody@127.0.0.1:1/none"
        )
    )
    (item,) = await run_check(cfg, project_dir=tmp_path, only="reliability.readiness")
    assert item.status == "FAIL"
    assert any("record store is unreachable" in e for e in item.evidence), item.evidence

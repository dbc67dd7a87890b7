"""A spent budget answers with the feature's degraded message when the feature asks for one."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import sim_models

import bastion


def _cfg(tmp: Path, mode: str) -> dict[str, object]:
    return {
        "store": {"url": f"sqlite:///{tmp / 'b.db'}"},
        "state": {"url": "memory://"},
        "observability": {"spill_path": str(tmp / "spill.jsonl")},
        "providers": {"sim": {"kind": "sim"}},
        "models": sim_models(),
        "features": {
            "default": {
                "daily_budget_usd": 0.0,
                "degraded": {
                    "mode": mode,
                    "message": "Drafting is unavailable, please reply manually",
                },
            }
        },
    }


async def test_spent_budget_gets_the_canned_message(tmp_path: Path) -> None:
    async with bastion.Gateway.from_config(None, **_cfg(tmp_path, "message")) as gw:
        msg = await gw.messages(
            {"model": "claude-sonnet-5", "messages": [{"role": "user", "content": "x"}]}
        )
        assert msg["content"][0]["text"] == "Drafting is unavailable, please reply manually"
        assert gw.simulator.requests == []
        await gw.recorder.flush()
        (rec,) = await gw.store.recent_calls(1)
        assert rec.flags["degraded"] == "budget" and rec.degraded


async def test_error_mode_keeps_the_429(tmp_path: Path) -> None:
    async with bastion.Gateway.from_config(None, **_cfg(tmp_path, "error")) as gw:
        with pytest.raises(bastion.BudgetExceeded):
            await gw.messages(
                {"model": "claude-sonnet-5", "messages": [{"role": "user", "content": "x"}]}
            )

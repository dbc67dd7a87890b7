"""Hedging: no first token within the hedge delay starts the next deployment; the first to stream wins."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.conftest import sim_models

import bastion
import bastion.call


def _cfg(tmp: Path, primary_fault: str | None) -> dict[str, Any]:
    primary: dict[str, Any] = {"provider": "sim", "model": "claude-sonnet-5"}
    if primary_fault:
        primary["headers"] = {"x-sim-fault": primary_fault}
    return {
        "store": {"url": f"sqlite:///{tmp / 'h.db'}"},
        "state": {"url": "memory://"},
        "observability": {"spill_path": str(tmp / "spill.jsonl")},
        "providers": {"sim": {"kind": "sim"}},
        "models": {
            **sim_models(),
            "hedged": {"deployments": [primary, {"provider": "sim", "model": "claude-haiku-5-5"}]},
        },
        "features": {"default": {"hedge_delay": 0.2}},
    }


async def test_slow_primary_is_hedged_and_the_backup_wins(tmp_path: Path) -> None:
    async with bastion.Gateway.from_config(None, **_cfg(tmp_path, "slow_first:3000")) as gw:
        t0 = time.monotonic()
        events = [
            e
            async for e in gw.stream_messages(
                {
                    "model": "hedged",
                    "max_tokens": 50,
                    "messages": [{"role": "user", "content": "hi"}],
                }
            )
        ]
        elapsed = time.monotonic() - t0
        assert events[-1]["type"] == "message_stop"
        assert events[0]["message"]["model"] == "claude-haiku-5-5"
        assert elapsed < 2.0
        await gw.recorder.flush()
        (rec,) = await gw.store.recent_calls(1)
        assert rec.hedged and rec.attempts == 2
        assert rec.deployment and rec.deployment.startswith("sim/claude-haiku-5-5")
        # the cancelled primary is still accounted for in cost: its outcome is unknown, so at
        # its own model's worst case (it may have been billed in full)
        assert rec.flags.get("cost_bound") is True
        price = gw.prices.get("claude-haiku-5-5")
        assert price is not None
        own = price.cost(bastion.call.Usage(rec.input_tokens, rec.output_tokens))
        assert rec.cost_usd > own


async def test_fast_primary_is_not_hedged(tmp_path: Path) -> None:
    async with bastion.Gateway.from_config(None, **_cfg(tmp_path, None)) as gw:
        await gw.messages(
            {"model": "hedged", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
        )
        models = [r.body["model"] for r in gw.simulator.requests]
        assert models == ["claude-sonnet-5"]

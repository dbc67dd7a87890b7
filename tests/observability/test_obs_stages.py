"""Latency budgets: each call records its stage timings; stages over the feature's budget are
flagged on the record and counted in metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import sim_models

import bastion
from bastion.observability.metrics import render_metrics


def _cfg(tmp: Path) -> dict[str, Any]:
    return {
        "store": {"url": f"sqlite:///{tmp / 's.db'}"},
        "state": {"url": "memory://"},
        "observability": {"spill_path": str(tmp / "spill.jsonl")},
        "providers": {"sim": {"kind": "sim"}},
        "models": {
            **sim_models(),
            "slow": {
                "deployments": [
                    {
                        "provider": "sim",
                        "model": "slow",
                        "headers": {"x-sim-fault": "slow_first:300"},
                    }
                ]
            },
        },
        "features": {"default": {"latency_budget": {"first_token_ms": 200, "retrieval_ms": 100}}},
    }


async def test_stage_timings_and_budget_flags(tmp_path: Path) -> None:
    async with bastion.Gateway.from_config(None, **_cfg(tmp_path)) as gw:
        [
            e
            async for e in gw.stream_messages(
                {"model": "slow", "messages": [{"role": "user", "content": "x"}]},
                retrieval_ms="250",
            )
        ]
        [
            e
            async for e in gw.stream_messages(
                {"model": "claude-sonnet-5", "messages": [{"role": "user", "content": "x"}]}
            )
        ]
        await gw.recorder.flush()
        fast, slow = await gw.store.recent_calls(2)
        assert set(slow.stages) >= {"auth_routing", "guards", "first_token", "total", "retrieval"}
        assert slow.stages["first_token"] >= 300
        assert sorted(slow.flags["over_budget"]) == ["first_token", "retrieval"]
        assert "over_budget" not in fast.flags
        body, _ = render_metrics(gw.metrics)
        text = body.decode()
        assert (
            'bastion_stage_duration_seconds_count{feature="default",stage="first_token"} 2.0'
            in text
        )
        assert 'bastion_stage_over_budget_total{feature="default",stage="first_token"} 1.0' in text

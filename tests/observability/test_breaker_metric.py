"""``bastion_breaker_state`` has a series per deployment on the default (embedded) state, and it
reads the breaker as the counter store holds it: open after a run of failures, closed otherwise
(on Redis the dashboard test shows another replica's breaker the same way)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from tests.conftest import sim_models

import bastion
from bastion.errors import BastionError
from bastion.observability.metrics import render_metrics

FAILING = {"provider": "sim", "model": "down", "headers": {"x-sim-fault": "status:500"}}


def _cfg(tmp: Path) -> dict[str, Any]:
    return {
        "store": {"url": f"sqlite:///{tmp / 'b.db'}"},
        "state": {"url": f"sqlite:///{tmp / 'state.db'}"},  # the embedded default's kind
        "observability": {"spill_path": str(tmp / "spill.jsonl")},
        "providers": {"sim": {"kind": "sim"}},
        "models": {**sim_models(), "flaky": {"deployments": [FAILING]}},
        "reliability": {
            "breaker": {"failure_threshold": 3},
            "retry": {"backoff_base": 0.001, "backoff_max": 0.002},
        },
    }


def _series(gw: bastion.Gateway) -> dict[str, float]:
    text = render_metrics(gw.metrics)[0].decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("bastion_breaker_state{"):
            name = line.split('deployment="', 1)[1].split('"', 1)[0]
            out[name] = float(line.rsplit(" ", 1)[1])
    return out


async def test_the_breaker_series_follow_the_counter_store(tmp_path: Path) -> None:
    ask = {"model": "flaky", "messages": [{"role": "user", "content": "hi"}]}
    async with bastion.Gateway.from_config(None, **_cfg(tmp_path)) as gw:
        await gw.metrics.refresh()
        before = _series(gw)
        assert before["sim/down#0"] == 0.0  # closed, but present
        assert before["sim/gpt-4.1#0"] == 0.0
        for _ in range(6):
            with contextlib.suppress(BastionError):
                await gw.chat_completions(ask)
        await gw.metrics.refresh()
        assert _series(gw)["sim/down#0"] == 2.0  # open
        assert _series(gw)["sim/gpt-4.1#0"] == 0.0

"""In-process (``ResponsesApi`` over a ``Gateway`` on the embedded simulator): Responses calls
reach the simulator as Responses requests, every attempt of them (a retry and a hedge
included), while chat calls on the same deployments stay chat."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import sim_models

import bastion
from bastion.responses import ResponsesApi


def _cfg(tmp: Path) -> dict[str, Any]:
    models = sim_models(
        {
            "flaky": {
                "deployments": [
                    {
                        "provider": "sim",
                        "model": "flaky",
                        "headers": {"x-sim-fault": "fail_first:1"},
                    },
                ]
            },
            "hedged": {
                "deployments": [
                    {"provider": "sim", "model": "slow", "headers": {"x-sim-ttft-ms": "400"}},
                    {"provider": "sim", "model": "fast"},
                ]
            },
        }
    )
    return {
        "store": {"url": f"sqlite:///{tmp / 'lib.db'}"},
        "state": {"url": "memory://"},
        "observability": {"spill_path": str(tmp / "spill.jsonl")},
        "providers": {"sim": {"kind": "sim"}},
        "models": models,
        "features": {"default": {"pii_output": "off"}, "hedge": {"hedge_delay": 0.05}},
    }


async def test_every_attempt_of_a_responses_call_is_a_responses_request(tmp_path: Path) -> None:
    async with bastion.Gateway.from_config(None, **_cfg(tmp_path)) as gw:
        api = ResponsesApi(gw)
        r = await api.create({"model": "gpt-4.1", "input": "Hello"})
        assert r["status"] == "completed"
        events = [e async for e in api.stream({"model": "flaky", "input": "Again"})]
        assert events[-1]["type"] == "response.completed"
        hedged = await api.create({"model": "hedged", "input": "Race"}, feature="hedge")
        assert hedged["status"] == "completed"
        await gw.chat_completions(
            {"model": "gpt-4.1", "messages": [{"role": "user", "content": "Chat"}]}
        )
        seen = [(q.path, q.model) for q in gw.simulator.requests]
        assert seen[0] == ("/v1/responses", "gpt-4.1")
        assert seen.count(("/v1/responses", "flaky")) == 2  # the failed attempt and its retry
        assert ("/v1/responses", "slow") in seen and ("/v1/responses", "fast") in seen
        assert seen[-1] == ("/v1/chat/completions", "gpt-4.1")
        assert {p for p, _ in seen[:-1]} == {"/v1/responses"}

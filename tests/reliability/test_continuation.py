"""A stream cut after its first byte is carried on at a fallback that accepts assistant prefill,
so an Anthropic client receives one whole answer instead of an error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import sim_models

import bastion


def _cfg(tmp: Path, fallback: bool) -> dict[str, Any]:
    deps: list[dict[str, Any]] = [
        {"provider": "sim", "model": "claude-sonnet-5", "headers": {"x-sim-fault": "cut_after:6"}}
    ]
    if fallback:
        deps.append({"provider": "sim", "model": "claude-haiku-5-5"})
    return {
        "store": {"url": f"sqlite:///{tmp / 'c.db'}"},
        "state": {"url": "memory://"},
        "observability": {"spill_path": str(tmp / "spill.jsonl")},
        "providers": {"sim": {"kind": "sim"}},
        "models": {**sim_models(), "cut": {"deployments": deps}},
    }


async def test_cut_stream_is_continued_from_the_partial_text(tmp_path: Path) -> None:
    async with bastion.Gateway.from_config(None, **_cfg(tmp_path, True)) as gw:
        events = [
            e
            async for e in gw.stream_messages(
                {
                    "model": "cut",
                    "max_tokens": 200,
                    "messages": [{"role": "user", "content": "tell me"}],
                }
            )
        ]
        types = [e["type"] for e in events]
        assert types[0] == "message_start" and types[-1] == "message_stop"
        assert types.count("message_start") == 1 and types.count("content_block_start") == 1
        assert "error" not in types
        text = "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta")
        first, second = gw.simulator.requests[-2:]
        assert (
            first.body["model"] == "claude-sonnet-5" and second.body["model"] == "claude-haiku-5-5"
        )
        prefill = second.body["messages"][-1]
        assert prefill["role"] == "assistant" and prefill["content"]
        assert text.startswith(prefill["content"])  # the client got the partial text, then the rest
        assert len(text) > len(prefill["content"]) + 5
        await gw.recorder.flush()
        (rec,) = await gw.store.recent_calls(1)
        assert rec.flags["continued"] is True and rec.attempts == 2
        assert rec.output_tokens > 0


async def test_without_a_prefill_capable_fallback_the_cut_ends_in_an_error_event(
    tmp_path: Path,
) -> None:
    async with bastion.Gateway.from_config(None, **_cfg(tmp_path, False)) as gw:
        types: list[str] = []
        try:
            async for e in gw.stream_messages(
                {"model": "cut", "max_tokens": 200, "messages": [{"role": "user", "content": "x"}]}
            ):
                types.append(e["type"])
        except bastion.UpstreamError:
            types.append("error")
        assert types[-1] == "error" and "message_stop" not in types

"""The same pipeline in-process: `async with Gateway.from_config(...)`, both API shapes, streaming."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import sim_models

import bastion
from bastion.errors import InvalidRequest, NotFound


def _cfg(tmp: Path) -> dict[str, object]:
    return {
        "store": {"url": f"sqlite:///{tmp / 'lib.db'}"},
        "state": {"url": "memory://"},
        "observability": {"spill_path": str(tmp / "spill.jsonl")},
        "providers": {"sim": {"kind": "sim"}},
        "models": sim_models(),
    }


async def test_library_calls_both_shapes_and_streams(tmp_path: Path) -> None:
    async with bastion.Gateway.from_config(None, **_cfg(tmp_path)) as gw:
        msg = await gw.messages(
            {
                "model": "claude-sonnet-5",
                "messages": [{"role": "user", "content": "[[sim:reply=hi there]]"}],
            },
            user="u1",
            feature="lib",
        )
        assert msg["content"][0]["text"] == "hi there"
        chat = await gw.chat_completions(
            {"model": "gpt-4.1", "messages": [{"role": "user", "content": "x"}]}
        )
        assert chat["choices"][0]["message"]["content"]
        events = [
            e
            async for e in gw.stream_messages(
                {"model": "claude-sonnet-5", "messages": [{"role": "user", "content": "stream"}]}
            )
        ]
        assert events[0]["type"] == "message_start" and events[-1]["type"] == "message_stop"
        chunks = [
            c
            async for c in gw.stream_chat_completions(
                {"model": "gpt-4.1", "messages": [{"role": "user", "content": "stream"}]}
            )
        ]
        assert any(c["choices"] and c["choices"][0]["delta"].get("content") for c in chunks)
        # the max_tokens guard ran: the simulator received the feature default
        assert gw.simulator.requests[0].body["max_tokens"] == 800


async def test_library_raises_typed_errors(tmp_path: Path) -> None:
    async with bastion.Gateway.from_config(None, **_cfg(tmp_path)) as gw:
        with pytest.raises(NotFound):
            await gw.messages({"model": "nope", "messages": [{"role": "user", "content": "x"}]})
        with pytest.raises(InvalidRequest):
            await gw.messages({"model": "claude-sonnet-5", "messages": []})

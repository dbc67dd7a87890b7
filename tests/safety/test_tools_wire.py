"""Tool calls, results and definitions convert to and from both wire formats without loss."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from bastion.call import Principal
from bastion.providers.translate.model import TextPart, ToolCallPart
from bastion.safety.tools import (
    ToolCall,
    ToolContext,
    ToolExecutor,
    ToolRegistry,
    anthropic_tool_definitions,
    calls_from_anthropic,
    calls_from_openai,
    calls_from_parts,
    calls_to_anthropic,
    calls_to_openai,
    openai_tool_definitions,
    results_to_anthropic,
    results_to_openai,
    results_to_parts,
)
from bastion.state import CounterStore, open_state

USER = Principal(key_id="k", name="app", user="u", roles=("reader",))
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def registry() -> ToolRegistry:
    reg = ToolRegistry()

    @reg.tool(parameters=SCHEMA, permission="reader")
    async def weather(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        """Current weather for a city."""
        return {"city": args["city"], "temp_c": 21}

    @reg.tool(parameters={"type": "object"}, permission="admin")
    async def reboot(args: dict[str, Any], ctx: ToolContext) -> str:
        """Reboot the fleet."""
        return "rebooted"

    return reg


@pytest.fixture
async def state() -> AsyncIterator[CounterStore]:
    store = open_state("memory://")
    try:
        yield store
    finally:
        await store.close()


def test_definitions_in_each_format() -> None:
    specs = registry().visible_to(USER)
    assert anthropic_tool_definitions(specs) == [
        {"name": "weather", "description": "Current weather for a city.", "input_schema": SCHEMA}
    ]
    assert openai_tool_definitions(specs) == [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "description": "Current weather for a city.",
                "parameters": SCHEMA,
            },
        }
    ]


async def test_anthropic_round_trip_through_the_executor(state: CounterStore) -> None:
    assistant = {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Oslo"}},
            {"type": "tool_use", "id": "toolu_2", "name": "reboot", "input": {}},
        ],
    }
    calls = calls_from_anthropic(assistant)
    assert [(c.id, c.name) for c in calls] == [("toolu_1", "weather"), ("toolu_2", "reboot")]
    assert calls_to_anthropic(calls) == assistant["content"][1:]
    results = await ToolExecutor(registry(), state).run_calls(calls, USER)
    turn = results_to_anthropic(results)
    assert turn["role"] == "user"
    first, second = turn["content"]
    assert first["type"] == "tool_result" and first["tool_use_id"] == "toolu_1"
    assert "is_error" not in first and '"temp_c":21' in first["content"]
    assert second["tool_use_id"] == "toolu_2" and second["is_error"] is True
    assert "permission_denied" in second["content"] and "rebooted" not in second["content"]


async def test_openai_round_trip_through_the_executor(state: CounterStore) -> None:
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city": "Lima"}'},
            }
        ],
    }
    calls = calls_from_openai(message)
    assert calls == [ToolCall("call_1", "weather", '{"city": "Lima"}')]
    assert calls_to_openai(calls) == message["tool_calls"]
    results = await ToolExecutor(registry(), state).run_calls(calls, USER)
    [tool_message] = results_to_openai(results)
    assert tool_message["role"] == "tool" and tool_message["tool_call_id"] == "call_1"
    body = tool_message["content"].split("\n")[1]
    assert orjson.loads(body) == {"city": "Lima", "temp_c": 21}


def test_calls_convert_across_formats() -> None:
    openai_calls = calls_from_openai(
        {"tool_calls": [{"id": "c", "function": {"name": "weather", "arguments": '{"city":"A"}'}}]}
    )
    assert calls_to_anthropic(openai_calls) == [
        {"type": "tool_use", "id": "c", "name": "weather", "input": {"city": "A"}}
    ]
    broken = calls_to_anthropic([ToolCall("d", "weather", "{oops")])
    assert broken[0]["input"] == {"_raw": "{oops"}


async def test_provider_neutral_parts_convert(state: CounterStore) -> None:
    parts = [TextPart("hi"), ToolCallPart("t1", "weather", {"city": "Rome"})]
    calls = calls_from_parts(parts)
    assert calls == [ToolCall("t1", "weather", {"city": "Rome"})]
    results = await ToolExecutor(registry(), state).run_calls(calls, USER)
    [part] = results_to_parts(results)
    assert part.tool_call_id == "t1" and not part.is_error
    assert isinstance(part.content[0], TextPart) and "Rome" in part.content[0].text

"""The simulator speaks OpenAI's Responses API (``POST /v1/responses``) well enough for the
official SDK: bodies, the documented event sequence, function calls, errors and faults."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import openai
import pytest

if TYPE_CHECKING:
    from conftest import Clients, RawPost, SimServer

MODEL = "sim-small"
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
TEXT_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


async def test_create_returns_a_response_the_sdk_parses(
    sdk: Clients, sim_server: SimServer
) -> None:
    raw = await sdk.openai(sim_server).responses.with_raw_response.create(
        model=MODEL, instructions="Be brief.", input="Hello there", max_output_tokens=500
    )
    r = raw.parse()
    assert raw.headers["x-request-id"].startswith("req_")
    assert r.object == "response" and r.id.startswith("resp_") and r.status == "completed"
    assert r.model == MODEL and r.instructions == "Be brief." and r.max_output_tokens == 500
    [item] = r.output
    assert item.type == "message" and item.id.startswith("msg_") and item.status == "completed"
    assert r.output_text.endswith(".")
    assert r.usage is not None and r.usage.output_tokens == 24 and r.usage.input_tokens > 0
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    [seen] = sim_server.sim.requests
    assert seen.path == "/v1/responses" and seen.body["input"] == "Hello there"


async def test_stream_follows_the_documented_event_sequence(
    sdk: Clients, sim_server: SimServer
) -> None:
    async with sdk.openai(sim_server).responses.stream(model=MODEL, input="Stream") as s:
        events = [e async for e in s]
        final = await s.get_final_response()
    kinds = [e.type for e in events]
    assert [k for i, k in enumerate(kinds) if i == 0 or k != kinds[i - 1]] == TEXT_EVENTS
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == final.output_text and final.usage is not None
    assert final.usage.output_tokens == 24


async def test_function_calls_in_body_and_stream(sdk: Clients, sim_server: SimServer) -> None:
    client = sdk.openai(sim_server)
    r = await client.responses.create(model=MODEL, input="Weather in Oslo?", tools=[WEATHER])
    [call] = r.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.call_id.startswith("call_") and json.loads(call.arguments)["city"]
    async with client.responses.stream(model=MODEL, input="Weather in Oslo?", tools=[WEATHER]) as s:
        events = [e async for e in s]
        final = await s.get_final_response()
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert args == done.arguments == final.output[0].arguments  # type: ignore[union-attr]
    out = await client.responses.create(
        model=MODEL,
        tools=[WEATHER],
        input=[
            {"role": "user", "content": "Weather in Oslo?"},
            call.model_dump(exclude_none=True),  # type: ignore[list-item]
            {"type": "function_call_output", "call_id": call.call_id, "output": "Snow, -3 C"},
        ],
    )
    assert "Snow, -3 C" in out.output_text


async def test_bad_input_is_a_400_naming_the_field(sdk: Clients, sim_server: SimServer) -> None:
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.openai(sim_server).responses.create(
            model=MODEL,
            input=[{"type": "function_call_output", "output": "x"}],
        )
    # OpenAI names a field of an item as ``input[0].call_id``
    assert isinstance(ei.value.body, dict) and ei.value.body["param"] == "input[0].call_id"


async def test_faults_status_in_band_error_and_cut(
    sdk: Clients, sim_server: SimServer, raw_post: RawPost
) -> None:
    client = sdk.openai(sim_server)
    with pytest.raises(openai.InternalServerError):
        await client.responses.create(model=MODEL + "+fault=status:500", input="Hi")
    with pytest.raises(openai.RateLimitError):
        await client.responses.create(model=MODEL + "+fault=status:429", input="Hi")
    events = [
        e
        async for e in await client.responses.create(
            model=MODEL + "+fault=error_after:3", input="Hi", stream=True
        )
    ]
    kinds = [e.type for e in events]
    assert kinds[-2:] == ["error", "response.failed"] and "response.completed" not in kinds
    cut = await raw_post(
        sim_server.url + "/v1/responses",
        {"model": MODEL + "+fault=cut_after:3", "input": "Hi", "stream": True},
    )
    assert cut.status == 200 and cut.error is not None and b"response.created" in cut.body
    assert b"response.completed" not in cut.body and b"response.failed" not in cut.body

"""The simulator speaks the OpenAI Chat Completions API well enough for the official SDK."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import openai
import orjson
import pytest

if TYPE_CHECKING:
    from conftest import Clients, RawPost, SimServer

MODEL = "sim-small"
WEATHER_PARAMS = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "when": {"type": "string", "format": "date"},
        "detail": {"type": "object", "properties": {"hourly": {"type": "boolean"}}},
        "tags": {"type": "array", "items": {"type": "string", "enum": ["rain", "sun"]}},
    },
    "required": ["city", "when", "detail", "tags"],
}
TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_PARAMS}},
    {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}},
]
EXPECTED_ARGS = {
    "city": "Paris",
    "when": "2025-01-15",
    "detail": {"hourly": True},
    "tags": ["rain"],
}


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


async def test_create_returns_a_completion_the_sdk_parses(
    sdk: Clients, sim_server: SimServer
) -> None:
    raw = await sdk.openai(sim_server).chat.completions.with_raw_response.create(
        model=MODEL, messages=user("Hello there")
    )
    done = raw.parse()
    assert raw.headers["x-request-id"].startswith("req_")
    assert done.id.startswith("chatcmpl-")
    assert done.object == "chat.completion"
    assert done.model == MODEL
    choice = done.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content and choice.message.content.endswith(".")
    assert choice.message.tool_calls is None
    assert done.usage is not None
    assert done.usage.completion_tokens == 24
    assert done.usage.prompt_tokens == math.ceil(len(b"Hello there") / 4)
    assert done.usage.total_tokens == done.usage.prompt_tokens + 24
    assert done.usage.prompt_tokens_details is not None
    assert done.usage.prompt_tokens_details.cached_tokens == 0


async def test_stream_with_usage_matches_the_unary_answer(
    sdk: Clients, sim_server: SimServer
) -> None:
    c = sdk.openai(sim_server)
    plain = await c.chat.completions.create(model=MODEL, messages=user("Hi"))
    stream = await c.chat.completions.create(
        model=MODEL, messages=user("Hi"), stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].object == "chat.completion.chunk"
    assert len({c.id for c in chunks}) == 1
    text_chunks = [c for c in chunks[1:] if c.choices and c.choices[0].delta.content]
    assert len(text_chunks) == 24
    assert "".join(c.choices[0].delta.content or "" for c in text_chunks) == (
        plain.choices[0].message.content
    )
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 24
    assert all(c.usage is None for c in chunks[:-1])


async def test_raw_stream_ends_with_done_and_has_no_usage_unless_asked(
    sim_server: SimServer, raw_post: RawPost
) -> None:
    body = {"model": MODEL, "messages": user("Hi"), "stream": True}
    reply = await raw_post(sim_server.url + "/v1/chat/completions", body)
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/event-stream")
    events = reply.events()
    assert events[-1].data == b"[DONE]"
    assert all(e.event is None for e in events)
    chunks = [orjson.loads(e.data) for e in events[:-1]]
    assert all("usage" not in c for c in chunks)
    assert all(isinstance(c["obfuscation"], str) for c in chunks)
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    body["stream_options"] = {"include_obfuscation": False}
    plain = await raw_post(sim_server.url + "/v1/chat/completions", body)
    assert all(b"obfuscation" not in e.data for e in plain.events())


async def test_tool_calls_stream_arguments_in_pieces_and_round_trip(
    sdk: Clients, sim_server: SimServer
) -> None:
    c = sdk.openai(sim_server)
    stream = await c.chat.completions.create(
        model=MODEL, messages=user("Weather?"), tools=TOOLS, stream=True
    )
    chunks = [chunk async for chunk in stream]
    first = chunks[0].choices[0].delta
    assert first.role == "assistant" and first.tool_calls is not None
    head = first.tool_calls[0]
    assert head.index == 0 and head.id and head.id.startswith("call_")
    assert head.function is not None and head.function.name == "get_weather"
    pieces = [
        tc.function.arguments
        for ch in chunks[1:]
        if ch.choices and ch.choices[0].delta.tool_calls
        for tc in ch.choices[0].delta.tool_calls
        if tc.function and tc.function.arguments
    ]
    assert len(pieces) >= 3
    assert orjson.loads("".join(pieces)) == EXPECTED_ARGS
    assert chunks[-1].choices[0].finish_reason == "tool_calls"

    unary = await c.chat.completions.create(model=MODEL, messages=user("Weather?"), tools=TOOLS)
    call = unary.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert unary.choices[0].finish_reason == "tool_calls"
    assert unary.choices[0].message.content is None
    result = "It is raining in Paris with 12 degrees and strong wind from the north-east today."
    follow = await c.chat.completions.create(
        model=MODEL,
        tools=TOOLS,
        messages=[
            *user("Weather?"),
            unary.choices[0].message.model_dump(exclude_none=True),  # type: ignore[list-item]
            {"role": "tool", "tool_call_id": call.id, "content": result},
        ],
    )
    assert follow.choices[0].finish_reason == "stop"
    assert result[:80] in (follow.choices[0].message.content or "")


async def test_parallel_tool_calls_when_asked_for_all(sdk: Clients, sim_server: SimServer) -> None:
    c = sdk.openai(sim_server)
    both = await c.chat.completions.create(
        model=MODEL, messages=user("[[sim:tools=all]]"), tools=TOOLS
    )
    calls = both.choices[0].message.tool_calls or []
    assert [tc.function.name for tc in calls] == ["get_weather", "lookup"]  # type: ignore[union-attr]
    one = await c.chat.completions.create(
        model=MODEL, messages=user("[[sim:tools=all]]"), tools=TOOLS, parallel_tool_calls=False
    )
    assert len(one.choices[0].message.tool_calls or []) == 1
    stream = await c.chat.completions.create(
        model=MODEL, messages=user("[[sim:tools=all]]"), tools=TOOLS, stream=True
    )
    heads = [
        (tc.index, tc.function.name)
        async for ch in stream
        if ch.choices and ch.choices[0].delta.tool_calls
        for tc in ch.choices[0].delta.tool_calls
        if tc.id and tc.function
    ]
    assert heads == [(0, "get_weather"), (1, "lookup")]
    named = await c.chat.completions.create(
        model=MODEL,
        messages=user("x"),
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "lookup"}},
    )
    assert named.choices[0].message.tool_calls[0].function.name == "lookup"  # type: ignore[index,union-attr]
    none = await c.chat.completions.create(
        model=MODEL, messages=user("x"), tools=TOOLS, tool_choice="none"
    )
    assert none.choices[0].finish_reason == "stop"


async def test_automatic_cache_reports_cached_tokens_on_repeat(
    sdk: Clients, sim_server: SimServer
) -> None:
    c = sdk.openai(sim_server)
    system = "Follow the house style guide carefully. " * 140  # 5600 bytes -> 1400 tokens
    messages = [{"role": "system", "content": system}, *user("Summarize the guide.")]
    first = await c.chat.completions.create(model=MODEL, messages=messages)  # type: ignore[arg-type]
    assert first.usage is not None and first.usage.prompt_tokens_details is not None
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    second = await c.chat.completions.create(model=MODEL, messages=messages)  # type: ignore[arg-type]
    assert second.usage is not None and second.usage.prompt_tokens_details is not None
    cached = second.usage.prompt_tokens_details.cached_tokens
    total = second.usage.prompt_tokens
    assert total == first.usage.prompt_tokens == math.ceil((len(system) + 20) / 4)
    assert cached == 1024 + 128 * ((total - 1024) // 128)
    keyed = await c.chat.completions.create(
        model=MODEL,
        messages=messages,  # type: ignore[arg-type]
        extra_body={"prompt_cache_key": "tenant-b"},
    )
    assert keyed.usage is not None and keyed.usage.prompt_tokens_details is not None
    assert keyed.usage.prompt_tokens_details.cached_tokens == 0
    short = user("tiny prompt")
    for _ in range(2):
        small = await c.chat.completions.create(model=MODEL, messages=short)  # type: ignore[arg-type]
        assert small.usage is not None and small.usage.prompt_tokens_details is not None
        assert small.usage.prompt_tokens_details.cached_tokens == 0


async def test_length_and_stop_finish_reasons(sdk: Clients, sim_server: SimServer) -> None:
    c = sdk.openai(sim_server)
    cut = await c.chat.completions.create(model=MODEL, messages=user("Hi"), max_completion_tokens=3)
    assert cut.choices[0].finish_reason == "length"
    assert cut.usage is not None and cut.usage.completion_tokens == 3
    stopped = await c.chat.completions.create(
        model=MODEL, messages=user("[[sim:reply=one two. three]]"), stop=["."]
    )
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].message.content == "one two"


async def test_json_schema_response_format_yields_matching_json(
    sdk: Clients, sim_server: SimServer
) -> None:
    done = await sdk.openai(sim_server).chat.completions.create(
        model=MODEL,
        messages=user("Give me the weather"),
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "weather", "schema": WEATHER_PARAMS},
        },
    )
    assert orjson.loads(done.choices[0].message.content or "") == EXPECTED_ARGS


async def test_missing_messages_is_a_400_with_param_and_code(
    sdk: Clients, sim_server: SimServer, raw_post: RawPost
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await sdk.openai(sim_server).chat.completions.create(model=MODEL, messages=[])
    assert info.value.code == "empty_array"
    assert info.value.param == "messages"
    reply = await raw_post(sim_server.url + "/v1/chat/completions", {"model": MODEL})
    assert reply.status == 400
    assert reply.json() == {
        "error": {
            "message": "Missing required parameter: 'messages'.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "missing_required_parameter",
        }
    }
    assert reply.headers["x-request-id"].startswith("req_")
    no_model = await raw_post(sim_server.url + "/v1/chat/completions", {"messages": user("x")})
    assert no_model.status == 400
    assert no_model.json()["error"]["message"] == "you must provide a model parameter"
    bad_json = await raw_post(sim_server.url + "/v1/chat/completions", data=b"{nope")
    assert bad_json.status == 400
    assert "could not parse the JSON body" in bad_json.json()["error"]["message"]


async def test_models_list_and_unknown_routes(
    sdk: Clients, sim_server: SimServer, raw_post: RawPost
) -> None:
    c = sdk.openai(sim_server)
    page = await c.models.list()
    assert page.object == "list"
    assert all(m.object == "model" for m in page.data)
    assert "gpt-4.1" in [m.id for m in page.data]
    with pytest.raises(openai.NotFoundError):
        await c.models.retrieve("no-such-model")
    missing = await raw_post(sim_server.url + "/v1/audio/speech", {"input": "x"})
    assert missing.status == 404
    assert missing.json()["error"]["message"] == "Invalid URL (POST /v1/audio/speech)"


async def test_api_key_is_checked_when_configured(sdk: Clients, start_sim: Any) -> None:
    server = await start_sim(api_key="sk-right-key-123")
    with pytest.raises(openai.AuthenticationError) as info:
        await sdk.openai(server).chat.completions.create(model=MODEL, messages=user("x"))
    assert info.value.code == "invalid_api_key"
    good = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="sk-right-key-123")
    try:
        done = await good.chat.completions.create(model=MODEL, messages=user("x"))
    finally:
        await good.close()
    assert done.choices[0].finish_reason == "stop"

"""Responses API translation, checked against the official SDK's own types and stream accumulator.

Requests: any valid input item list becomes a chat body the gateway's validator accepts, with
every text in order. Answers: bodies and every stream event validate as the SDK's models, the
SDK's accumulator rebuilds the answer from the events, and a stream cut anywhere ends failed.
"""

from __future__ import annotations

from typing import Any

import orjson
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai._models import construct_type
from openai._types import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent

from bastion.errors import InvalidRequest
from bastion.providers.sse import SSEDecoder
from bastion.providers.translate._stream_openai import OpenAIStreamEmitter
from bastion.providers.translate.model import (
    StopReason,
    StreamEnd,
    StreamFinish,
    StreamStart,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    Usage,
    UsageUpdate,
)
from bastion.responses import ResponsesEmitter, from_chat, to_chat
from bastion.schema import validate_openai

EVENTS = pydantic.TypeAdapter(ResponseStreamEvent)
RESP_ID = "resp_0123abcd"

text = st.text(min_size=1, max_size=40)
role = st.sampled_from(["user", "assistant", "system", "developer"])
call_id = st.from_regex(r"call_[A-Za-z0-9]{1,12}", fullmatch=True)


@st.composite
def message_item(draw: st.DrawFn) -> dict[str, Any]:
    r = draw(role)
    kind = "output_text" if r == "assistant" else "input_text"
    content: Any = draw(
        st.one_of(text, st.lists(text.map(lambda t: {"type": kind, "text": t}), min_size=1))
    )
    item: dict[str, Any] = {"role": r, "content": content}
    if draw(st.booleans()):
        item["type"] = "message"
    return item


@st.composite
def input_items(draw: st.DrawFn) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["message", "message", "call", "output", "reasoning"]))
        if kind == "message":
            items.append(draw(message_item()))
        elif kind == "call":
            items.append(
                {
                    "type": "function_call",
                    "call_id": draw(call_id),
                    "name": draw(st.sampled_from(["get_weather", "lookup"])),
                    "arguments": orjson.dumps({"q": draw(text)}).decode(),
                }
            )
        elif kind == "output":
            items.append(
                {"type": "function_call_output", "call_id": draw(call_id), "output": draw(text)}
            )
        else:
            items.append({"type": "reasoning", "id": "rs_1", "summary": []})
    if not any(i.get("role") in ("user", "assistant") or "call_id" in i for i in items):
        items.append({"role": "user", "content": draw(text)})
    return items


def _item_text(item: dict[str, Any]) -> str:
    content: Any = item["content"] if "content" in item else item["output"]
    return content if isinstance(content, str) else "".join(p["text"] for p in content)


@settings(max_examples=300, deadline=None)
@given(items=input_items(), instructions=st.none() | text, stream=st.booleans())
def test_any_valid_input_item_list_becomes_a_valid_chat_body_with_its_text_in_order(
    items: list[dict[str, Any]], instructions: str | None, stream: bool
) -> None:
    body: dict[str, Any] = {"model": "gpt-4.1", "input": items, "stream": stream}
    if instructions is not None:
        body["instructions"] = instructions
    chat = to_chat(body).chat
    validate_openai(chat)  # what the gateway runs on the translated body
    msgs = chat["messages"]
    if instructions is not None:
        assert msgs[0] == {"role": "system", "content": instructions}
        msgs = msgs[1:]
    expected = [
        ("tool" if i.get("type") == "function_call_output" else i["role"], _item_text(i))
        for i in items
        if i.get("type") not in ("function_call", "reasoning")
    ]
    got = [(m["role"], m["content"]) for m in msgs if m["content"] is not None]
    assert got == expected
    calls = [c["id"] for m in msgs for c in m.get("tool_calls", [])]
    assert calls == [i["call_id"] for i in items if i.get("type") == "function_call"]
    assert chat.get("stream_options") == ({"include_usage": True} if stream else None)


def test_function_calls_join_the_assistant_turn_before_them() -> None:
    chat = to_chat(
        {
            "model": "m",
            "input": [
                {"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": "Checking."},
                {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{}"},
                {"type": "function_call", "call_id": "c2", "name": "w", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "sun"},
                {"type": "function_call_output", "call_id": "c2", "output": "rain"},
            ],
            "tools": [{"type": "function", "name": "w", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "w"},
            "max_output_tokens": 64,
        }
    ).chat
    assert [m["role"] for m in chat["messages"]] == ["user", "assistant", "tool", "tool"]
    assert [c["id"] for c in chat["messages"][1]["tool_calls"]] == ["c1", "c2"]
    assert chat["tools"][0]["function"]["name"] == "w"
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "w"}}
    assert chat["max_completion_tokens"] == 64


def test_images_stay_parts_of_the_user_turn_and_formats_become_response_format() -> None:
    chat = to_chat(
        {
            "model": "m",
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "What is this?"},
                        {
                            "type": "input_image",
                            "image_url": "https://x.test/a.png",
                            "detail": "low",
                        },
                    ],
                }
            ],
            "text": {"format": {"type": "json_schema", "name": "c", "schema": {"type": "object"}}},
            "reasoning": {"effort": "low"},
        }
    ).chat
    validate_openai(chat)
    assert chat["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "https://x.test/a.png", "detail": "low"}},
    ]
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "c", "schema": {"type": "object"}},
    }
    assert chat["reasoning_effort"] == "low"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x", "previous_response_id": "resp_1"}, "previous_response_id"),
        ({"input": "x", "conversation": "conv_1"}, "conversation"),
        ({"input": "x", "background": True}, "background"),
        ({"input": "x", "tools": [{"type": "file_search"}]}, "tools[0].type"),
        ({"input": "x", "tool_choice": {"type": "web_search"}}, "tool_choice"),
        ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file"}]}]},
            "input[0].content[0].type",
        ),
        ({"input": [{"type": "function_call", "call_id": "c", "name": "n"}]}, "input[0].arguments"),
        ({"input": "x", "text": {"format": {"type": "json_schema"}}}, "text.format.name"),
        ({"input": "x", "temperature": 3}, "temperature"),
        ({"input": 7}, "input"),
        ({"instructions": "only a system text"}, "input"),
    ],
)
def test_refusals_name_the_responses_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as ei:
        to_chat({"model": "gpt-4.1", **body})
    assert ei.value.param == param


# --- answers ----------------------------------------------------------------------------------

chunk_texts = st.lists(st.text(min_size=1, max_size=12), min_size=0, max_size=6)
tool_args = st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=4)


def _chat_stream(texts: list[str], calls: list[list[str]], stop: StopReason, usage: Usage) -> bytes:
    """A chat.completion.chunk stream, written by the gateway's own chat stream emitter."""
    em = OpenAIStreamEmitter("gpt-4.1", include_usage=True)
    out = em.emit(StreamStart("chatcmpl-1", "gpt-4.1", Usage()))
    for t in texts:
        out += em.emit(TextDelta(t))
    for key, pieces in enumerate(calls):
        out += em.emit(ToolCallStart(key, f"call_{key}", "get_weather"))
        for p in pieces:
            out += em.emit(ToolCallDelta(key, p))
    out += em.emit(StreamFinish(stop))
    out += em.emit(UsageUpdate(usage))
    out += em.emit(StreamEnd())
    return b"".join(out)


def _events(data: bytes, cuts: list[int]) -> list[dict[str, Any]]:
    em = ResponsesEmitter(RESP_ID, to_chat({"model": "gpt-4.1", "input": "x"}).echo, created_at=1)
    out: list[bytes] = []
    start = 0
    for cut in [*sorted(c % (len(data) + 1) for c in cuts), len(data)]:
        out += em.feed(data[start:cut])
        start = max(start, cut)
    out += em.finish()
    dec = SSEDecoder()
    events = []
    for ev in dec.feed(b"".join(out)):
        obj = orjson.loads(ev.data)
        assert ev.event == obj["type"]  # the SSE event name is the event's type
        events.append(obj)
    return events


def _accumulate(events: list[dict[str, Any]]) -> ResponseStreamState[Any]:
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=[], text_format=omit)
    for obj in events:
        EVENTS.validate_python(obj)  # every field the SDK's generated model requires
        state.handle_event(construct_type(type_=ResponseStreamEvent, value=obj))  # type: ignore[arg-type]
    return state


@settings(max_examples=200, deadline=None)
@given(
    texts=chunk_texts,
    calls=st.lists(tool_args, max_size=3),
    cuts=st.lists(st.integers(0, 10_000), max_size=6),
    tokens=st.tuples(st.integers(0, 10_000), st.integers(0, 10_000), st.integers(0, 100)),
)
def test_any_chat_stream_becomes_events_the_sdk_accumulates_to_the_same_answer(
    texts: list[str], calls: list[list[str]], cuts: list[int], tokens: tuple[int, int, int]
) -> None:
    inp, out, cached = tokens
    usage = Usage(input_tokens=inp, output_tokens=out, cache_read=cached)
    stop = StopReason.TOOL_USE if calls else StopReason.END_TURN
    events = _events(_chat_stream(texts, calls, stop, usage), cuts)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events[:2]] == ["response.created", "response.in_progress"]
    assert events[-1]["type"] == "response.completed"
    state = _accumulate(events)
    final = state._completed_response
    assert final is not None and final.id == RESP_ID
    assert final.output_text == "".join(texts)
    got_calls = [o.arguments for o in final.output if o.type == "function_call"]
    assert got_calls == ["".join(p) for p in calls]
    assert final.usage is not None
    assert final.usage.input_tokens == inp + cached
    assert final.usage.input_tokens_details.cached_tokens == cached
    assert final.usage.output_tokens == out
    # each item is added, then done, before the next one is added (the documented order)
    opened = [e["output_index"] for e in events if e["type"] == "response.output_item.added"]
    closed = [e["output_index"] for e in events if e["type"] == "response.output_item.done"]
    assert opened == closed == list(range(len(final.output)))


@settings(max_examples=200, deadline=None)
@given(texts=chunk_texts, calls=st.lists(tool_args, max_size=2), cut=st.integers(0, 10_000))
def test_a_chat_stream_cut_anywhere_before_its_end_ends_failed(
    texts: list[str], calls: list[list[str]], cut: int
) -> None:
    data = _chat_stream(texts, calls, StopReason.END_TURN, Usage(1, 1))
    truncated = data[: cut % (len(data) - len(b"data: [DONE]\n\n") + 1)]
    events = _events(truncated, [])
    assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
    assert not any(e["type"] == "response.completed" for e in events)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    _accumulate(events)  # still a sequence the SDK accepts


def test_an_in_band_error_chunk_becomes_error_then_failed() -> None:
    chunk = b'data: {"error": {"message": "withheld", "type": "output_blocked", "code": null}}\n\n'
    em = OpenAIStreamEmitter("gpt-4.1", include_usage=True)
    head = em.emit(StreamStart("chatcmpl-1", "gpt-4.1", Usage())) + em.emit(TextDelta("Hi"))
    events = _events(b"".join(head) + chunk, [])
    assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
    assert events[-2]["message"] == "withheld"
    assert events[-1]["response"]["error"]["message"] == "withheld"


@pytest.mark.parametrize(
    ("finish", "status", "reason"),
    [("stop", "completed", None), ("length", "incomplete", "max_output_tokens")],
)
def test_a_chat_body_becomes_a_response_the_sdk_validates(
    finish: str, status: str, reason: str | None
) -> None:
    chat = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 5,
        "model": "gpt-4.1",
        "choices": [
            {
                "index": 0,
                "finish_reason": finish,
                "message": {
                    "role": "assistant",
                    "content": "Sunny.",
                    "tool_calls": [
                        {
                            "id": "call_9",
                            "type": "function",
                            "function": {"name": "w", "arguments": '{"city":"Oslo"}'},
                        }
                    ],
                },
            }
        ],
        "usage": {
            "prompt_tokens": 30,
            "completion_tokens": 7,
            "prompt_tokens_details": {"cached_tokens": 10},
            "completion_tokens_details": {"reasoning_tokens": 2},
        },
    }
    body = from_chat(chat, RESP_ID, to_chat({"model": "gpt-4.1", "input": "x"}).echo, now=9)
    r = Response.model_validate(body)
    assert r.id == RESP_ID and r.object == "response" and r.status == status
    assert (r.incomplete_details.reason if r.incomplete_details else None) == reason
    assert r.output_text == "Sunny."
    call = r.output[1]
    assert call.type == "function_call" and call.call_id == "call_9"
    assert call.arguments == '{"city":"Oslo"}'
    assert r.usage is not None and r.usage.input_tokens == 30 and r.usage.total_tokens == 37
    assert r.usage.input_tokens_details.cached_tokens == 10
    assert r.usage.output_tokens_details.reasoning_tokens == 2

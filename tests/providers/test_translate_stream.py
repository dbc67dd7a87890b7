"""Streaming translation: exact event sequences, reassembly with the SDKs' own accumulators, cuts."""

from __future__ import annotations

import itertools
import json
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import RawMessageStreamEvent
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk
from pydantic import TypeAdapter

from bastion.providers.base import Format
from bastion.providers.sse import SSEDecoder, SSEEvent
from bastion.providers.translate import StreamTranslator, Usage
from bastion.providers.translate._stream_splice import ClientView, SpliceDiverged, StreamSplicer

ANT, OAI = Format.ANTHROPIC, Format.OPENAI
_RAW_EVENT = TypeAdapter(RawMessageStreamEvent)
SPLITS = [1, 7, 64, 10_000]


def sse(event: str | None, data: dict[str, Any] | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data)
    return (f"event: {event}\n" if event else "").encode() + f"data: {payload}\n\n".encode()


def a_ev(data: dict[str, Any]) -> bytes:
    return sse(str(data["type"]), data)


def a_delta(index: int, delta: dict[str, Any]) -> bytes:
    return a_ev({"type": "content_block_delta", "index": index, "delta": delta})


ANTHROPIC_TOOL_STREAM = b"".join(
    [
        a_ev(
            {
                "type": "message_start",
                "message": {
                    "id": "msg_01ABC",
                    "type": "message",
                    "role": "assistant",
                    "model": "claude-sonnet-4-5",
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": 25,
                        "cache_creation_input_tokens": 10,
                        "cache_read_input_tokens": 100,
                        "output_tokens": 1,
                    },
                },
            }
        ),
        a_ev({"type": "ping"}),
        a_ev(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "thinking", "thinking": ""},
            }
        ),
        a_delta(0, {"type": "thinking_delta", "thinking": "The user wants weather."}),
        a_delta(0, {"type": "signature_delta", "signature": "EqQB"}),
        a_ev({"type": "content_block_stop", "index": 0}),
        a_ev(
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {"type": "text", "text": ""},
            }
        ),
        a_delta(1, {"type": "text_delta", "text": "Let me "}),
        a_delta(1, {"type": "text_delta", "text": "check. ☀"}),
        a_ev({"type": "content_block_stop", "index": 1}),
        a_ev(
            {
                "type": "content_block_start",
                "index": 2,
                "content_block": {
                    "type": "tool_use",
                    "id": "toolu_01A",
                    "name": "get_weather",
                    "input": {},
                },
            }
        ),
        a_delta(2, {"type": "input_json_delta", "partial_json": ""}),
        a_delta(2, {"type": "input_json_delta", "partial_json": '{"city": "Par'}),
        a_delta(2, {"type": "input_json_delta", "partial_json": 'is"}'}),
        a_ev({"type": "content_block_stop", "index": 2}),
        a_ev(
            {
                "type": "content_block_start",
                "index": 3,
                "content_block": {
                    "type": "tool_use",
                    "id": "toolu_01B",
                    "name": "get_time",
                    "input": {},
                },
            }
        ),
        a_delta(3, {"type": "input_json_delta", "partial_json": '{"tz": "CET"}'}),
        a_ev({"type": "content_block_stop", "index": 3}),
        a_ev(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                "usage": {"output_tokens": 89},
            }
        ),
        a_ev({"type": "message_stop"}),
    ]
)


def o_chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> bytes:
    choices = (
        []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    )
    body = {
        "id": "chatcmpl-XYZ",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o",
        "choices": choices,
        **extra,
    }
    return sse(None, body)


def o_tool(
    index: int, *, id: str | None = None, name: str | None = None, args: str | None = None
) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index}
    if id is not None:
        call.update(id=id, type="function")
    fn = {k: v for k, v in (("name", name), ("arguments", args)) if v is not None}
    if fn:
        call["function"] = fn
    return {"tool_calls": [call]}


OPENAI_USAGE = {
    "prompt_tokens": 135,
    "completion_tokens": 40,
    "total_tokens": 175,
    "prompt_tokens_details": {"cached_tokens": 100},
}
OPENAI_TOOL_STREAM = b"".join(
    [
        o_chunk({"role": "assistant", "content": "", "refusal": None}, usage=None),
        o_chunk({"content": "Let me "}, usage=None),
        o_chunk({"content": "check. ☀"}, usage=None),
        o_chunk(o_tool(0, id="call_A", name="get_weather", args=""), usage=None),
        o_chunk(o_tool(0, args='{"city": "Par'), usage=None),
        o_chunk(o_tool(0, args='is"}'), usage=None),
        o_chunk(o_tool(1, id="call_B", name="get_time", args=""), usage=None),
        o_chunk(o_tool(1, args='{"tz": "CET"}'), usage=None),
        o_chunk({}, "tool_calls", usage=None),
        o_chunk(None, usage=OPENAI_USAGE),
        b"data: [DONE]\n\n",
    ]
)


def run(tr: StreamTranslator, stream: bytes, split: int = 10_000) -> list[bytes]:
    """Feed ``stream`` cut every ``split`` bytes through the SSE decoder, then finish."""
    dec = SSEDecoder()
    out: list[bytes] = []
    for i in range(0, len(stream), split):
        for ev in dec.feed(stream[i : i + split]):
            out += tr.feed(ev)
    return out + tr.finish()


def decode(out: list[bytes]) -> list[SSEEvent]:
    for chunk in out:  # every returned item is one complete event
        assert len(SSEDecoder().feed(chunk)) == 1 and chunk.endswith(b"\n\n")
    return SSEDecoder().feed(b"".join(out))


def anthropic_events(out: list[bytes]) -> list[dict[str, Any]]:
    events = []
    for ev in decode(out):
        data = json.loads(ev.data)
        assert ev.event == data["type"]
        if data["type"] not in ("ping", "error"):
            _RAW_EVENT.validate_python(data)
        events.append(data)
    return events


def anthropic_final(events: list[dict[str, Any]]) -> Any:
    snapshot, bufs = None, {}
    for data in events:
        if data["type"] != "ping":
            snapshot = accumulate_event(
                event=_RAW_EVENT.validate_python(data), current_snapshot=snapshot, json_bufs=bufs
            )
    return snapshot


def openai_chunks(out: list[bytes]) -> tuple[list[dict[str, Any]], bool]:
    evs = decode(out)
    assert all(e.event is None for e in evs)  # OpenAI streams are data-only
    done = evs[-1].data == b"[DONE]"
    chunks = [json.loads(e.data) for e in (evs[:-1] if done else evs)]
    for c in chunks:
        if "error" not in c:
            ChatCompletionChunk.model_validate(c)
    return chunks, done


def openai_final(chunks: list[dict[str, Any]]) -> Any:
    state = ChatCompletionStreamState()
    for c in chunks:
        list(state.handle_chunk(ChatCompletionChunk.model_validate(c)))
    return state.get_final_completion()


# --- Anthropic upstream, OpenAI client ---------------------------------------------------


@pytest.mark.parametrize("split", SPLITS)
def test_anthropic_stream_becomes_openai_chunks_in_openais_order(split: int) -> None:
    tr = StreamTranslator(ANT, OAI, model="alias", include_usage=True)
    chunks, done = openai_chunks(run(tr, ANTHROPIC_TOOL_STREAM, split))
    assert done and tr.finished
    shape = []
    for c in chunks:
        if not c["choices"]:
            shape.append("usage")
            continue
        d, fin = c["choices"][0]["delta"], c["choices"][0]["finish_reason"]
        shape.append(
            "role"
            if "role" in d
            else "text"
            if "content" in d
            else ("tool_start" if "id" in d["tool_calls"][0] else "tool_args")
            if "tool_calls" in d
            else f"finish:{fin}"
        )
    assert shape == [
        "role",
        "text",
        "text",
        "tool_start",
        "tool_args",
        "tool_args",
        "tool_start",
        "tool_args",
        "finish:tool_calls",
        "usage",
    ]
    assert {c["id"] for c in chunks} == {"chatcmpl-01ABC"}
    assert {c["model"] for c in chunks} == {"alias"}
    assert [
        c["choices"][0]["delta"]["tool_calls"][0]["index"]
        for c in chunks
        if c["choices"] and "tool_calls" in c["choices"][0]["delta"]
    ] == [0, 0, 0, 1, 1]


def test_anthropic_stream_reassembles_in_the_openai_sdk() -> None:
    tr = StreamTranslator(ANT, OAI, model=None, include_usage=True)
    final = openai_final(openai_chunks(run(tr, ANTHROPIC_TOOL_STREAM, 5))[0])
    msg = final.choices[0].message
    assert msg.content == "Let me check. ☀"
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in msg.tool_calls] == [
        ("toolu_01A", "get_weather", {"city": "Paris"}),
        ("toolu_01B", "get_time", {"tz": "CET"}),
    ]
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.model == "claude-sonnet-4-5"
    assert final.usage.prompt_tokens == 135
    assert final.usage.completion_tokens == 89
    assert final.usage.prompt_tokens_details.cached_tokens == 100
    assert tr.usage == Usage(input_tokens=25, output_tokens=89, cache_read=100, cache_write=10)
    assert tr.text_so_far == "Let me check. ☀"


def test_no_usage_chunk_unless_the_client_asked_for_it() -> None:
    chunks, done = openai_chunks(
        run(StreamTranslator(ANT, OAI, model=None, include_usage=False), ANTHROPIC_TOOL_STREAM)
    )
    assert done
    assert all(c["choices"] for c in chunks)
    assert all("usage" not in c for c in chunks)


@pytest.mark.parametrize(
    ("reason", "finish"),
    [("end_turn", "stop"), ("max_tokens", "length"), ("refusal", "content_filter")],
)
def test_anthropic_stop_reason_becomes_the_finish_chunk(reason: str, finish: str) -> None:
    stream = b"".join(
        [
            a_ev(
                {
                    "type": "message_start",
                    "message": {
                        "id": "msg_1",
                        "type": "message",
                        "role": "assistant",
                        "model": "c",
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": {"input_tokens": 5, "output_tokens": 1},
                    },
                }
            ),
            a_ev(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                }
            ),
            a_delta(0, {"type": "text_delta", "text": "Hi"}),
            a_ev({"type": "content_block_stop", "index": 0}),
            a_ev(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": reason, "stop_sequence": None},
                    "usage": {"output_tokens": 2},
                }
            ),
            a_ev({"type": "message_stop"}),
        ]
    )
    chunks, _ = openai_chunks(
        run(StreamTranslator(ANT, OAI, model=None, include_usage=True), stream)
    )
    assert chunks[-2]["choices"][0]["finish_reason"] == finish
    assert chunks[-1]["usage"]["prompt_tokens"] == 5


def test_the_last_of_several_message_deltas_wins() -> None:
    stream = b"".join(
        [
            a_ev(
                {
                    "type": "message_start",
                    "message": {
                        "id": "msg_1",
                        "type": "message",
                        "role": "assistant",
                        "model": "c",
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": {"input_tokens": 5, "output_tokens": 1},
                    },
                }
            ),
            a_ev(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "pause_turn"},
                    "usage": {"output_tokens": 3},
                }
            ),
            a_ev(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "max_tokens"},
                    "usage": {"output_tokens": 7, "input_tokens": 6},
                }
            ),
            a_ev({"type": "message_stop"}),
        ]
    )
    tr = StreamTranslator(ANT, OAI, model=None, include_usage=True)
    chunks, _ = openai_chunks(run(tr, stream))
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]] == [None, "length"]
    assert tr.usage == Usage(input_tokens=6, output_tokens=7)


# --- OpenAI upstream, Anthropic client ---------------------------------------------------


@pytest.mark.parametrize("split", SPLITS)
def test_openai_stream_becomes_anthropics_exact_event_sequence(split: int) -> None:
    tr = StreamTranslator(OAI, ANT, model="alias", include_usage=False)
    events = anthropic_events(run(tr, OPENAI_TOOL_STREAM, split))
    assert [
        (e["type"], e.get("index"), e.get("content_block", e.get("delta", {})).get("type"))
        for e in events
    ] == [
        ("message_start", None, None),
        ("ping", None, None),
        ("content_block_start", 0, "text"),
        ("content_block_delta", 0, "text_delta"),
        ("content_block_delta", 0, "text_delta"),
        ("content_block_stop", 0, None),
        ("content_block_start", 1, "tool_use"),
        ("content_block_delta", 1, "input_json_delta"),
        ("content_block_delta", 1, "input_json_delta"),
        ("content_block_stop", 1, None),
        ("content_block_start", 2, "tool_use"),
        ("content_block_delta", 2, "input_json_delta"),
        ("content_block_stop", 2, None),
        ("message_delta", None, None),
        ("message_stop", None, None),
    ]
    assert events[0]["message"]["id"] == "msg_XYZ"
    assert events[0]["message"]["model"] == "alias"
    assert events[0]["message"]["usage"]["input_tokens"] == 0
    assert tr.finished


def test_usage_that_arrives_last_lands_in_message_delta() -> None:
    events = anthropic_events(
        run(StreamTranslator(OAI, ANT, model=None, include_usage=False), OPENAI_TOOL_STREAM)
    )
    delta = events[-2]
    assert delta["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert delta["usage"] == {
        "input_tokens": 35,
        "output_tokens": 40,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 0,
    }


def test_openai_stream_reassembles_in_the_anthropic_sdk() -> None:
    tr = StreamTranslator(OAI, ANT, model=None, include_usage=False)
    final = anthropic_final(anthropic_events(run(tr, OPENAI_TOOL_STREAM, 3)))
    assert [b.type for b in final.content] == ["text", "tool_use", "tool_use"]
    assert final.content[0].text == "Let me check. ☀"
    assert [(b.id, b.name, b.input) for b in final.content[1:]] == [
        ("call_A", "get_weather", {"city": "Paris"}),
        ("call_B", "get_time", {"tz": "CET"}),
    ]
    assert final.stop_reason == "tool_use"
    assert (
        final.usage.input_tokens,
        final.usage.output_tokens,
        final.usage.cache_read_input_tokens,
    ) == (35, 40, 100)
    assert tr.usage == Usage(input_tokens=35, output_tokens=40, cache_read=100)


@pytest.mark.parametrize(
    ("finish", "reason"),
    [("stop", "end_turn"), ("length", "max_tokens"), ("content_filter", "refusal")],
)
def test_finish_reason_becomes_message_delta_stop_reason(finish: str, reason: str) -> None:
    stream = (
        o_chunk({"role": "assistant", "content": "Hi"}) + o_chunk({}, finish) + b"data: [DONE]\n\n"
    )
    events = anthropic_events(
        run(StreamTranslator(OAI, ANT, model=None, include_usage=False), stream)
    )
    assert events[-2]["delta"]["stop_reason"] == reason


def test_text_after_a_tool_call_opens_a_new_block_after_closing_the_tool() -> None:
    stream = b"".join(
        [
            o_chunk(o_tool(0, id="call_1", name="f", args="{}")),
            o_chunk({"content": "done"}),
            o_chunk({}, "tool_calls"),
            b"data: [DONE]\n\n",
        ]
    )
    events = anthropic_events(
        run(StreamTranslator(OAI, ANT, model=None, include_usage=False), stream)
    )
    assert [(e["type"], e.get("index")) for e in events[2:-2]] == [
        ("content_block_start", 0),
        ("content_block_delta", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1),
        ("content_block_delta", 1),
        ("content_block_stop", 1),
    ]


def test_compatible_server_quirks_still_produce_separate_tool_blocks() -> None:
    """Whole calls in one chunk, a reused index with a new id, no index at all, stop after tools."""
    stream = b"".join(
        [
            o_chunk(
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "a", "arguments": '{"x":1}'},
                        },
                        {
                            "index": 1,
                            "id": "c2",
                            "type": "function",
                            "function": {"name": "b", "arguments": '{"y":2}'},
                        },
                    ],
                }
            ),
            o_chunk(o_tool(0, id="c3", name="c", args='{"z":')),
            o_chunk({"tool_calls": [{"function": {"arguments": "3}"}}]}),
            o_chunk(
                {}, "stop", usage={"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}
            ),
            b"data: [DONE]\n\n",
        ]
    )
    final = anthropic_final(
        anthropic_events(run(StreamTranslator(OAI, ANT, model=None, include_usage=False), stream))
    )
    assert [(b.id, b.name, b.input) for b in final.content] == [
        ("c1", "a", {"x": 1}),
        ("c2", "b", {"y": 2}),
        ("c3", "c", {"z": 3}),
    ]
    assert final.stop_reason == "tool_use"
    assert final.usage.input_tokens == 4


def test_openai_refusal_delta_streams_as_text_with_refusal_stop() -> None:
    stream = (
        o_chunk({"role": "assistant", "refusal": "Sorry."})
        + o_chunk({}, "stop")
        + b"data: [DONE]\n\n"
    )
    final = anthropic_final(
        anthropic_events(run(StreamTranslator(OAI, ANT, model=None, include_usage=False), stream))
    )
    assert final.content[0].text == "Sorry."
    assert final.stop_reason == "refusal"


def test_empty_answer_still_ends_with_message_delta_and_stop() -> None:
    stream = (
        o_chunk({"role": "assistant", "content": ""}) + o_chunk({}, "stop") + b"data: [DONE]\n\n"
    )
    events = anthropic_events(
        run(StreamTranslator(OAI, ANT, model=None, include_usage=False), stream)
    )
    assert [e["type"] for e in events] == ["message_start", "ping", "message_delta", "message_stop"]


# --- cuts and errors -------------------------------------------------------------------


def test_cut_anthropic_stream_ends_with_an_openai_error_chunk_and_no_done() -> None:
    cut = ANTHROPIC_TOOL_STREAM[: ANTHROPIC_TOOL_STREAM.index(b"event: message_delta")]
    tr = StreamTranslator(ANT, OAI, model=None, include_usage=True)
    chunks, done = openai_chunks(run(tr, cut, 11))
    assert not done and not tr.finished
    assert chunks[-1] == {
        "error": {
            "message": "upstream stream ended before the response was complete",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert tr.text_so_far == "Let me check. ☀"
    assert tr.usage.input_tokens == 25


def test_cut_openai_stream_ends_with_an_anthropic_error_event_and_no_message_stop() -> None:
    cut = OPENAI_TOOL_STREAM[
        : OPENAI_TOOL_STREAM.index(
            b'data: {"id": "chatcmpl-XYZ", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o", "choices": [{"index": 0, "delta": {}'
        )
    ]
    tr = StreamTranslator(OAI, ANT, model=None, include_usage=False)
    events = anthropic_events(run(tr, cut, 13))
    assert not tr.finished
    assert events[-1] == {
        "type": "error",
        "error": {
            "type": "api_error",
            "message": "upstream stream ended before the response was complete",
        },
    }
    assert "message_stop" not in [e["type"] for e in events]


def test_upstream_error_event_is_translated_and_closes_the_stream() -> None:
    stream = ANTHROPIC_TOOL_STREAM.split(b"event: content_block_start")[0] + a_ev(
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    )
    tr = StreamTranslator(ANT, OAI, model=None, include_usage=True)
    chunks, done = openai_chunks(run(tr, stream + a_ev({"type": "message_stop"})))
    assert not done and not tr.finished
    assert chunks[-1]["error"]["message"] == "Overloaded"
    assert chunks[-1]["error"]["type"] == "server_error"


def test_openai_error_chunk_becomes_an_anthropic_error_event() -> None:
    stream = o_chunk({"role": "assistant", "content": "Hi"}) + sse(
        None,
        {
            "error": {
                "message": "Rate limit reached",
                "type": "requests",
                "code": "rate_limit_exceeded",
            }
        },
    )
    events = anthropic_events(
        run(StreamTranslator(OAI, ANT, model=None, include_usage=False), stream)
    )
    assert events[-1] == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "Rate limit reached"},
    }


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (
            ANT,
            b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"busy"}}\n\n',
        ),
        (
            OAI,
            b'data: {"error":{"message":"busy","type":"server_error","param":null,"code":"overloaded"}}\n\n',
        ),
    ],
)
def test_error_method_emits_the_target_formats_in_band_error(
    target: Format, expected: bytes
) -> None:
    source = OAI if target is ANT else ANT
    tr = StreamTranslator(source, target, model=None, include_usage=True)
    assert tr.error("busy", "overloaded_error") == expected
    assert tr.feed(SSEEvent(raw=b"data: [DONE]\n\n", event=None, data=b"[DONE]")) == []
    assert tr.finish() == []


def sse_client(body: bytes) -> httpx2.Client:
    """An HTTP client (the SDKs' own transport library) whose every response is ``body`` as SSE."""
    headers = {"content-type": "text/event-stream"}
    return httpx2.Client(
        transport=httpx2.MockTransport(
            lambda _: httpx2.Response(200, headers=headers, content=body)
        )
    )


def test_openai_sdk_raises_on_the_translated_error_chunk() -> None:
    body = StreamTranslator(ANT, OAI, model=None, include_usage=True).error("stalled", "api_error")
    client = openai.OpenAI(api_key="k", base_url="http://test/v1", http_client=sse_client(body))
    with pytest.raises(openai.APIError, match="stalled"):
        list(
            client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "x"}], stream=True
            )
        )


def test_anthropic_sdk_raises_on_the_translated_error_event() -> None:
    body = StreamTranslator(OAI, ANT, model=None, include_usage=False).error(
        "busy", "overloaded_error"
    )
    client = anthropic.Anthropic(api_key="k", base_url="http://test", http_client=sse_client(body))
    with pytest.raises(anthropic.APIStatusError, match="busy"):
        list(
            client.messages.create(
                model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}], stream=True
            )
        )


# --- same format ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "stream"), [(ANT, ANTHROPIC_TOOL_STREAM), (OAI, OPENAI_TOOL_STREAM)]
)
def test_same_format_relays_events_untouched_while_tracking(fmt: Format, stream: bytes) -> None:
    tr = StreamTranslator(fmt, fmt, model="alias", include_usage=True)
    assert b"".join(run(tr, stream, 9)) == stream
    assert tr.finished
    assert tr.text_so_far == "Let me check. ☀"
    assert tr.usage.cache_read == 100


def test_input_tokens_known_up_front_go_into_message_start() -> None:
    usage = {"prompt_tokens": 12, "completion_tokens": 0, "total_tokens": 12}
    stream = o_chunk({"role": "assistant", "content": "Hi"}, usage=usage) + o_chunk({}, "stop")
    events = anthropic_events(
        run(
            StreamTranslator(OAI, ANT, model=None, include_usage=False),
            stream + b"data: [DONE]\n\n",
        )
    )
    assert events[0]["message"]["usage"]["input_tokens"] == 12
    assert events[-2]["usage"]["input_tokens"] == 12


def test_tool_input_sent_whole_in_content_block_start_is_not_lost() -> None:
    start = {"type": "tool_use", "id": "toolu_9", "name": "f", "input": {"a": [1, 2]}}
    stream = b"".join(
        [
            a_ev(
                {
                    "type": "message_start",
                    "message": {
                        "id": "msg_9",
                        "type": "message",
                        "role": "assistant",
                        "model": "c",
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": {"input_tokens": 1, "output_tokens": 1},
                    },
                }
            ),
            a_ev({"type": "content_block_start", "index": 0, "content_block": start}),
            a_ev({"type": "content_block_stop", "index": 0}),
            a_ev(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "tool_use"},
                    "usage": {"output_tokens": 5},
                }
            ),
            a_ev({"type": "message_stop"}),
        ]
    )
    chunks, _ = openai_chunks(
        run(StreamTranslator(ANT, OAI, model=None, include_usage=False), stream)
    )
    call = openai_final(chunks).choices[0].message.tool_calls[0]
    assert (call.id, json.loads(call.function.arguments)) == ("toolu_9", {"a": [1, 2]})


# --- splicing a fallback's stream onto a cut client stream (mid-stream recovery) -----------

_SPLICE_TEXT = "The quick brown fox jumps over the lazy dog"


def _anthropic_text_stream(pieces: list[str], input_tokens: int = 9) -> bytes:
    start = {
        "id": "msg_fallback",
        "type": "message",
        "role": "assistant",
        "model": "claude-fallback",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": 1},
    }
    block = {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    return b"".join(
        [
            a_ev({"type": "message_start", "message": start}),
            a_ev(block),
            *(a_delta(0, {"type": "text_delta", "text": p}) for p in pieces),
            a_ev({"type": "content_block_stop", "index": 0}),
            a_ev(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": len(pieces)},
                }
            ),
            a_ev({"type": "message_stop"}),
        ]
    )


def _openai_text_stream(pieces: list[str], prompt_tokens: int = 9) -> bytes:
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(pieces), "total_tokens": 0}
    return b"".join(
        [
            o_chunk({"role": "assistant", "content": ""}),
            *(o_chunk({"content": p}) for p in pieces),
            o_chunk({}, "stop"),
            o_chunk(None, usage=usage),
            b"data: [DONE]\n\n",
        ]
    )


def _client_part(target: Format, sent: str) -> tuple[list[bytes], ClientView]:
    """What a client got before the cut: a translated opening and ``sent``, and its view."""
    source = OAI if target is ANT else ANT
    tr = StreamTranslator(source, target, model=None, include_usage=True)
    stream = _openai_text_stream([sent]) if source is OAI else _anthropic_text_stream([sent])
    out: list[bytes] = []
    view = ClientView(target)
    for ev in SSEDecoder().feed(stream):
        for b in tr.feed(ev):
            out.append(b)
            view.observe_raw(b)
        data = json.loads(ev.data)
        if (data.get("delta") or {}).get("text") == sent or any(
            (c.get("delta") or {}).get("content") == sent for c in data.get("choices") or ()
        ):
            break  # cut right after the text
    return out, view


def _splice(splicer: StreamSplicer, stream: bytes, split: int = 10_000) -> list[bytes]:
    dec = SSEDecoder()
    out: list[bytes] = []
    for i in range(0, len(stream), split):
        for ev in dec.feed(stream[i : i + split]):
            out += splicer.feed(ev)
    return out


@pytest.mark.parametrize("target", [ANT, OAI])
@pytest.mark.parametrize("source", [ANT, OAI])
@given(cut=st.integers(1, len(_SPLICE_TEXT)), bounds=st.lists(st.integers(1, 42), max_size=8))
@settings(max_examples=40, deadline=None)
def test_a_restarted_answer_is_spliced_as_the_rest_of_the_clients_message_whatever_its_chunks(
    target: Format, source: Format, cut: int, bounds: list[int]
) -> None:
    sent = _SPLICE_TEXT[:cut]
    first, view = _client_part(target, sent)
    assert view.ready
    marks = sorted({0, *bounds, len(_SPLICE_TEXT)})
    pieces = [_SPLICE_TEXT[a:b] for a, b in itertools.pairwise(marks) if b > a]
    text: list[str] = []
    splicer = StreamSplicer(
        source, view, base=Usage(9, 3), include_usage=True, text=text, expect=sent
    )
    stream = _anthropic_text_stream(pieces) if source is ANT else _openai_text_stream(pieces)
    rest = _splice(splicer, stream)
    assert "".join(text) == _SPLICE_TEXT[cut:]
    if target is ANT:
        events = anthropic_events(first + rest)
        assert [e["type"] for e in events].count("message_start") == 1
        final = anthropic_final(events)
        assert final.content[0].text == _SPLICE_TEXT
        assert final.usage.output_tokens == 3 + len(pieces)  # both parts
        assert final.usage.input_tokens == 18
    else:
        chunks, done = openai_chunks(first + rest)
        assert done and len({c["id"] for c in chunks}) == 1
        assert sum(1 for c in chunks for ch in c["choices"] if "role" in ch["delta"]) == 1
        final = openai_final(chunks)
        assert final.choices[0].message.content == _SPLICE_TEXT
        assert final.usage is not None and final.usage.completion_tokens == 3 + len(pieces)


@pytest.mark.parametrize("target", [ANT, OAI])
def test_a_restart_that_departs_mid_chunk_diverges_before_any_of_it_is_sent(
    target: Format,
) -> None:
    _, view = _client_part(target, "The quick brown")
    splicer = StreamSplicer(
        ANT, view, base=Usage(), include_usage=False, text=[], expect="The quick brown"
    )
    dec = SSEDecoder()
    events = dec.feed(_anthropic_text_stream(["The qu", "ick brave new world"]))
    out: list[bytes] = []
    with pytest.raises(SpliceDiverged):
        for ev in events:
            out += splicer.feed(ev)
    assert not any(b"text" in b for b in out)


def test_a_prefill_continuation_drops_the_white_space_the_prefill_had_to_leave_out() -> None:
    _, view = _client_part(ANT, "Hello ")
    text: list[str] = []
    # the client has "Hello "; the prefill sent "Hello"; the model goes on with " world"
    splicer = StreamSplicer(
        ANT, view, base=Usage(), include_usage=False, text=text, expect=" ", strict=False
    )
    _splice(splicer, _anthropic_text_stream([" world", "!"]))
    assert "".join(text) == "world!"
    # and one that does not repeat it is taken as it comes
    text2: list[str] = []
    splicer = StreamSplicer(
        ANT, view, base=Usage(), include_usage=False, text=text2, expect=" ", strict=False
    )
    _splice(splicer, _anthropic_text_stream(["world"]))
    assert "".join(text2) == "world"


def test_a_cut_openai_parts_unknown_input_is_counted_as_the_fallbacks_prompt() -> None:
    _, view = _client_part(OAI, "The quick")
    splicer = StreamSplicer(
        OAI, view, base=Usage(0, 2), include_usage=True, text=[], expect="The quick"
    )
    out = _splice(splicer, _openai_text_stream(["The quick", " fox"], prompt_tokens=40))
    chunks, _ = openai_chunks(out)
    assert (
        chunks[-1]["usage"]["prompt_tokens"] == 80 and chunks[-1]["usage"]["completion_tokens"] == 4
    )
    assert splicer.base == Usage(40, 2)

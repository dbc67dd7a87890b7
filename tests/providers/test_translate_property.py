"""Property tests: random conversations and streams survive every route and nothing crashes."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from typing import Any

import orjson
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import RawMessageStreamEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from bastion.providers.base import Format
from bastion.providers.sse import SSEDecoder, SSEEvent
from bastion.providers.translate import (
    StreamTranslator,
    emit_request,
    parse_request,
    request_to,
    response_to,
)
from bastion.providers.translate._stream_anthropic import AnthropicStreamEmitter
from bastion.providers.translate.model import (
    ImagePart,
    Message,
    Request,
    Role,
    StopReason,
    StreamEnd,
    StreamFinish,
    StreamStart,
    TextDelta,
    TextPart,
    Tool,
    ToolCallDelta,
    ToolCallPart,
    ToolCallStart,
    ToolChoice,
    ToolChoiceMode,
    ToolResultPart,
    Usage,
)

ANT, OAI = Format.ANTHROPIC, Format.OPENAI
FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_RAW_EVENT = TypeAdapter(RawMessageStreamEvent)

texts = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=12).filter(
    lambda t: not t.startswith("[")  # a leading "[tool error] " is how is_error travels via OpenAI
)
ids = st.from_regex(r"[A-Za-z0-9_-]{1,10}", fullmatch=True)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
arguments = st.dictionaries(
    st.text(max_size=5).filter(lambda k: k != "_raw"), json_values, max_size=3
)
images = st.builds(
    ImagePart,
    media_type=st.sampled_from(["image/png", "image/jpeg"]),
    data=st.from_regex(r"[A-Za-z0-9+/]{4,12}={0,2}", fullmatch=True),
) | st.builds(ImagePart, url=st.from_regex(r"https://example\.com/[a-z]{1,8}\.png", fullmatch=True))
tool_calls = st.builds(ToolCallPart, id=ids, name=ids, arguments=arguments)
tool_results = st.builds(
    ToolResultPart,
    tool_call_id=ids,
    content=st.lists(st.builds(TextPart, texts), max_size=2).map(tuple),
    is_error=st.booleans(),
)
user_parts = st.lists(
    st.one_of(st.builds(TextPart, texts), images, tool_results), min_size=1, max_size=4
)
assistant_parts = st.lists(
    st.one_of(st.builds(TextPart, texts), tool_calls), min_size=1, max_size=4
)


@st.composite
def conversations(draw: st.DrawFn) -> tuple[Message, ...]:
    n = draw(st.integers(1, 6))
    roles = [Role.USER] + [draw(st.sampled_from(list(Role))) for _ in range(n - 1)]
    return tuple(
        Message(r, tuple(draw(user_parts if r is Role.USER else assistant_parts))) for r in roles
    )


@st.composite
def requests(draw: st.DrawFn) -> Request:
    tools = tuple(
        draw(
            st.lists(
                st.builds(
                    Tool,
                    name=ids,
                    description=st.none() | texts,
                    parameters=st.just({"type": "object", "properties": {}}),
                ),
                max_size=2,
            )
        )
    )
    choice = parallel = None
    if tools:
        mode = draw(st.sampled_from(list(ToolChoiceMode)) | st.none())
        choice = (
            None
            if mode is None
            else ToolChoice(mode, tools[0].name if mode is ToolChoiceMode.TOOL else None)
        )
        if mode is not ToolChoiceMode.NONE:
            parallel = draw(st.sampled_from([None, False]))
    return Request(
        messages=draw(conversations()),
        system=draw(st.none() | texts),
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=parallel,
        stop=tuple(draw(st.lists(texts.filter(str.strip), max_size=4))),
        max_tokens=draw(st.integers(1, 100_000)),
        temperature=draw(st.none() | st.floats(0, 1)),
        top_p=draw(st.none() | st.floats(0, 1)),
        user_id=draw(st.none() | ids),
        stream=draw(st.booleans()),
    )


def normalize(req: Request) -> Request:
    """What any route may legally change: turn merging and block order within a turn."""
    merged: list[Message] = []
    for msg in req.messages:
        if not msg.parts:
            continue
        if merged and merged[-1].role is msg.role:
            merged[-1] = Message(msg.role, merged[-1].parts + msg.parts)
        else:
            merged.append(msg)

    out = []
    for msg in merged:
        if msg.role is Role.USER:
            parts = sorted(msg.parts, key=lambda p: not isinstance(p, ToolResultPart))
        else:
            parts = sorted(msg.parts, key=lambda p: isinstance(p, ToolCallPart))
        out.append(Message(msg.role, tuple(parts)))
    choice = req.tool_choice or (
        ToolChoice(ToolChoiceMode.AUTO) if req.tools else None
    )  # the default
    return replace(
        req,
        messages=tuple(out),
        tool_choice=choice,
        parallel_tool_calls=req.parallel_tool_calls or None,
    )


@FAST
@given(requests())
def test_each_format_reads_back_what_it_writes(req: Request) -> None:
    for fmt in (ANT, OAI):
        body = json.loads(orjson.dumps(emit_request(fmt, req, "m")))
        assert normalize(parse_request(fmt, body)) == normalize(req)


@FAST
@given(requests())
def test_requests_survive_translation_in_both_directions(req: Request) -> None:
    for source, target in ((ANT, OAI), (OAI, ANT)):
        body = emit_request(source, req, "m")
        translated = request_to(target, body, source=source, model="m2")
        assert translated["model"] == "m2"
        assert normalize(parse_request(target, translated)) == normalize(req)
        back = request_to(source, translated, source=target, model="m")
        assert normalize(parse_request(source, back)) == normalize(req)


@FAST
@given(requests())
def test_anthropic_output_always_alternates_and_starts_with_user(req: Request) -> None:
    msgs = emit_request(ANT, replace(req, messages=req.messages[1:] or req.messages), "m")[
        "messages"
    ]
    roles = [m["role"] for m in msgs]
    assert roles[:1] in ([], ["user"])
    assert all(a != b for a, b in itertools.pairwise(roles))
    for m in msgs:
        kinds = [b["type"] for b in m["content"]]
        assert kinds == sorted(kinds, key=lambda k: k != "tool_result")
        assert all(b.get("text", "x") for b in m["content"])


# --- never crash ---------------------------------------------------------------------

JUNK_KEYS = [
    "role",
    "content",
    "type",
    "text",
    "tool_calls",
    "id",
    "function",
    "arguments",
    "name",
    "input",
    "tool_use_id",
    "tool_call_id",
    "image_url",
    "url",
    "source",
    "usage",
    "choices",
    "message",
    "delta",
    "index",
    "stop_reason",
    "finish_reason",
    "error",
    "is_error",
    "prompt_tokens",
]


def _junk_containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(JUNK_KEYS), inner, max_size=4
    )


junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    _junk_containers,
    max_leaves=12,
)
roles = st.sampled_from(["user", "assistant", "system", "developer", "tool", "function", None])
junk_messages = st.lists(
    st.fixed_dictionaries(
        {"role": roles, "content": junk}, optional={"tool_calls": junk, "tool_call_id": junk}
    ),
    max_size=5,
)


@FAST
@given(junk_messages, junk, junk)
def test_malformed_requests_never_crash(messages: list[Any], tools: Any, choice: Any) -> None:
    body = {
        "model": "x",
        "messages": messages,
        "tools": tools,
        "tool_choice": choice,
        "stop": choice,
        "system": tools,
        "stop_sequences": tools,
        "metadata": choice,
        "max_tokens": choice,
        "temperature": tools,
        "top_p": choice,
        "user": tools,
        "parallel_tool_calls": choice,
    }
    for source, target in ((ANT, OAI), (OAI, ANT)):
        request_to(target, body, source=source, model="m")


@FAST
@given(
    st.dictionaries(
        st.sampled_from(["id", "content", "choices", "usage", "stop_reason", "model"]), junk
    )
)
def test_malformed_responses_never_crash(body: dict[str, Any]) -> None:
    response_to(OAI, body, source=ANT)
    response_to(ANT, body, source=OAI)


@FAST
@given(
    st.lists(
        st.tuples(
            st.none() | st.sampled_from(["message_start", "content_block_delta", "error"]), junk
        ),
        max_size=8,
    )
)
def test_malformed_stream_events_never_crash(events: list[tuple[str | None, Any]]) -> None:
    for source, target in ((ANT, OAI), (OAI, ANT)):
        tr = StreamTranslator(source, target, model=None, include_usage=True)
        for name, data in events:
            tr.feed(SSEEvent(raw=b"", event=name, data=json.dumps(data).encode()))
        tr.finish()


# --- streams -------------------------------------------------------------------------

segments = st.lists(
    st.one_of(
        st.tuples(st.just("text"), st.text(min_size=1, max_size=10)),
        st.tuples(st.just("tool"), ids, ids, arguments, st.lists(st.integers(0, 200), max_size=3)),
    ),
    min_size=1,
    max_size=5,
)


def anthropic_source(segs: list[Any]) -> tuple[bytes, list[Any]]:
    """Render segments as a real-looking Anthropic stream, and the content blocks it should give."""
    emitter = AnthropicStreamEmitter(None)
    out = emitter.emit(StreamStart("msg_p", "claude", Usage(input_tokens=3)))
    expected: list[Any] = []
    for key, seg in enumerate(segs):
        if seg[0] == "text":
            out += emitter.emit(TextDelta(seg[1]))
            if expected and expected[-1][0] == "text":
                expected[-1] = ("text", expected[-1][1] + seg[1])
            else:
                expected.append(("text", seg[1]))
        else:
            _, call_id, name, args, cuts = seg
            out += emitter.emit(ToolCallStart(key, call_id, name))
            raw = orjson.dumps(args).decode()
            points = sorted({0, len(raw), *(c % (len(raw) + 1) for c in cuts)})
            for a, b in itertools.pairwise(points):
                out += emitter.emit(ToolCallDelta(key, raw[a:b]))
            expected.append(("tool", call_id, name, args))
    out += emitter.emit(
        StreamFinish(
            StopReason.TOOL_USE if any(s[0] == "tool" for s in segs) else StopReason.END_TURN
        )
    )
    out += emitter.emit(StreamEnd())
    return b"".join(out), expected


def pump(tr: StreamTranslator, data: bytes, split: int) -> bytes:
    dec, out = SSEDecoder(), []
    for i in range(0, len(data), split):
        for ev in dec.feed(data[i : i + split]):
            out += tr.feed(ev)
    return b"".join(out + tr.finish())


@FAST
@given(segments, st.integers(1, 50), st.integers(1, 50))
def test_streams_survive_anthropic_to_openai_to_anthropic(
    segs: list[Any], split1: int, split2: int
) -> None:
    source, expected = anthropic_source(segs)
    first = StreamTranslator(ANT, OAI, model=None, include_usage=True)
    second = StreamTranslator(OAI, ANT, model=None, include_usage=False)
    final_bytes = pump(second, pump(first, source, split1), split2)
    assert first.finished and second.finished
    snapshot, bufs = None, {}
    for ev in SSEDecoder().feed(final_bytes):
        data = json.loads(ev.data)
        if data["type"] != "ping":
            snapshot = accumulate_event(
                event=_RAW_EVENT.validate_python(data), current_snapshot=snapshot, json_bufs=bufs
            )
    assert snapshot is not None
    got = [
        ("text", b.text) if b.type == "text" else ("tool", b.id, b.name, b.input)
        for b in snapshot.content
    ]
    assert got == expected
    assert second.text_so_far == first.text_so_far == "".join(s[1] for s in segs if s[0] == "text")
    assert snapshot.stop_reason == ("tool_use" if any(s[0] == "tool" for s in segs) else "end_turn")
    assert snapshot.usage.input_tokens == 3

"""The translation matrix with Bedrock Converse: every pair with the two client formats, both
directions, for requests, answers and streams, as hypothesis properties over the same random
conversations and streams as ``test_translate_property`` (whose strategies are reused).

Bedrock drops what Converse cannot say (``_bedrock``'s docstring): the user id, the parallel
tool-call switch, image URLs and ``tool_choice: none`` with no tool history; ``normalize_br``
applies exactly those losses to the expected request, nothing else.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from typing import Any

import orjson
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import RawMessageStreamEvent
from botocore.eventstream import EventStreamBuffer
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter
from tests.providers.test_translate_property import (
    FAST,
    anthropic_source,
    ids,
    normalize,
    requests,
    segments,
    texts,
)

from bastion.providers.base import Format
from bastion.providers.eventstream import encode
from bastion.providers.sse import SSEDecoder
from bastion.providers.translate import (
    emit_request,
    emit_response,
    parse_request,
    parse_response,
    request_to,
    response_to,
)
from bastion.providers.translate._bedrock import EMPTY_RESULT_TEXT, LEADING_USER_TEXT
from bastion.providers.translate._stream_anthropic import (
    AnthropicStreamEmitter,
    AnthropicStreamParser,
)
from bastion.providers.translate._stream_bedrock import BedrockStreamEmitter, BedrockStreamParser
from bastion.providers.translate._stream_openai import OpenAIStreamEmitter, OpenAIStreamParser
from bastion.providers.translate.model import (
    ImagePart,
    Message,
    Request,
    Response,
    Role,
    StopReason,
    StreamEvent,
    TextPart,
    ToolCallPart,
    ToolChoice,
    ToolChoiceMode,
    ToolResultPart,
    Usage,
)

ANT, OAI, BDR = Format.ANTHROPIC, Format.OPENAI, Format.BEDROCK
CLIENTS = (ANT, OAI)
PAIRS = [(a, b) for a, b in itertools.permutations((ANT, OAI, BDR), 2) if BDR in (a, b)]
_RAW_EVENT = TypeAdapter(RawMessageStreamEvent)


def normalize_br(req: Request) -> Request:
    """``normalize`` after what a route through Converse loses."""
    messages = []
    for msg in req.messages:
        parts = []
        for p in msg.parts:
            if isinstance(p, ImagePart) and p.data is None:
                continue  # Converse takes no image URL
            if isinstance(p, ToolResultPart) and not p.content:
                p = replace(p, content=(TextPart(EMPTY_RESULT_TEXT),))
            parts.append(p)
        if parts:
            messages.append(Message(msg.role, tuple(parts)))
    if messages and messages[0].role is Role.ASSISTANT:  # Converse opens with the user
        messages.insert(0, Message(Role.USER, (TextPart(LEADING_USER_TEXT),)))
    history = any(isinstance(p, ToolCallPart | ToolResultPart) for m in messages for p in m.parts)
    tools, choice = req.tools, req.tool_choice
    if choice is not None and choice.mode is ToolChoiceMode.NONE:
        tools, choice = (tools, ToolChoice(ToolChoiceMode.AUTO)) if history else ((), None)
    return normalize(
        replace(
            req,
            messages=tuple(messages),
            user_id=None,
            parallel_tool_calls=None,
            stream=False,
            tools=tools,
            tool_choice=choice,
        )
    )


@FAST
@given(requests())
def test_converse_reads_back_what_it_writes(req: Request) -> None:
    body = json.loads(orjson.dumps(emit_request(BDR, req, "m")))
    assert "model" not in body and "stream" not in body  # both go in the URL
    got = normalize_br(parse_request(BDR, body))
    want = normalize_br(req)
    if not want.tools:  # tools declared for the history's sake only
        got = replace(got, tools=(), tool_choice=None)
    assert got == want


@pytest.mark.parametrize(("source", "target"), PAIRS, ids=lambda f: f.value)
@FAST
@given(req=requests())
def test_requests_survive_every_route_through_bedrock(
    source: Format, target: Format, req: Request
) -> None:
    body = emit_request(source, req, "m")
    translated = request_to(target, body, source=source, model="m2")
    got = normalize_br(parse_request(target, translated))
    # from Converse, the body already lost what Converse cannot say
    want = normalize_br(parse_request(BDR, body) if source is BDR else req)
    if not want.tools:
        got = replace(got, tools=(), tool_choice=None)
    assert got == want


def test_tool_history_without_tools_still_declares_them_for_converse() -> None:
    req = Request(
        messages=(
            Message(Role.USER, (TextPart("hi"),)),
            Message(Role.ASSISTANT, (ToolCallPart("c1", "lookup", {"q": 1}),)),
            Message(Role.USER, (ToolResultPart("c1", (TextPart("done"),)),)),
        )
    )
    body = emit_request(BDR, req, "m")
    assert body["toolConfig"] == {
        "tools": [
            {
                "toolSpec": {
                    "name": "lookup",
                    "inputSchema": {"json": {"type": "object", "properties": {}}},
                }
            }
        ]
    }


# --- answers ----------------------------------------------------------------------------

json_args = st.dictionaries(
    st.text(max_size=5).filter(lambda k: k != "_raw"),
    st.integers(-1000, 1000) | st.text(max_size=5) | st.booleans(),
    max_size=3,
)


@st.composite
def responses(draw: st.DrawFn) -> Response:
    parts = draw(
        st.lists(
            st.one_of(
                st.builds(TextPart, texts),
                st.builds(ToolCallPart, id=ids, name=ids, arguments=json_args),
            ),
            min_size=1,
            max_size=4,
        )
    )
    has_tool = any(isinstance(p, ToolCallPart) for p in parts)
    reasons = (
        [StopReason.TOOL_USE]
        if has_tool
        else [
            StopReason.END_TURN,
            StopReason.MAX_TOKENS,
            StopReason.STOP_SEQUENCE,
        ]
    )
    return Response(
        id="",
        model="",
        parts=tuple(parts),
        stop_reason=draw(st.sampled_from(reasons)),
        usage=Usage(*(draw(st.integers(0, 10_000)) for _ in range(4))),
    )


def _merge_text(parts: tuple[Any, ...]) -> list[Any]:
    out: list[Any] = []
    for p in parts:
        if isinstance(p, TextPart) and out and isinstance(out[-1], TextPart):
            out[-1] = TextPart(out[-1].text + p.text)
        else:
            out.append(p)
    return out


@pytest.mark.parametrize("client", CLIENTS, ids=lambda f: f.value)
@FAST
@given(resp=responses())
def test_answers_survive_bedrock_to_each_client_and_back(client: Format, resp: Response) -> None:
    converse = emit_response(BDR, resp, "m")
    assert set(converse) == {"output", "stopReason", "usage", "metrics"}
    usage = converse["usage"]
    assert usage["totalTokens"] == sum(
        usage.get(k, 0)
        for k in ("inputTokens", "outputTokens", "cacheReadInputTokens", "cacheWriteInputTokens")
    )
    at_client = response_to(client, converse, source=BDR, model="alias")
    back = parse_response(BDR, response_to(BDR, at_client, source=client))
    want = resp.parts
    if client is OAI:  # one message: its text, then its tool calls
        want = tuple(sorted(want, key=lambda p: isinstance(p, ToolCallPart)))
    assert _merge_text(back.parts) == _merge_text(want)
    assert back.stop_reason == resp.stop_reason or (
        client is OAI and resp.stop_reason is StopReason.STOP_SEQUENCE
    )  # OpenAI says "stop" for a natural end and a stop sequence alike
    if client is ANT:
        assert back.usage == resp.usage
    else:  # OpenAI has no cache-write count
        assert back.usage.output_tokens == resp.usage.output_tokens


# --- streams ----------------------------------------------------------------------------


def _frames(events: list[tuple[str, dict[str, Any]]]) -> bytes:
    return b"".join(
        encode(
            {":event-type": name, ":content-type": "application/json", ":message-type": "event"},
            orjson.dumps(payload),
        )
        for name, payload in events
    )


def _unframe(data: bytes, split: int) -> list[tuple[str, dict[str, Any]]]:
    buf, out = EventStreamBuffer(), []
    for i in range(0, len(data), split):
        buf.add_data(data[i : i + split])
        out += [(m.headers[":event-type"], json.loads(m.payload)) for m in buf]
    return out


def _anthropic_snapshot(data: bytes) -> Any:
    snapshot, bufs = None, {}
    for ev in SSEDecoder().feed(data):
        payload = json.loads(ev.data)
        if payload["type"] != "ping":
            snapshot = accumulate_event(
                event=_RAW_EVENT.validate_python(payload), current_snapshot=snapshot, json_bufs=bufs
            )
    return snapshot


def _neutral(fmt: Format, data: bytes) -> list[StreamEvent]:
    parser: AnthropicStreamParser | OpenAIStreamParser = (
        AnthropicStreamParser() if fmt is ANT else OpenAIStreamParser()
    )
    return [ev for sse in SSEDecoder().feed(data) for ev in parser.parse(sse)]


@FAST
@given(segments, st.integers(1, 64))
def test_streams_survive_anthropic_to_bedrock_frames_to_anthropic(
    segs: list[Any], split: int
) -> None:
    source, expected = anthropic_source(segs)
    to_bedrock = BedrockStreamEmitter()
    events = [e for ev in _neutral(ANT, source) for e in to_bedrock.emit(ev)]
    names = [n for n, _ in events]
    assert names[0] == "messageStart" and names[-2:] == ["messageStop", "metadata"]
    parser = BedrockStreamParser(id_="req-1", model="anthropic.claude")
    emitter = AnthropicStreamEmitter("anthropic.claude")
    out = [
        b
        for name, payload in _unframe(_frames(events), split)
        for ev in parser.parse(name, payload)
        for b in emitter.emit(ev)
    ]
    snapshot = _anthropic_snapshot(b"".join(out))
    got = [
        ("text", b.text) if b.type == "text" else ("tool", b.id, b.name, b.input)
        for b in snapshot.content
    ]
    assert got == expected
    has_tool = any(s[0] == "tool" for s in segs)
    assert snapshot.stop_reason == ("tool_use" if has_tool else "end_turn")
    assert snapshot.usage.input_tokens == 3


@FAST
@given(segments, st.integers(1, 64))
def test_streams_survive_bedrock_frames_to_openai(segs: list[Any], split: int) -> None:
    source, expected = anthropic_source(segs)
    to_bedrock = BedrockStreamEmitter()
    events = [e for ev in _neutral(ANT, source) for e in to_bedrock.emit(ev)]
    parser = BedrockStreamParser(id_="req-1", model="m")
    emitter = OpenAIStreamEmitter("alias", include_usage=True)
    out = b"".join(
        b
        for name, payload in _unframe(_frames(events), split)
        for ev in parser.parse(name, payload)
        for b in emitter.emit(ev)
    )
    text, calls, finish, usage = "", {}, [], None
    for sse in SSEDecoder().feed(out):
        if sse.data == b"[DONE]":
            continue
        chunk = json.loads(sse.data)
        usage = chunk.get("usage") or usage
        for choice in chunk["choices"]:
            text += choice["delta"].get("content") or ""
            for call in choice["delta"].get("tool_calls") or ():
                slot = calls.setdefault(call["index"], {"id": "", "name": "", "args": ""})
                slot["id"] = call.get("id") or slot["id"]
                slot["name"] = call.get("function", {}).get("name") or slot["name"]
                slot["args"] += call.get("function", {}).get("arguments") or ""
            if choice.get("finish_reason"):
                finish.append(choice["finish_reason"])
    assert text == "".join(s[1] for s in segs if s[0] == "text")
    want_tools = [(e[1], e[2], e[3]) for e in expected if e[0] == "tool"]
    assert [(c["id"], c["name"], json.loads(c["args"])) for c in calls.values()] == want_tools
    assert finish == ["tool_calls" if want_tools else "stop"]
    assert usage is not None and usage["prompt_tokens"] == 3


def test_exception_frames_are_stream_errors_of_their_kind() -> None:
    from bastion.providers.translate.model import ErrorKind, StreamError

    parser = BedrockStreamParser()
    (ev,) = parser.parse("throttlingException", {"message": "slow down"}, exception=True)
    assert ev == StreamError(ErrorKind.RATE_LIMIT, "slow down")
    (ev,) = parser.parse("serviceUnavailableException", {}, exception=True)
    assert isinstance(ev, StreamError) and ev.kind is ErrorKind.OVERLOADED


def test_text_opens_without_a_block_start_and_padding_is_ignored() -> None:
    parser = BedrockStreamParser(id_="r", model="m")
    evs = parser.parse(
        "contentBlockDelta", {"delta": {"text": "hi"}, "contentBlockIndex": 0, "p": "abc"}
    )
    assert [type(e).__name__ for e in evs] == ["StreamStart", "TextDelta"]

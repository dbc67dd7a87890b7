"""Translation matrix (issue #14): every client format (OpenAI chat, Anthropic messages, the
Responses API) against every provider format (openai, anthropic, azure-openai, gemini, bedrock,
sim), each pair taken down the path the gateway takes for it:

- requests: the client body (Responses first to its chat view, ``request.to_chat``) to the
  provider's wire (``request_to``; Bedrock as Anthropic, then ``bedrock.build_request``; a
  Responses call to an openai or sim deployment natively, ``wire.request_from_chat``), read
  back by the provider format's parser: system text, user text, tool calls, the results that
  answer them (id pairing), tool names and the token limit must arrive;
- answers and streams: the provider's body / event stream (Bedrock's as eventstream frames
  through the transport's reader) read into the client's format, then checked against the
  official SDK's own types (``ChatCompletion``, ``ChatCompletionChunk``, Anthropic's
  ``accumulate_event``, ``openai.types.responses.Response``): text, tool calls with their
  arguments, the finish reason and the usage must be what the provider said;
- errors: a provider's 429 and 400 reach the client as its own rate-limit / invalid-request
  error with the provider's message.

All of it is a hypothesis property: for any conversation and answer the round trip keeps the
meaning. Bodies are plain dicts in and out: no process is needed for the translation itself
(the SDK tests against bastion serve cover the same pairs over HTTP).
"""

from __future__ import annotations

import itertools
import json
import string
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message as AnthropicMessage
from anthropic.types import RawMessageStreamEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response as ResponsesObject
from pydantic import TypeAdapter

from bastion.providers import bedrock
from bastion.providers.base import Format
from bastion.providers.eventstream import EventStreamDecoder, encode
from bastion.providers.sse import SSEDecoder
from bastion.providers.translate import (
    StreamTranslator,
    _bedrock,
    emit_response,
    error_to,
    parse_request,
    request_to,
    response_to,
)
from bastion.providers.translate._errors import render_error
from bastion.providers.translate._stream_anthropic import (
    AnthropicStreamEmitter,
)
from bastion.providers.translate._stream_bedrock import BedrockStreamEmitter, BedrockStreamParser
from bastion.providers.translate._stream_gemini import GeminiStreamEmitter
from bastion.providers.translate._stream_openai import OpenAIStreamEmitter
from bastion.providers.translate.model import (
    ErrorKind,
    Request,
    Response,
    StopReason,
    StreamEnd,
    StreamEvent,
    StreamFinish,
    StreamStart,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolCallPart,
    ToolCallStart,
    ToolResultPart,
    Usage,
    UsageUpdate,
)
from bastion.responses.request import to_chat
from bastion.responses.response import from_chat
from bastion.responses.stream import ResponsesEmitter
from bastion.responses.wire import ChatFromResponses, chat_from_response, request_from_chat

CLIENTS = ("openai", "anthropic", "responses")
PROVIDERS = ("openai", "anthropic", "azure-openai", "gemini", "bedrock", "sim")
PAIRS = list(itertools.product(CLIENTS, PROVIDERS))
MODEL = "m-1"
PROPS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ECHO = to_chat({"model": "alias", "input": "hi"}).echo  # what the handler echoes
_RAW_EVENT: TypeAdapter[RawMessageStreamEvent] = TypeAdapter(RawMessageStreamEvent)


@dataclass(frozen=True)
class Route:
    """How the gateway reaches a provider for a client: the wire and the chat format it reads."""

    client_chat: Format  # the client's format as the gateway's call body (Responses -> OpenAI)
    wire: Format  # what the provider speaks
    native_responses: bool  # a Responses call sent as a Responses request


def route(client: str, provider: str) -> Route:
    chat = Format.ANTHROPIC if client == "anthropic" else Format.OPENAI
    wire = {
        "openai": Format.OPENAI,
        "azure-openai": Format.OPENAI,
        "anthropic": Format.ANTHROPIC,
        "gemini": Format.GEMINI,
        "bedrock": Format.BEDROCK,
        "sim": chat,  # the simulator speaks the client's own format
    }[provider]
    native = client == "responses" and provider in ("openai", "sim")  # native.NATIVE_KINDS
    return Route(chat, wire, native)


# ---------------------------------------------------------------- conversations and answers

_text = st.text(
    st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from('\n\t"{}<>\\'),
    min_size=1,
    max_size=40,
).filter(lambda s: s.strip() != "")
_name = st.from_regex(r"[a-zA-Z][a-zA-Z0-9_]{0,20}", fullmatch=True)
_args = st.dictionaries(
    st.text(string.ascii_lowercase, min_size=1, max_size=6),
    _text | st.integers(-(2**63), 2**63 - 1),  # past 64 bits JSON integers come back as floats
    max_size=3,
)


@dataclass(frozen=True)
class Convo:
    system: str | None
    user: str
    calls: tuple[tuple[str, str, dict[str, Any]], ...]  # (id, name, args)
    results: tuple[str, ...]  # one per call, same order
    max_tokens: int


@st.composite
def convos(draw: st.DrawFn) -> Convo:
    n = draw(st.integers(0, 2))
    names = draw(st.lists(_name, min_size=n, max_size=n, unique=True))
    calls = tuple(
        (f"call_{i}x{draw(st.integers(0, 999))}", nm, draw(_args)) for i, nm in enumerate(names)
    )
    return Convo(
        system=draw(st.none() | _text),
        user=draw(_text),
        calls=calls,
        results=tuple(draw(_text) for _ in calls),
        max_tokens=draw(st.integers(1, 4096)),
    )


def client_body(client: str, c: Convo) -> dict[str, Any]:
    params: dict[str, Any] = {"type": "object", "properties": {}}
    if client == "anthropic":
        msgs: list[Any] = [{"role": "user", "content": c.user}]
        if c.calls:
            uses = [{"type": "tool_use", "id": i, "name": n, "input": a} for i, n, a in c.calls]
            msgs.append({"role": "assistant", "content": uses})
            results = [
                {"type": "tool_result", "tool_use_id": i, "content": r}
                for (i, _, _), r in zip(c.calls, c.results, strict=True)
            ]
            msgs.append({"role": "user", "content": results})
        body: dict[str, Any] = {"model": "alias", "max_tokens": c.max_tokens, "messages": msgs}
        if c.system is not None:
            body["system"] = c.system
        if c.calls:
            body["tools"] = [{"name": n, "input_schema": params} for _, n, _ in c.calls]
        return body
    if client == "responses":
        items: list[Any] = [{"role": "user", "content": c.user}]
        for (i, n, a), r in zip(c.calls, c.results, strict=True):
            items.append(
                {"type": "function_call", "call_id": i, "name": n, "arguments": json.dumps(a)}
            )
            items.append({"type": "function_call_output", "call_id": i, "output": r})
        body = {"model": "alias", "input": items, "max_output_tokens": c.max_tokens}
        if c.system is not None:
            body["instructions"] = c.system
        if c.calls:
            body["tools"] = [
                {"type": "function", "name": n, "parameters": params} for _, n, _ in c.calls
            ]
        return body
    omsgs: list[Any] = []
    if c.system is not None:
        omsgs.append({"role": "system", "content": c.system})
    omsgs.append({"role": "user", "content": c.user})
    if c.calls:
        tcs = [
            {"id": i, "type": "function", "function": {"name": n, "arguments": json.dumps(a)}}
            for i, n, a in c.calls
        ]
        omsgs.append({"role": "assistant", "content": None, "tool_calls": tcs})
        for (i, _, _), r in zip(c.calls, c.results, strict=True):
            omsgs.append({"role": "tool", "tool_call_id": i, "content": r})
    body = {"model": "alias", "messages": omsgs, "max_tokens": c.max_tokens}
    if c.calls:
        body["tools"] = [
            {"type": "function", "function": {"name": n, "parameters": params}}
            for _, n, _ in c.calls
        ]
    return body


def upstream_request(client: str, provider: str, c: Convo) -> Request:
    """What the provider receives for this client's body, read back in the provider's terms."""
    r = route(client, provider)
    body = client_body(client, c)
    if client == "responses":
        body = to_chat(body).chat
    if r.native_responses:
        sent = request_from_chat({**body, "model": MODEL}, {})
        return parse_request(Format.OPENAI, to_chat(sent).chat)  # its Responses body, read
    if r.wire is Format.BEDROCK:
        anthropic_body = request_to(Format.ANTHROPIC, body, source=r.client_chat, model=MODEL)
        sent = orjson.loads(
            bedrock.build_request("http://b", anthropic_body, {}, stream=False).body
        )
        return parse_request(Format.BEDROCK, sent)
    return parse_request(r.wire, request_to(r.wire, body, source=r.client_chat, model=MODEL))


@pytest.mark.parametrize(("client", "provider"), PAIRS)
@PROPS
@given(c=convos())
def test_requests_reach_every_provider_with_their_meaning(
    client: str, provider: str, c: Convo
) -> None:
    req = upstream_request(client, provider, c)
    assert req.system == c.system
    assert req.max_tokens == c.max_tokens
    texts = [p.text for m in req.messages for p in m.parts if isinstance(p, TextPart)]
    assert c.user in texts
    calls = [p for m in req.messages for p in m.parts if isinstance(p, ToolCallPart)]
    results = [p for m in req.messages for p in m.parts if isinstance(p, ToolResultPart)]
    assert [(p.name, p.arguments) for p in calls] == [(n, a) for _, n, a in c.calls]
    assert [t.name for t in req.tools] == [n for _, n, _ in c.calls]
    # every result answers its own call, whatever ids the provider's wire uses
    by_id = {p.id: p.name for p in calls}
    got = [
        (by_id.get(p.tool_call_id), "".join(x.text for x in p.content if isinstance(x, TextPart)))
        for p in results
    ]
    assert got == [(n, r) for (_, n, _), r in zip(c.calls, c.results, strict=True)]


# ---------------------------------------------------------------- answers


@dataclass(frozen=True)
class Answer:
    text: str
    calls: tuple[tuple[str, dict[str, Any]], ...]  # (name, args)
    tool_use: bool
    usage: tuple[int, int]


@st.composite
def answers(draw: st.DrawFn) -> Answer:
    n = draw(st.integers(0, 2))
    calls = tuple((draw(_name), draw(_args)) for _ in range(n))
    return Answer(
        draw(_text), calls, bool(calls), (draw(st.integers(1, 10**6)), draw(st.integers(1, 10**5)))
    )


def neutral_response(a: Answer) -> Response:
    parts: list[TextPart | ToolCallPart] = [TextPart(a.text)]
    parts += [ToolCallPart(f"toolu_{i}", n, args) for i, (n, args) in enumerate(a.calls)]
    stop = StopReason.TOOL_USE if a.tool_use else StopReason.END_TURN
    return Response("r1", MODEL, tuple(parts), stop, usage=Usage(*a.usage))


def read_client_answer(client: str, body: dict[str, Any]) -> Answer:
    """The answer as the client's official SDK types read it."""
    if client == "anthropic":
        msg = AnthropicMessage.model_validate(body)
        text = "".join(b.text for b in msg.content if b.type == "text")
        calls = tuple((b.name, b.input) for b in msg.content if b.type == "tool_use")
        usage = (msg.usage.input_tokens, msg.usage.output_tokens)
        return Answer(text, calls, msg.stop_reason == "tool_use", usage)
    if client == "responses":
        obj = ResponsesObject.model_validate(body)
        assert obj.status == "completed" and obj.usage is not None
        calls = tuple(
            (i.name, json.loads(i.arguments)) for i in obj.output if i.type == "function_call"
        )
        usage = (obj.usage.input_tokens, obj.usage.output_tokens)
        return Answer(obj.output_text, calls, bool(calls), usage)
    cc = ChatCompletion.model_validate(body)
    ch = cc.choices[0]
    calls = tuple(
        (t.function.name, json.loads(t.function.arguments))  # type: ignore[union-attr]
        for t in ch.message.tool_calls or ()
    )
    assert cc.usage is not None
    usage = (cc.usage.prompt_tokens, cc.usage.completion_tokens)
    return Answer(ch.message.content or "", calls, ch.finish_reason == "tool_calls", usage)


def client_answer(client: str, provider: str, resp: Response) -> dict[str, Any]:
    r = route(client, provider)
    if r.native_responses:
        upstream = from_chat(emit_response(Format.OPENAI, resp, MODEL), "resp_up", ECHO, now=1)
        chat = chat_from_response(upstream)
        assert chat is not None
        native: dict[str, Any] = from_chat(chat, "resp_1", ECHO, now=1)
        return native
    if r.wire is Format.BEDROCK:  # what BedrockTransport hands the gateway: Anthropic
        converse = _bedrock.emit_response(resp, MODEL)
        back = _bedrock.parse_response(converse, id_="rid", model=MODEL)
        body, source = emit_response(Format.ANTHROPIC, back, MODEL), Format.ANTHROPIC
    else:
        body, source = emit_response(r.wire, resp, MODEL), r.wire
    out: dict[str, Any] = response_to(r.client_chat, body, source=source, model=MODEL)
    if client == "responses":
        out = from_chat(out, "resp_1", ECHO, now=1)
    return out


@pytest.mark.parametrize(("client", "provider"), PAIRS)
@PROPS
@given(a=answers())
def test_answers_from_every_provider_read_the_same_in_every_client(
    client: str, provider: str, a: Answer
) -> None:
    got = read_client_answer(client, client_answer(client, provider, neutral_response(a)))
    assert got == a


# ---------------------------------------------------------------- streams


def stream_events(a: Answer, pieces: int) -> list[StreamEvent]:
    evs: list[StreamEvent] = [StreamStart("r1", MODEL, Usage(input_tokens=a.usage[0]))]
    step = max(1, len(a.text) // pieces)
    evs += [TextDelta(a.text[i : i + step]) for i in range(0, len(a.text), step)]
    for k, (name, args) in enumerate(a.calls):
        raw = json.dumps(args)
        evs.append(ToolCallStart(k, f"toolu_{k}", name))
        evs += [ToolCallDelta(k, raw[i : i + 5]) for i in range(0, len(raw), 5)]
    evs.append(StreamFinish(StopReason.TOOL_USE if a.tool_use else StopReason.END_TURN))
    evs.append(UsageUpdate(Usage(*a.usage)))
    evs.append(StreamEnd())
    return evs


def provider_stream(wire: Format, evs: list[StreamEvent]) -> tuple[Format, bytes]:
    """The provider's stream bytes, as the gateway reads them (Bedrock: after its transport)."""
    if wire is Format.BEDROCK:
        emitter = BedrockStreamEmitter()
        frames = b"".join(
            encode(
                {
                    ":event-type": name,
                    ":content-type": "application/json",
                    ":message-type": "event",
                },
                orjson.dumps(payload),
            )
            for ev in evs
            for name, payload in emitter.emit(ev)
        )
        parser = BedrockStreamParser(id_="rid", model=MODEL)
        to_anthropic = AnthropicStreamEmitter(MODEL)
        decoder = EventStreamDecoder()
        out = b"".join(
            b
            for i in range(0, len(frames), 7)  # any split: frames arrive in pieces
            for f in decoder.feed(frames[i : i + 7])
            for b in bedrock._frame_events(f.headers, f.payload, parser, to_anthropic)
        )
        return Format.ANTHROPIC, out
    em: AnthropicStreamEmitter | OpenAIStreamEmitter | GeminiStreamEmitter
    if wire is Format.ANTHROPIC:
        em = AnthropicStreamEmitter(MODEL)
    elif wire is Format.GEMINI:
        em = GeminiStreamEmitter(MODEL)
    else:
        em = OpenAIStreamEmitter(MODEL, include_usage=True)
    return wire, b"".join(b for ev in evs for b in em.emit(ev))


def client_stream(client: str, provider: str, evs: list[StreamEvent]) -> bytes:
    r = route(client, provider)
    if r.native_responses:  # upstream speaks Responses events; the wire reads them as chat
        chat_up = provider_stream(Format.OPENAI, evs)[1]
        up = ResponsesEmitter("resp_up", ECHO, created_at=1)
        responses_up = b"".join(up.feed(chat_up) + up.finish())
        conv = ChatFromResponses()
        source, data = Format.OPENAI, b"".join(conv.feed(responses_up))
    else:
        source, data = provider_stream(r.wire, evs)
    tr = StreamTranslator(source, r.client_chat, model=MODEL, include_usage=True)
    chat = b"".join(b for ev in SSEDecoder().feed(data) for b in tr.feed(ev)) + b"".join(
        tr.finish()
    )
    if client != "responses":
        return chat
    em = ResponsesEmitter("resp_1", ECHO, created_at=1)
    return b"".join(em.feed(chat) + em.finish())


def read_client_stream(client: str, data: bytes) -> Answer:
    events = list(SSEDecoder().feed(data))
    if client == "anthropic":
        snap, bufs = None, dict[int, bytes]()
        for ev in events:
            payload = json.loads(ev.data)
            if payload["type"] != "ping":
                snap = accumulate_event(
                    event=_RAW_EVENT.validate_python(payload), current_snapshot=snap, json_bufs=bufs
                )
        assert snap is not None
        assert json.loads(events[-1].data)["type"] == "message_stop"  # a clean, complete end
        return read_client_answer("anthropic", snap.model_dump())
    if client == "responses":
        (done,) = [
            json.loads(e.data) for e in events if json.loads(e.data)["type"] == "response.completed"
        ]
        return read_client_answer("responses", done["response"])
    assert events[-1].data == b"[DONE]"
    text, finish, usage = "", list[str](), None
    calls: dict[int, dict[str, str]] = {}
    for ev in events[:-1]:
        chunk = ChatCompletionChunk.model_validate_json(ev.data)
        usage = chunk.usage or usage
        for ch in chunk.choices:
            text += ch.delta.content or ""
            for call in ch.delta.tool_calls or ():
                slot = calls.setdefault(call.index, {"name": "", "args": ""})
                if call.function is not None:
                    slot["name"] += call.function.name or ""
                    slot["args"] += call.function.arguments or ""
            if ch.finish_reason:
                finish.append(ch.finish_reason)
    assert usage is not None and len(finish) == 1
    got = tuple((s["name"], json.loads(s["args"])) for s in calls.values())
    return Answer(
        text, got, finish == ["tool_calls"], (usage.prompt_tokens, usage.completion_tokens)
    )


@pytest.mark.parametrize(("client", "provider"), PAIRS)
@PROPS
@given(a=answers(), pieces=st.integers(1, 6))
def test_streams_from_every_provider_read_the_same_in_every_client(
    client: str, provider: str, a: Answer, pieces: int
) -> None:
    got = read_client_stream(client, client_stream(client, provider, stream_events(a, pieces)))
    assert got == a


@pytest.mark.parametrize(("client", "provider"), PAIRS)
def test_a_stream_cut_before_its_end_never_reads_as_a_clean_finish(
    client: str, provider: str
) -> None:
    a = Answer("Hello there, friend", (("get_weather", {"city": "Paris"}),), True, (5, 7))
    evs = stream_events(a, 3)
    cut = [e for e in evs if not isinstance(e, (StreamFinish, UsageUpdate, StreamEnd))]
    data = client_stream(client, provider, cut)
    events = [e for e in SSEDecoder().feed(data)]
    if client == "anthropic":
        assert json.loads(events[-1].data)["type"] == "error"
    elif client == "responses":
        kinds = [json.loads(e.data)["type"] for e in events]
        assert "response.completed" not in kinds and kinds[-1] in ("response.failed", "error")
    else:
        assert b"[DONE]" not in data and "error" in json.loads(events[-1].data)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(("client", "provider"), PAIRS)
@pytest.mark.parametrize(
    ("kind", "status"), [(ErrorKind.RATE_LIMIT, 429), (ErrorKind.INVALID_REQUEST, 400)]
)
def test_provider_errors_reach_every_client_as_its_own(
    client: str, provider: str, kind: ErrorKind, status: int
) -> None:
    r = route(client, provider)
    message = "provider says: nope"
    if r.wire is Format.BEDROCK:
        st_, headers, body = _bedrock.render_error(kind, message)
        an = bedrock._error(st_, dict(headers), orjson.dumps(body))
        source, st_, raw = Format.ANTHROPIC, an.status, an.body
    else:
        wire = Format.OPENAI if r.native_responses else r.wire
        source, st_, raw = wire, status, orjson.dumps(render_error(wire, kind, message))
    out_status, out = error_to(r.client_chat, st_, raw, source=source)
    assert out_status == status
    want = "rate_limit_error" if kind is ErrorKind.RATE_LIMIT else "invalid_request_error"
    if client == "anthropic":
        assert out["type"] == "error" and out["error"]["type"] == want
    else:
        assert out["error"]["type"] in (want, "requests")
    err = out["error"]
    assert message in err["message"]


def test_the_matrix_names_every_pair() -> None:
    assert len(PAIRS) == 18
    assert {route(c, p).wire for c, p in PAIRS} == set(Format)

"""Each dialect answers what the gateway asks of its format, on the simulator's real answers.

Bodies and streams come from the in-process simulator (the same bytes its HTTP server sends,
which the official SDKs parse: tests/providers/test_sim_*), and what a dialect writes is
read back by the official SDKs' own types.
"""

from __future__ import annotations

import itertools
from typing import Any

import anthropic
import openai
import orjson
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import RawMessageStreamEvent
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from bastion.call import Call, Principal, ToolCallOut
from bastion.dialects import (
    ANTHROPIC,
    OPENAI,
    Dialect,
    NoDialect,
    dialect_for,
    wire_for,
)
from bastion.errors import InvalidRequest, OutputBlocked, RateLimited
from bastion.providers.base import Format, UpstreamRequest
from bastion.providers.sim import SimTransport, Simulator
from bastion.providers.sse import SSEDecoder, SSEEvent
from bastion.safety.prompting.builder import PromptBuilder

DIALECTS = [ANTHROPIC, OPENAI]
_RAW_EVENT: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
TOOL_SCHEMA = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}


def request(
    d: Dialect, *, stream: bool, tools: bool = False, text: str = "Hello"
) -> UpstreamRequest:
    msgs = [{"role": "user", "content": text}]
    if d is ANTHROPIC:
        body: dict[str, Any] = {"model": "sim-small", "max_tokens": 60, "messages": msgs}
        if tools:
            body["tools"] = [{"name": "lookup", "input_schema": TOOL_SCHEMA}]
            body["tool_choice"] = {"type": "tool", "name": "lookup"}
        url, hs = "sim://local/v1/messages", {"anthropic-version": "2023-06-01"}
    else:
        body = {"model": "sim-small", "messages": msgs}
        if tools:
            fn = {"name": "lookup", "parameters": TOOL_SCHEMA}
            body["tools"] = [{"type": "function", "function": fn}]
            body["tool_choice"] = {"type": "function", "function": {"name": "lookup"}}
        if stream:
            body["stream_options"] = {"include_usage": True}
        url, hs = "sim://local/v1/chat/completions", {}
    body["stream"] = stream
    return UpstreamRequest("POST", url, hs, orjson.dumps(body), stream=stream)


async def sim_body(d: Dialect, **kw: Any) -> dict[str, Any]:
    transport = SimTransport(Simulator())
    resp = await transport.send(request(d, stream=False, **kw), timeout=5.0)
    assert resp.status == 200
    obj: dict[str, Any] = orjson.loads(await resp.read())
    await transport.aclose()
    return obj


async def sim_events(d: Dialect, **kw: Any) -> list[SSEEvent]:
    transport = SimTransport(Simulator())
    resp = await transport.send(request(d, stream=True, **kw), timeout=5.0)
    assert resp.status == 200
    dec = SSEDecoder()
    events: list[SSEEvent] = []
    async for chunk in resp.iter_chunks():
        events += dec.feed(chunk)
    await transport.aclose()
    return events


def make_call(d: Dialect) -> Call:
    return Call("req_1", "t" * 32, "s" * 16, d.format, Principal("k", "n"), {}, "m", False)


class Watch:
    """A watcher's state, as ``StreamWatcher`` keeps it."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.text: list[str] = call.output_text
        self.finished = self.errored = self.final = self.usage_seen = False
        self.stop_reason: str | None = None
        self.text_only = True
        self.tools: dict[int, ToolCallOut] = {}


class Upper:
    """An output filter holding nothing back: upper-cases text."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def run(self, text: str) -> str:
        self.seen.append(text)
        return text.upper()

    def flush(self) -> str:
        return ""


def sdk_message(d: Dialect, raw: bytes) -> tuple[str, str | None]:
    """(text, finish reason) as the official SDK parses a whole answer."""
    if d is ANTHROPIC:
        m = anthropic.types.Message.model_validate_json(raw)
        return "".join(b.text for b in m.content if b.type == "text"), m.stop_reason
    c = openai.types.chat.ChatCompletion.model_validate_json(raw)
    return c.choices[0].message.content or "", c.choices[0].finish_reason


def sdk_stream_text(d: Dialect, events: list[SSEEvent]) -> str:
    """The text the official SDK assembles from a stream's events."""
    if d is ANTHROPIC:
        snap: Any = None
        bufs: dict[int, bytes] = {}
        for ev in events:
            if ev.event == "ping":
                continue
            snap = accumulate_event(
                event=_RAW_EVENT.validate_python(orjson.loads(ev.data)),
                current_snapshot=snap,
                json_bufs=bufs,
            )
        return "".join(b.text for b in snap.content if b.type == "text")
    out = ""
    for ev in events:
        if ev.data.strip() == b"[DONE]":
            continue
        chunk = openai.types.chat.ChatCompletionChunk.model_validate_json(ev.data)
        for ch in chunk.choices:
            out += ch.delta.content or ""
    return out


# -- resolution -----------------------------------------------------------------------------


def test_a_format_resolves_to_its_dialect_and_a_dialect_to_itself() -> None:
    assert dialect_for(Format.ANTHROPIC) is ANTHROPIC and dialect_for("openai") is OPENAI
    assert dialect_for(OPENAI) is OPENAI and wire_for(ANTHROPIC) is ANTHROPIC
    assert (
        make_call(OPENAI).dialect is OPENAI and make_call(ANTHROPIC).shadow().dialect is ANTHROPIC
    )
    with pytest.raises(NoDialect, match="gemini"):
        dialect_for("gemini")
    assert OPENAI.render_error(NoDialect("x")).startswith(b'{"error"')


# -- reading answers ------------------------------------------------------------------------


@pytest.mark.parametrize("d", DIALECTS, ids=lambda d: d.format.value)
async def test_a_whole_answer_and_its_stream_read_the_same(d: Dialect) -> None:
    whole, streamed = make_call(d), make_call(d)
    own = d.observe_body(whole, await sim_body(d))
    w = Watch(streamed)
    outputs = [d.observe_event(w, ev) for ev in await sim_events(d)]
    assert w.finished and not w.errored and any(outputs)
    for c in (whole, streamed):
        assert "".join(c.output_text).endswith(".") and c.served_model == "sim-small"
        assert c.usage.output_tokens == 24 and c.usage.input_tokens >= 1
        assert c.finish_reason == ("end_turn" if d is ANTHROPIC else "stop")
        assert c.response_id and c.tool_calls == []
    assert own.output_tokens == 24
    assert "".join(whole.output_text) == "".join(streamed.output_text)
    assert w.text_only
    # only an OpenAI stream can end without its end marker and still be whole
    assert d.ended_cleanly(w) is (d is OPENAI)


@pytest.mark.parametrize("d", DIALECTS, ids=lambda d: d.format.value)
async def test_tool_calls_read_the_same_from_a_body_and_a_stream(d: Dialect) -> None:
    whole, streamed = make_call(d), make_call(d)
    d.observe_body(whole, await sim_body(d, tools=True))
    w = Watch(streamed)
    for ev in await sim_events(d, tools=True):
        d.observe_event(w, ev)
    assert not w.text_only
    for c in (whole, streamed):
        assert [t.name for t in c.tool_calls] == ["lookup"]
        assert isinstance(orjson.loads(c.tool_calls[0].arguments)["q"], str)
        assert c.finish_reason == ("tool_use" if d is ANTHROPIC else "tool_calls")
    assert orjson.loads(whole.tool_calls[0].arguments) == orjson.loads(
        streamed.tool_calls[0].arguments
    )


@pytest.mark.parametrize("d", DIALECTS, ids=lambda d: d.format.value)
async def test_an_error_event_ends_the_stream_as_errored(d: Dialect) -> None:
    w = Watch(make_call(d))
    raw = d.error_event("upstream stream cut", "api_error")
    ev = SSEDecoder().feed(raw)[0]
    assert d.observe_event(w, ev) and w.errored and w.finished
    if d is ANTHROPIC:
        assert ev.event == "error" and orjson.loads(ev.data)["error"]["type"] == "api_error"
    else:
        assert orjson.loads(ev.data)["error"] == {
            "message": "upstream stream cut",
            "type": "api_error",
            "code": "stream_error",
        }


@pytest.mark.parametrize("d", DIALECTS, ids=lambda d: d.format.value)
async def test_a_malformed_event_is_refused_not_read(d: Dialect) -> None:
    from bastion.dialects import MalformedEvent

    bad = SSEEvent(raw=b"", event="content_block_delta" if d is ANTHROPIC else None, data=b"[1")
    with pytest.raises(MalformedEvent):
        d.observe_event(Watch(make_call(d)), bad)


# -- filtering text -------------------------------------------------------------------------


@pytest.mark.parametrize("d", DIALECTS, ids=lambda d: d.format.value)
async def test_filters_rewrite_the_text_of_bodies_and_streams_and_nothing_else(d: Dialect) -> None:
    body = await sim_body(d)
    text, finish = sdk_message(d, orjson.dumps(body))
    out = d.filter_body(body, Upper())
    assert sdk_message(d, orjson.dumps(out)) == (text.upper(), finish)
    assert d.answer_text(orjson.dumps(out)) == text.upper()
    events = await sim_events(d)
    state: dict[str, Any] = {}
    f = Upper()
    filtered = [e for ev in events for e in d.filter_event(ev, f, state)]
    assert sdk_stream_text(d, filtered) == sdk_stream_text(d, events).upper()
    assert "".join(f.seen) == sdk_stream_text(d, events)
    got = [d.delta_text(ev.data) for ev in filtered]
    assert "".join(t for t in got if t) == text.upper()


@pytest.mark.parametrize("d", DIALECTS, ids=lambda d: d.format.value)
async def test_delta_text_round_trips_through_with_delta_text(d: Dialect) -> None:
    events = [ev for ev in await sim_events(d) if d.delta_text(ev.data)]
    assert events
    for ev in events:
        assert d.delta_text(d.with_delta_text(ev.data, "[redacted]")) == "[redacted]"
    assert d.delta_text(b"[DONE]") is None


@pytest.mark.parametrize("d", DIALECTS, ids=lambda d: d.format.value)
async def test_edit_tool_calls_rewrites_the_arguments_a_client_parses(d: Dialect) -> None:
    body = await sim_body(d, tools=True)
    seen: list[tuple[str, Any]] = []

    def edit(name: str, args: Any) -> dict[str, Any] | None:
        seen.append((name, args))
        return {"q": "rewritten"}

    assert d.edit_tool_calls(body, edit)
    assert seen and seen[0][0] == "lookup" and isinstance(seen[0][1], dict)
    c = make_call(d)
    d.observe_body(c, body)
    assert orjson.loads(c.tool_calls[0].arguments) == {"q": "rewritten"}
    assert not d.edit_tool_calls(body, lambda name, args: None)


class Judge:
    """Holds ``lookup`` calls and rewrites their arguments."""

    bound = 1000

    def __init__(self) -> None:
        self.verdicts: list[str] = []

    def holds(self, name: str) -> bool:
        return name == "lookup"

    def may_hold(self, prefix: str) -> bool:
        return "lookup".startswith(prefix)

    def verdict(self, name: str, raw: str | None, given: Any = None) -> str | None:
        self.verdicts.append(name)
        return '{"q": "safe"}'

    def too_large(self, name: str | None) -> None:
        raise OutputBlocked("too large")


@pytest.mark.parametrize("d", DIALECTS, ids=lambda d: d.format.value)
async def test_a_held_tool_call_is_released_whole_with_the_verdicts_arguments(d: Dialect) -> None:
    judge = Judge()
    hold = d.tool_hold(judge)
    events = await sim_events(d, tools=True)
    out: list[SSEEvent] = []
    released_at: int | None = None
    for i, ev in enumerate(events):
        got = hold.event(ev)
        if got and any(b"safe" in e.data for e in got):
            released_at = i
        out += got
    assert judge.verdicts == ["lookup"]
    assert released_at is not None and released_at > 1  # held until the arguments ended
    w = Watch(make_call(d))
    for ev in out:
        d.observe_event(w, ev)
    assert [(t.name, orjson.loads(t.arguments)) for t in w.call.tool_calls] == [
        ("lookup", {"q": "safe"})
    ]


# -- what the gateway answers ---------------------------------------------------------------


@pytest.mark.parametrize("d", DIALECTS, ids=lambda d: d.format.value)
def test_canned_answers_are_what_the_sdks_parse(d: Dialect) -> None:
    assert sdk_message(d, d.canned_body("m", "We are back soon.")) == (
        "We are back soon.",
        "end_turn" if d is ANTHROPIC else "stop",
    )
    for include_usage in (False, True):
        raw = b"".join(d.canned_stream("m", "We are back soon.", include_usage))
        events = SSEDecoder().feed(raw)
        assert sdk_stream_text(d, events) == "We are back soon."
        w = Watch(make_call(d))
        for ev in events:
            d.observe_event(w, ev)
        assert w.finished and w.call.finish_reason in ("end_turn", "stop")


@pytest.mark.parametrize("d", DIALECTS, ids=lambda d: d.format.value)
def test_errors_render_in_the_shape_and_type_the_sdk_knows(d: Dialect) -> None:
    exc = RateLimited("slow down")
    body = orjson.loads(d.render_error(exc))
    assert body == d.error_body(exc)
    if d is ANTHROPIC:
        assert body["type"] == "error" and body["error"]["type"] == d.error_type(exc)
        assert d.error_type(exc) == exc.anthropic_type
    else:
        assert body["error"]["type"] == d.error_type(exc) == exc.openai_type
        assert body["error"]["message"] == "slow down"
    hs = d.request_id_headers("req_up_1")
    assert list(hs.values()) == ["req_up_1"] and d.request_id_headers(None) == {}


# -- reading requests -----------------------------------------------------------------------


def test_system_and_untrusted_texts_are_where_each_format_puts_them() -> None:
    a = {
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": [
            {"role": "user", "content": "old"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [
                {"type": "text", "text": "now"},
                {"type": "tool_result", "tool_use_id": "t", "content": "doc text"},
            ]},
        ],
    }  # fmt: skip
    assert ANTHROPIC.system_text(a) == "Be brief."
    assert [(s.source, s.text, s.where) for s in ANTHROPIC.untrusted_texts(a)] == [
        ("user", "now", "messages[2].content[0].text"),
        ("tool", "doc text", "messages[2].content[1].content"),
    ]
    assert [s.earlier for s in ANTHROPIC.untrusted_texts(a, "all")] == [True, False, False]
    o = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "No lists."},
            {"role": "user", "content": "now"},
            {"role": "tool", "tool_call_id": "t", "content": "doc text"},
        ]
    }
    assert OPENAI.system_text(o) == "Be brief.\nNo lists."
    assert [(s.source, s.text) for s in OPENAI.untrusted_texts(o)] == [
        ("user", "now"),
        ("tool", "doc text"),
    ]
    # an Anthropic body has no tool role: a "tool" turn there is not read as a tool result
    assert [s.text for s in ANTHROPIC.untrusted_texts(o)] == ["now"]


def test_request_fields_each_format_names() -> None:
    assert ANTHROPIC.end_user({"metadata": {"user_id": "u1"}}) == "u1"
    assert OPENAI.end_user({"user": "u2"}) == "u2" and OPENAI.end_user({"user": ""}) is None
    assert ANTHROPIC.end_user({"user": "u2"}) is None
    schema = {"type": "object"}
    rf = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    assert OPENAI.response_schema({"response_format": rf}) == schema
    assert ANTHROPIC.response_schema({"response_format": rf}) is None
    assert OPENAI.wants_usage({"stream_options": {"include_usage": True}})
    assert not OPENAI.wants_usage({}) and not ANTHROPIC.wants_usage(
        {"stream_options": {"include_usage": True}}
    )
    assert ANTHROPIC.limit_fields == ("max_tokens",)
    assert "max_completion_tokens" in OPENAI.limit_fields
    assert ANTHROPIC.prefill and not OPENAI.prefill
    assert OPENAI.usage_on_request and not ANTHROPIC.usage_on_request


@pytest.mark.parametrize("d", DIALECTS, ids=lambda d: d.format.value)
def test_validate_refuses_a_bad_body_naming_the_field(d: Dialect) -> None:
    d.validate({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
    with pytest.raises(InvalidRequest) as err:
        d.validate({"model": "m", "messages": "hi"})
    assert "messages" in err.value.message


def test_prompt_caching_hints_follow_each_providers_rules() -> None:
    long = "x" * 8000
    a = {"system": long, "messages": [{"role": "user", "content": "hi"}]}
    out = ANTHROPIC.prompt_caching(a, "anthropic", stable_messages=0, feature=None, model="claude")
    assert out["system"][-1]["cache_control"] == {"type": "ephemeral"}
    o = {"messages": [{"role": "system", "content": long}, {"role": "user", "content": "hi"}]}
    out = OPENAI.prompt_caching(dict(o), "openai", stable_messages=0, feature="f", model="gpt")
    assert out["prompt_cache_key"].startswith("bastion-")
    assert "prompt_cache_key" not in OPENAI.prompt_caching(
        dict(o), "azure-openai", stable_messages=0, feature="f", model="gpt"
    )


@pytest.mark.parametrize("d", DIALECTS, ids=lambda d: d.format.value)
def test_a_template_goes_before_the_clients_history(d: Dialect) -> None:
    prompt = PromptBuilder().build("You help.", user_content="Question?", docs=[("d1", "A doc.")])
    body: dict[str, Any] = {}
    history = [
        {"role": "system", "content": "client system"},
        {"role": "user", "content": "earlier"},
    ]
    d.place_prompt(body, prompt, history)
    assert "You help." in d.system_text(body)
    assert "client system" not in d.system_text(body) or d is ANTHROPIC
    texts = [s.text for s in d.untrusted_texts(body, "all")]
    assert texts[0] == "earlier" and "Question?" in texts[-1]


@pytest.mark.parametrize("d", DIALECTS, ids=lambda d: d.format.value)
@settings(max_examples=60, deadline=None)
@given(text=st.text(min_size=1, max_size=40))
def test_property_an_identity_filter_changes_no_text_of_any_answer(d: Dialect, text: str) -> None:
    class Same:
        def run(self, t: str) -> str:
            return t

        def flush(self) -> str:
            return ""

    raw = d.canned_body("m", text)
    assert sdk_message(d, orjson.dumps(d.filter_body(orjson.loads(raw), Same())))[0] == text
    events = SSEDecoder().feed(b"".join(d.canned_stream("m", text, True)))
    state: dict[str, Any] = {}
    out = [e for ev in events for e in d.filter_event(ev, Same(), state)]
    assert sdk_stream_text(d, out) == text


def test_upstream_fields_are_what_each_formats_providers_need() -> None:
    body: dict[str, Any] = {"max_tokens": 50, "stream_options": {"x": 1}}
    out = OPENAI.upstream_fields(body, "o3-mini", stream=True)
    assert out == {"max_completion_tokens": 50, "stream_options": {"x": 1, "include_usage": True}}
    assert OPENAI.upstream_fields({"max_tokens": 50}, "gpt-4.1", stream=False) == {"max_tokens": 50}
    assert ANTHROPIC.upstream_fields({"max_tokens": 50}, "o3", stream=True) == {"max_tokens": 50}


def _tool_stream(d: Dialect, text: str, raw_args: str, cuts: list[int]) -> list[SSEEvent]:
    """A text answer then one ``lookup`` call whose arguments arrive in pieces, as each format
    streams it."""
    at = sorted({c % (len(raw_args) + 1) for c in cuts} | {0, len(raw_args)})
    pieces = [raw_args[a:b] for a, b in itertools.pairwise(at)]

    def ev(obj: dict[str, Any], name: str | None = None) -> SSEEvent:
        data = orjson.dumps(obj)
        head = b"event: " + name.encode() + b"\n" if name else b""
        return SSEEvent(raw=head + b"data: " + data + b"\n\n", event=name, data=data)

    if d is ANTHROPIC:
        msg = {"id": "msg_1", "model": "m", "usage": {"input_tokens": 3, "output_tokens": 1}}
        tool = {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {}}
        return [
            ev({"type": "message_start", "message": msg}, "message_start"),
            ev({"index": 0, "content_block": {"type": "text", "text": ""}}, "content_block_start"),
            ev({"index": 0, "delta": {"type": "text_delta", "text": text}}, "content_block_delta"),
            ev({"index": 0}, "content_block_stop"),
            ev({"index": 1, "content_block": tool}, "content_block_start"),
            *[
                ev({"index": 1, "delta": {"type": "input_json_delta", "partial_json": p}},
                   "content_block_delta")
                for p in pieces
            ],
            ev({"index": 1}, "content_block_stop"),
            ev({"delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}},
               "message_delta"),
            ev({"type": "message_stop"}, "message_stop"),
        ]  # fmt: skip
    head = {"id": "chatcmpl-1", "model": "m"}
    first = {"index": 0, "id": "call_1", "type": "function",
             "function": {"name": "lookup", "arguments": ""}}  # fmt: skip
    deltas = [{"content": text}, {"tool_calls": [first]}] + [
        {"tool_calls": [{"index": 0, "function": {"arguments": p}}]} for p in pieces
    ]
    out = [
        ev({**head, "choices": [{"index": 0, "delta": x, "finish_reason": None}]}) for x in deltas
    ]
    out.append(ev({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}))
    return [*out, SSEEvent(raw=b"data: [DONE]\n\n", event=None, data=b"[DONE]")]


class Passing(Judge):
    """Holds ``lookup`` calls and releases them as received."""

    def verdict(self, name: str, raw: str | None, given: Any = None) -> str | None:
        self.verdicts.append(raw or "")
        return None


@pytest.mark.parametrize("d", DIALECTS, ids=lambda d: d.format.value)
@settings(max_examples=40, deadline=None)
@given(
    args=st.dictionaries(st.sampled_from(["q", "n"]), st.text(max_size=12), max_size=2),
    cuts=st.lists(st.integers(0, 60), max_size=5),
    text=st.text(max_size=12),
)
def test_property_a_tool_hold_loses_and_adds_nothing(
    d: Dialect, args: dict[str, Any], cuts: list[int], text: str
) -> None:
    raw = orjson.dumps(args).decode()
    events = _tool_stream(d, text, raw, cuts)
    judge = Passing()
    hold = d.tool_hold(judge)
    out = [e for ev in events for e in hold.event(ev)]
    assert judge.verdicts == [raw]  # judged once, on the whole arguments
    direct, held = Watch(make_call(d)), Watch(make_call(d))
    for ev in events:
        d.observe_event(direct, ev)
    for ev in out:
        d.observe_event(held, ev)
    for w in (direct, held):
        assert w.finished and "".join(w.text) == text
        assert [(t.name, orjson.loads(t.arguments)) for t in w.call.tool_calls] == [
            ("lookup", args)
        ]
    assert held.call.finish_reason == direct.call.finish_reason


# -- trace parts ----------------------------------------------------------------------------


class Parts:
    """A TraceParts builder that records what the dialect named (no scrubbing)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def _part(self, kind: str, **kw: Any) -> dict[str, Any]:
        self.seen.append(kind)
        return {"type": kind, **kw}

    def text(self, text: str) -> dict[str, Any]:
        return self._part("text", content=text)

    def reasoning(self, text: str) -> dict[str, Any]:
        return self._part("reasoning", content=text)

    def tool_call(self, id_: str, name: str, arguments: Any) -> dict[str, Any]:
        return self._part("tool_call", id=id_, name=name, arguments=arguments)

    def tool_result(self, id_: str, response: Any) -> dict[str, Any]:
        return self._part("tool_call_response", id=id_, response=response)

    def media(self, kind: Any) -> dict[str, Any]:
        return self._part(str(kind))


def _conversation(d: Dialect, turns: int) -> dict[str, Any]:
    msgs: list[dict[str, Any]] = []
    for i in range(turns):
        msgs.append({"role": "user", "content": f"q{i}"})
        if d is ANTHROPIC:
            use = {"type": "tool_use", "id": f"t{i}", "name": "lookup", "input": {"q": i}}
            msgs.append({"role": "assistant", "content": [use]})
            res = {"type": "tool_result", "tool_use_id": f"t{i}", "content": f"r{i}"}
            msgs.append({"role": "user", "content": [res]})
        else:
            fn = {"name": "lookup", "arguments": orjson.dumps({"q": i}).decode()}
            msgs.append({"role": "assistant", "tool_calls": [{"id": f"t{i}", "function": fn}]})
            msgs.append({"role": "tool", "tool_call_id": f"t{i}", "content": f"r{i}"})
    if d is ANTHROPIC:
        return {"system": "Be brief.", "messages": msgs}
    return {"messages": [{"role": "system", "content": "Be brief."}, *msgs]}


@pytest.mark.parametrize("d", DIALECTS, ids=lambda d: d.format.value)
def test_trace_messages_come_newest_first_lazily_in_the_conventions_shape(d: Dialect) -> None:
    parts = Parts()
    it = d.trace_messages(_conversation(d, 500), parts)
    newest = [next(it), next(it), next(it)]
    assert len(parts.seen) == 3  # only what was taken was built: older turns cost nothing
    assert newest == [
        {
            "role": "tool",
            "parts": [{"type": "tool_call_response", "id": "t499", "response": "r499"}],
        },
        {
            "role": "assistant",
            "parts": [
                {"type": "tool_call", "id": "t499", "name": "lookup", "arguments": {"q": 499}}
            ],
        },
        {"role": "user", "parts": [{"type": "text", "content": "q499"}]},
    ]
    rest = list(it)
    assert rest[-1]["role"] == ("system" if d is OPENAI else "user")  # the oldest last
    system = d.trace_system(_conversation(d, 1), Parts())
    assert system == ([] if d is OPENAI else [{"type": "text", "content": "Be brief."}])


# -- the models endpoint --------------------------------------------------------------------


@pytest.mark.parametrize("d", DIALECTS, ids=lambda d: d.format.value)
@settings(max_examples=30, deadline=None)
@given(names=st.lists(st.text(min_size=1, max_size=20), max_size=4, unique=True))
def test_models_are_described_in_each_formats_shape(d: Dialect, names: list[str]) -> None:
    listed = d.model_list(names)
    if d is ANTHROPIC:
        # the SDK reads these without validating (its ModelInfo now also wants `lifecycle`)
        page = anthropic.types.ModelInfo
        assert [m["id"] for m in listed["data"]] == names and not listed["has_more"]
        assert listed["first_id"] == (names[0] if names else None)
        assert listed["last_id"] == (names[-1] if names else None)
        for m in [*listed["data"], d.model_object("m")]:
            assert m["type"] == "model" and m["display_name"] == m["id"]
            assert set(m) <= set(page.model_fields)
    else:
        infos = [openai.types.Model.model_validate(m) for m in listed["data"]]
        assert listed["object"] == "list" and [i.id for i in infos] == names
        assert openai.types.Model.model_validate(d.model_object("m")).owned_by == "bastion"

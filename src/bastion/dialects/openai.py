"""OpenAI Chat Completions: ``choices`` with a ``message`` (or a ``delta`` in ``chat.completion.chunk``
events ending in ``data: [DONE]``), ``tool_calls`` whose arguments are JSON text, ``usage``
with ``prompt_tokens``/``completion_tokens`` (in a stream only when asked by
``stream_options.include_usage``), and errors as ``{"error": {message, type, param, code}}``.

The Responses API (``responses/``) is a translation in front of this dialect, not a dialect of
its own: it is turned into a Chat Completions call, which every guard sees as this format.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from ..call import ToolCallOut, Usage
from ..cost import caching
from ..errors import BastionError
from ..providers.adapters import usage_from_openai
from ..providers.base import Format
from ..providers.sse import SSEEvent, encode_event
from ..providers.translate import Usage as NeutralUsage
from ..providers.translate._stream_splice import ClientView, StreamSplicer
from ..schema import validate_openai
from .base import (
    Dialect,
    EditArgs,
    HoldJudge,
    MalformedEvent,
    Scope,
    Slot,
    StreamView,
    TextRun,
    TraceParts,
    WatchState,
    Wire,
    as_text,
    content_slots,
    joined,
    last_assistant,
    loads_object,
    maybe_object,
)

if TYPE_CHECKING:
    from ..call import Call

__all__ = ["OPENAI", "OpenAIDialect"]

_ENVELOPE_SKIP = frozenset({"choices", "usage", "obfuscation"})
# OpenAI reasoning models refuse max_tokens and take only max_completion_tokens
_COMPLETION_TOKENS_ONLY = ("o1", "o3", "o4", "gpt-5")


def _event(obj: dict[str, Any]) -> SSEEvent:
    data = orjson.dumps(obj)
    return SSEEvent(raw=encode_event(data), event=None, data=data)


class OpenAIDialect(Dialect):
    format: ClassVar[Format] = Format.OPENAI
    prefill: ClassVar[bool] = False  # a trailing assistant turn is history, not a prefill
    usage_on_request: ClassVar[bool] = True
    limit_fields: ClassVar[tuple[str, ...]] = ("max_tokens", "max_completion_tokens")

    # -- whole answers ----------------------------------------------------------------------

    def observe_body(self, call: Call, obj: dict[str, Any]) -> Usage:
        _envelope(call, obj)
        u = obj.get("usage")
        own = Usage()
        if isinstance(u, dict):
            usage_from_openai(u, own)
            usage_from_openai(u, call.usage)
        choices = obj.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            msg = choice.get("message") if isinstance(choice, dict) else None
            if isinstance(msg, dict) and isinstance(msg.get("content"), str):
                call.output_text.append(msg["content"])
        first = choices[0] if isinstance(choices, list) and choices else None
        if not isinstance(first, dict):
            return own
        if isinstance(fr := first.get("finish_reason"), str):
            call.finish_reason = fr  # the first choice's, as a stream reports it
        msg = first.get("message")
        for tc in (msg.get("tool_calls") if isinstance(msg, dict) else None) or ():
            fn = tc.get("function") if isinstance(tc, dict) else None
            if isinstance(fn, dict):
                tool = ToolCallOut(as_text(tc.get("id")), as_text(fn.get("name")))
                tool.arguments = as_text(fn.get("arguments"))
                call.tool_calls.append(tool)
        return own

    def filter_body(self, obj: dict[str, Any], text: TextRun) -> dict[str, Any]:
        choices = []
        for ch in obj.get("choices") or ():
            msg = ch.get("message") if isinstance(ch, dict) else None
            if isinstance(msg, dict) and isinstance(msg.get("content"), str):
                ch = {
                    **ch,
                    "message": {**msg, "content": text.run(msg["content"]) + text.flush()},
                }
            choices.append(ch)
        return {**obj, "choices": choices}

    def edit_tool_calls(self, obj: dict[str, Any], edit: EditArgs) -> bool:
        changed = False
        for choice in obj.get("choices") or ():
            msg = choice.get("message") if isinstance(choice, dict) else None
            for tc in (msg or {}).get("tool_calls") or ():
                fn = tc.get("function") if isinstance(tc, dict) else None
                if not isinstance(fn, dict):
                    continue
                try:
                    args = orjson.loads(fn.get("arguments") or "{}")
                except orjson.JSONDecodeError:
                    args = None
                new = edit(str(fn.get("name")), args if isinstance(args, dict) else None)
                if new is not None:
                    fn["arguments"] = orjson.dumps(new).decode()
                    changed = True
        return changed

    def answer_text(self, raw: bytes) -> str:
        try:
            obj = orjson.loads(raw)
            content = obj["choices"][0]["message"].get("content")
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
            return ""
        return content if isinstance(content, str) else ""

    # -- streams ----------------------------------------------------------------------------

    def observe_event(self, w: WatchState, ev: SSEEvent) -> bool:
        data = ev.data
        if data.strip() == b"[DONE]":
            w.finished = True
            return True
        obj = maybe_object(data)
        if obj is None:
            raise MalformedEvent("chunk is not a JSON object")
        if obj.get("error"):
            w.errored = True
            w.finished = True
            return True
        _envelope(w.call, obj)
        u = obj.get("usage")
        if isinstance(u, dict):
            usage_from_openai(u, w.call.usage)
            w.usage_seen = True
        choices = obj.get("choices")
        return _choices(w, choices) if isinstance(choices, list) else False

    def ended_cleanly(self, w: WatchState) -> bool:
        # Bastion always asks OpenAI-format upstreams for usage, so a finish_reason and the
        # usage chunk are the whole answer; some compatible servers close instead of [DONE]
        return w.final and w.usage_seen

    def filter_event(self, ev: SSEEvent, text: TextRun, state: dict[str, Any]) -> list[SSEEvent]:
        if ev.data.strip() == b"[DONE]":
            return [ev]
        obj = loads_object(ev.data)
        choices = obj.get("choices") or []
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return [ev]
        choice = choices[0]
        delta = choice.get("delta") or {}
        if not isinstance(delta, dict):
            raise MalformedEvent("a choice whose delta is not an object")
        raw_text = delta.get("content")
        got = raw_text if isinstance(raw_text, str) else ""
        finishing = choice.get("finish_reason") is not None
        if not isinstance(raw_text, str) and not finishing:
            return [ev]
        new = text.run(got) if got else ""
        if finishing:
            new += text.flush()
        if new == got:
            return [ev]
        if not new and not finishing and set(delta) <= {"content"}:
            return []  # all held back for now
        choice = {**choice, "delta": {**delta, "content": new}}
        return [_event({**obj, "choices": [choice, *choices[1:]]})]

    def delta_text(self, data: bytes) -> str | None:
        obj = maybe_object(data)
        if obj is None:
            return None
        choices = obj.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            d = choices[0].get("delta")
            c = d.get("content") if isinstance(d, dict) else None
            return c if isinstance(c, str) else None
        return None

    def with_delta_text(self, data: bytes, text: str) -> bytes:
        obj = orjson.loads(data)
        obj["choices"][0]["delta"]["content"] = text
        return orjson.dumps(obj)

    def tool_hold(self, judge: HoldJudge) -> _OpenAIHold:
        return _OpenAIHold(judge)

    # -- requests sent ----------------------------------------------------------------------

    def prompt_caching(
        self,
        body: dict[str, Any],
        provider_kind: str,
        *,
        stable_messages: int,
        feature: str | None,
        model: str,
    ) -> dict[str, Any]:
        # OpenAI caches by prefix on its own; a key routes calls sharing one to a warm cache
        if provider_kind in ("openai", "sim") and "prompt_cache_key" not in body:
            body["prompt_cache_key"] = caching.openai_cache_key(body, feature)
        return body

    def upstream_fields(self, body: dict[str, Any], model: str, *, stream: bool) -> dict[str, Any]:
        if "max_tokens" in body and model.startswith(_COMPLETION_TOKENS_ONLY):
            limit = body.pop("max_tokens")
            body.setdefault("max_completion_tokens", limit)
        if stream:  # Bastion always asks for usage: it settles every attempt on it
            so = body.get("stream_options")
            body["stream_options"] = {**(so if isinstance(so, dict) else {}), "include_usage": True}
        return body

    # -- requests ---------------------------------------------------------------------------

    def validate(self, body: dict[str, Any]) -> None:
        validate_openai(body)

    def end_user(self, body: dict[str, Any]) -> str | None:
        uid = body.get("user")
        return uid if isinstance(uid, str) and uid else None

    def system_text(self, body: dict[str, Any]) -> str:
        parts = [
            joined(m.get("content"))
            for m in body.get("messages") or ()
            if isinstance(m, dict) and m.get("role") in ("system", "developer")
        ]
        return "\n".join(p for p in parts if p)

    def untrusted_texts(self, body: dict[str, Any], scope: Scope = "last") -> Iterator[Slot]:
        messages = body.get("messages")
        if not isinstance(messages, list):
            return
        last = last_assistant(messages)
        for i in range(last if scope == "last" else 0, len(messages)):
            m = messages[i]
            if not isinstance(m, dict):
                continue
            role = m.get("role")
            if role == "user":
                yield from content_slots(
                    ("messages", i, "content"), m.get("content"), "user", i < last
                )
            elif role in ("tool", "function"):
                yield from content_slots(
                    ("messages", i, "content"), m.get("content"), "tool", i < last
                )

    def response_schema(self, body: dict[str, Any]) -> dict[str, Any] | None:
        rf = body.get("response_format")
        if not isinstance(rf, dict) or rf.get("type") != "json_schema":
            return None
        js = rf.get("json_schema")
        schema = js.get("schema") if isinstance(js, dict) else None
        return schema if isinstance(schema, dict) else None

    def wants_usage(self, body: dict[str, Any]) -> bool:
        so = body.get("stream_options")
        return isinstance(so, dict) and so.get("include_usage") is True

    def place_prompt(
        self, body: dict[str, Any], rendered: Any, history: list[dict[str, Any]]
    ) -> None:
        messages = rendered.to_openai()["messages"]
        history = [m for m in history if m.get("role") not in ("system", "developer")]
        body["messages"] = messages[:1] + history + messages[1:]

    def trace_system(self, body: dict[str, Any], parts: TraceParts) -> list[dict[str, Any]]:
        return []  # system and developer turns are messages here

    def trace_messages(self, body: dict[str, Any], parts: TraceParts) -> Iterator[dict[str, Any]]:
        history = body.get("messages")
        if not isinstance(history, list):
            return
        for m in reversed(history):
            if isinstance(m, Mapping) and (msg := _trace_message(m, parts)) is not None:
                yield msg

    # -- answers ----------------------------------------------------------------------------

    def error_body(self, exc: BastionError) -> dict[str, Any]:
        err: dict[str, Any] = {
            "message": exc.message,
            "type": exc.openai_type,
            "param": exc.param,
            "code": exc.openai_code,
        }
        err.update(exc.extra())
        return {"error": err}

    def error_type(self, exc: BastionError) -> str:
        return exc.openai_type

    def error_event(self, message: str, type_: str = "api_error") -> bytes:
        return encode_event(
            orjson.dumps({"error": {"message": message, "type": type_, "code": "stream_error"}})
        )

    def request_id_headers(self, rid: str | None) -> dict[str, str]:
        # x-request-id is Bastion's own (the record's key): the provider's rides beside it
        return {} if rid is None else {"x-upstream-request-id": rid}

    def model_object(self, model: str) -> dict[str, Any]:
        return {"id": model, "object": "model", "created": 0, "owned_by": "bastion"}

    def model_list(self, models: Sequence[str]) -> dict[str, Any]:
        return {"object": "list", "data": [self.model_object(n) for n in models]}

    def canned_body(self, model: str, text: str) -> bytes:
        return orjson.dumps(
            {
                "id": "chatcmpl-degraded-" + uuid.uuid4().hex[:16],
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                        "logprobs": None,
                    }
                ],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            }
        )

    def canned_stream(self, model: str, text: str, include_usage: bool) -> list[bytes]:
        cid = "chatcmpl-degraded-" + uuid.uuid4().hex[:16]
        base = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }
        first = {"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": None}
        chunks = [
            {**base, "choices": [first]},
            {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        ]
        if include_usage:
            chunks.append(
                {
                    **base,
                    "choices": [],
                    "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                }
            )
        return [encode_event(orjson.dumps(c)) for c in chunks] + [encode_event(b"[DONE]")]

    # -- carrying a cut stream on -----------------------------------------------------------

    def stream_view(self) -> ClientView:
        return ClientView(self.format)

    def splicer(self, source: Wire, view: StreamView, *, base: Usage, **kw: Any) -> StreamSplicer:
        return _splicer(source, view, base, kw)


def _splicer(source: Wire, view: StreamView, base: Usage, kw: dict[str, Any]) -> StreamSplicer:
    neutral = NeutralUsage(
        base.input_tokens, base.output_tokens, base.cache_read_tokens, base.cache_write_tokens
    )
    assert isinstance(view, ClientView)  # the view a dialect's stream_view gave
    return StreamSplicer(source.format, view, base=neutral, **kw)


def _envelope(call: Call, obj: dict[str, Any]) -> None:
    """The served model and the provider's id of its answer."""
    model = obj.get("model")
    if isinstance(model, str):
        call.served_model = model
    rid = obj.get("id")
    if isinstance(rid, str) and rid:
        call.response_id = rid


def _choices(w: WatchState, choices: list[Any]) -> bool:
    content = False
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        if choice.get("index", 0) != 0:
            w.text_only = False  # n > 1: several answers cannot be carried on as one
        delta = choice.get("delta")
        if isinstance(delta, dict):
            text = delta.get("content")
            if isinstance(text, str) and text:
                w.text.append(text)
                content = True
            if delta.get("tool_calls") or delta.get("refusal"):
                w.text_only = False
                content = True
                if choice.get("index", 0) == 0:
                    _tool_deltas(w, delta.get("tool_calls"))
        fr = choice.get("finish_reason")
        if isinstance(fr, str):
            w.stop_reason = w.call.finish_reason = fr
            w.final = True
            content = True
    return content


def _tool_deltas(w: WatchState, deltas: Any) -> None:
    """OpenAI streams a tool call as pieces by index: the id and name first, then arguments."""
    if not isinstance(deltas, list):
        return
    for d in deltas:
        if not isinstance(d, dict):
            continue
        fn = d.get("function")
        if not isinstance(fn, dict):
            fn = {}
        tool = w.tools.get(d.get("index", 0))
        if tool is None:
            tool = ToolCallOut(as_text(d.get("id")), as_text(fn.get("name")))
            w.tools[d.get("index", 0)] = tool
            w.call.tool_calls.append(tool)
        if isinstance(args := fn.get("arguments"), str):
            tool.arguments += args


# -- holding streamed tool calls ------------------------------------------------------------


@dataclass(slots=True)
class _ToolCall:
    """A held tool call: its deltas as received and what they add up to."""

    index: Any
    deltas: list[dict[str, Any]] = field(default_factory=list)
    id: str | None = None
    name: str = ""
    arguments: str = ""


@dataclass(slots=True)
class _Choice:
    """One choice with held tool calls (every later tool-call delta waits behind them)."""

    calls: dict[Any, _ToolCall] = field(default_factory=dict)
    size: int = 0


class _OpenAIHold:
    """Tool-call deltas held by choice and index: the OpenAI SDK places tool calls by
    ``index``, so later tool-call deltas of the same choice wait behind a held one; a call's
    arguments are complete at its choice's ``finish_reason`` or at ``[DONE]``."""

    __slots__ = ("_choices", "_envelope", "_judge", "_passed")

    def __init__(self, judge: HoldJudge) -> None:
        self._judge = judge
        self._choices: dict[Any, _Choice] = {}
        self._passed: set[tuple[Any, Any]] = set()  # (choice, index) the client has begun to see
        self._envelope: dict[str, Any] = {}

    def event(self, ev: SSEEvent) -> list[SSEEvent]:
        if ev.data.strip() == b"[DONE]":
            out: list[SSEEvent] = []
            for ci in list(self._choices):
                out += self._release_choice(ci)
            return [*out, ev]
        obj = loads_object(ev.data)
        choices = obj.get("choices")
        if not isinstance(choices, list) or not choices:
            return [ev]
        self._envelope = {k: v for k, v in obj.items() if k not in _ENVELOPE_SKIP}
        released: list[SSEEvent] = []
        kept: list[Any] = []
        changed = False
        for ch in choices:
            if not isinstance(ch, dict):
                kept.append(ch)
                continue
            ci = ch.get("index", 0)
            delta = ch.get("delta")
            tcs = delta.get("tool_calls") if isinstance(delta, dict) else None
            stripped = False
            if isinstance(delta, dict) and isinstance(tcs, list) and tcs:
                passed = [tc for tc in tcs if not self._hold(ci, tc)]
                if len(passed) != len(tcs):
                    stripped = changed = True
                    delta = {k: v for k, v in delta.items() if k != "tool_calls"}
                    if passed:
                        delta["tool_calls"] = passed
                    ch = {**ch, "delta": delta}
                choice = self._choices.get(ci)
                if choice is not None and choice.size > self._judge.bound:
                    self._oversized(choice)  # flag mode: released as is, the rest streams
                    released += self._release_choice(ci, check=False)
            if ch.get("finish_reason") is not None and ci in self._choices:
                released += self._release_choice(ci)
            if not stripped or ch.get("delta") or ch.get("finish_reason") is not None:
                kept.append(ch)
        if not changed:
            return [*released, ev]
        if not kept and "usage" not in obj:
            return released
        return [*released, _event({**obj, "choices": kept})]

    def _hold(self, ci: Any, tc: Any) -> bool:
        """Take one tool-call delta into the hold, or say it may pass (False).

        A call the client has begun to see passes; a new one is held when its name may yet
        be a held tool's (names can arrive in pieces), or behind a call already held.
        """
        idx = tc.get("index") if isinstance(tc, dict) else None
        if not isinstance(idx, int) or not isinstance(ci, int):
            raise MalformedEvent("a tool-call delta without an integer index")  # skipped whole
        if (ci, idx) in self._passed:
            return False
        fn = tc.get("function")
        fn = fn if isinstance(fn, dict) else {}
        choice = self._choices.get(ci)
        held = choice.calls.get(idx) if choice is not None else None
        if choice is None or held is None:
            got = fn.get("name")
            name = got if isinstance(got, str) else ""
            if choice is None and not self._judge.may_hold(name):
                self._passed.add((ci, idx))
                return False
            if choice is None:
                choice = self._choices[ci] = _Choice()
            held = choice.calls[idx] = _ToolCall(idx)
        held.deltas.append(tc)
        if isinstance(tc.get("id"), str) and tc["id"]:
            held.id = tc["id"]
        if isinstance(fn.get("name"), str):
            held.name += fn["name"]
        if isinstance(fn.get("arguments"), str):
            held.arguments += fn["arguments"]
            choice.size += len(fn["arguments"])
        return True

    def _oversized(self, choice: _Choice) -> None:
        names = [c.name for c in choice.calls.values() if self._judge.holds(c.name)]
        self._judge.too_large(names[0] if names else None)

    def _release_choice(self, ci: Any, *, check: bool = True) -> list[SSEEvent]:
        """Every held call of a choice, in the order they began; a rejected one raises."""
        choice = self._choices.pop(ci)
        out: list[SSEEvent] = []
        for held in choice.calls.values():
            self._passed.add((ci, held.index))
            replaced = None
            if check and self._judge.holds(held.name):
                replaced = self._judge.verdict(held.name, held.arguments)
            if replaced is None:
                out += [self._chunk(ci, [d]) for d in held.deltas]
                continue
            fn = {"name": held.name, "arguments": replaced}
            merged: dict[str, Any] = {"index": held.index, "type": "function", "function": fn}
            if held.id is not None:
                merged["id"] = held.id
            out.append(self._chunk(ci, [merged]))
        return out

    def _chunk(self, ci: Any, tool_calls: list[dict[str, Any]]) -> SSEEvent:
        choice = {"index": ci, "delta": {"tool_calls": tool_calls}, "finish_reason": None}
        return _event({**self._envelope, "choices": [choice]})


def _trace_message(m: Mapping[str, Any], parts: TraceParts) -> dict[str, Any] | None:
    """One message as the conventions' message (tool results in tool messages)."""
    role = m.get("role")
    if not isinstance(role, str):
        return None
    content = m.get("content")
    if role in ("tool", "function"):
        text = content if isinstance(content, str) else joined(content)
        call_id = m.get("tool_call_id") if role == "tool" else m.get("name")
        return {"role": "tool", "parts": [parts.tool_result(as_text(call_id), text)]}
    out: list[dict[str, Any]] = []
    if isinstance(content, str):
        if content:
            out.append(parts.text(content))
    elif isinstance(content, list):
        for p in content:
            if not isinstance(p, Mapping):
                continue
            if p.get("type") == "text" and isinstance(p.get("text"), str):
                out.append(parts.text(p["text"]))
            else:
                out.append(parts.media(p.get("type")))
    for tc in m.get("tool_calls") or ():
        fn = tc.get("function") if isinstance(tc, Mapping) else None
        if isinstance(fn, Mapping):
            args = fn.get("arguments")
            out.append(
                parts.tool_call(as_text(tc.get("id")), as_text(fn.get("name")), _json_or_raw(args))
            )
    return {"role": "system" if role == "developer" else role, "parts": out}


def _json_or_raw(raw: Any) -> Any:
    """Tool arguments as an object where the model sent parseable JSON text."""
    if isinstance(raw, str):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return raw
    return raw


OPENAI = OpenAIDialect()

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
    Parsed,
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
from .openai_stream import OpenAIHold, chunk_event, observe_choices

if TYPE_CHECKING:
    from ..call import Call

__all__ = ["OPENAI", "OpenAIDialect"]

# OpenAI reasoning models refuse max_tokens and take only max_completion_tokens
_COMPLETION_TOKENS_ONLY = ("o1", "o3", "o4", "gpt-5")


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

    def observe_event(self, w: WatchState, ev: SSEEvent, obj: dict[str, Any] | None = None) -> bool:
        data = ev.data
        if data.strip() == b"[DONE]":
            w.finished = True
            return True
        if obj is None:
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
        return observe_choices(w, choices) if isinstance(choices, list) else False

    def ended_cleanly(self, w: WatchState) -> bool:
        # Bastion always asks OpenAI-format upstreams for usage, so a finish_reason and the
        # usage chunk are the whole answer; some compatible servers close instead of [DONE]
        return w.final and w.usage_seen

    def filter_parsed(
        self, ev: SSEEvent, obj: dict[str, Any] | None, text: TextRun, state: dict[str, Any]
    ) -> list[Parsed]:
        if ev.data.strip() == b"[DONE]":
            return [(ev, obj)]
        if obj is None:
            obj = loads_object(ev.data)
        choices = obj.get("choices") or []
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return [(ev, obj)]
        choice = choices[0]
        delta = choice.get("delta") or {}
        if not isinstance(delta, dict):
            raise MalformedEvent("a choice whose delta is not an object")
        raw_text = delta.get("content")
        got = raw_text if isinstance(raw_text, str) else ""
        finishing = choice.get("finish_reason") is not None
        if not isinstance(raw_text, str) and not finishing:
            return [(ev, obj)]
        new = text.run(got) if got else ""
        if finishing:
            new += text.flush()
        if new == got:
            return [(ev, obj)]
        if not new and not finishing and set(delta) <= {"content"}:
            return []  # all held back for now
        choice = {**choice, "delta": {**delta, "content": new}}
        built = {**obj, "choices": [choice, *choices[1:]]}
        return [(chunk_event(built), built)]

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

    def tool_hold(self, judge: HoldJudge) -> OpenAIHold:
        return OpenAIHold(judge)

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

"""Anthropic Messages: a top-level ``system``, ``content`` blocks (``text``, ``tool_use`` with an
``input`` object, ``tool_result``), ``usage`` with ``input_tokens``/``output_tokens``, and a
stream of named events (``message_start``, ``content_block_start``/``_delta``/``_stop``,
``message_delta``, ``message_stop``, ``error``); errors as ``{"type": "error", "error": ...}``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from ..call import ToolCallOut, Usage
from ..cost import caching
from ..errors import BastionError
from ..providers.adapters import usage_from_anthropic
from ..providers.base import Format
from ..providers.sse import SSEEvent, encode_event
from ..providers.translate._stream_splice import ClientView, StreamSplicer
from ..schema import validate_anthropic
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
from .openai import _splicer

if TYPE_CHECKING:
    from ..call import Call

__all__ = ["ANTHROPIC", "AnthropicDialect"]


def _event(name: str, obj: dict[str, Any]) -> SSEEvent:
    data = orjson.dumps(obj)
    return SSEEvent(raw=encode_event(data, name), event=name, data=data)


def _text_delta(index: int, text: str) -> Parsed:
    """A text delta event, with the object it was built from (its data, already parsed)."""
    obj = {
        "type": "content_block_delta",
        "index": index,
        "delta": {"type": "text_delta", "text": text},
    }
    return _event("content_block_delta", obj), obj


class AnthropicDialect(Dialect):
    format: ClassVar[Format] = Format.ANTHROPIC
    prefill: ClassVar[bool] = True
    usage_on_request: ClassVar[bool] = False
    limit_fields: ClassVar[tuple[str, ...]] = ("max_tokens",)

    # -- whole answers ----------------------------------------------------------------------

    def observe_body(self, call: Call, obj: dict[str, Any]) -> Usage:
        model = obj.get("model")
        if isinstance(model, str):
            call.served_model = model
        rid = obj.get("id")
        if isinstance(rid, str) and rid:
            call.response_id = rid
        u = obj.get("usage")
        own = Usage()
        if isinstance(u, dict):
            usage_from_anthropic(u, own)
            usage_from_anthropic(u, call.usage)
        for block in obj.get("content") or ():
            if not isinstance(block, dict):
                continue
            if isinstance(block.get("text"), str):
                call.output_text.append(block["text"])
            elif block.get("type") == "tool_use":
                args = orjson.dumps(block.get("input")).decode()
                tool = ToolCallOut(as_text(block.get("id")), as_text(block.get("name")), args)
                call.tool_calls.append(tool)
        if isinstance(stop := obj.get("stop_reason"), str):
            call.finish_reason = stop
        return own

    def filter_body(self, obj: dict[str, Any], text: TextRun) -> dict[str, Any]:
        content = []
        for block in obj.get("content") or ():
            if isinstance(block, dict) and block.get("type") == "text":
                block = {**block, "text": text.run(block.get("text", "")) + text.flush()}
            content.append(block)
        return {**obj, "content": content}

    def edit_tool_calls(self, obj: dict[str, Any], edit: EditArgs) -> bool:
        changed = False
        for block in obj.get("content") or ():
            if not isinstance(block, dict) or block.get("type") != "tool_use":
                continue
            inp = block.get("input")
            if not isinstance(inp, dict):
                continue  # the Messages API gives tool input as an object
            new = edit(str(block.get("name")), inp)
            if new is not None:
                block["input"] = new
                changed = True
        return changed

    def answer_text(self, raw: bytes) -> str:
        obj = maybe_object(raw)
        content = obj.get("content") if obj is not None else None
        if not isinstance(content, list):
            return ""
        return "".join(
            b["text"]
            for b in content
            if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        )

    # -- streams ----------------------------------------------------------------------------

    def observe_event(self, w: WatchState, ev: SSEEvent, obj: dict[str, Any] | None = None) -> bool:
        name = ev.event
        if obj is None:
            obj = maybe_object(ev.data)
        if obj is None:
            raise MalformedEvent(f"{name or 'unnamed'} event is not a JSON object")
        call = w.call
        if name == "content_block_delta":
            delta = obj.get("delta")
            if isinstance(delta, dict):
                text = delta.get("text")
                if isinstance(text, str):
                    w.text.append(text)
                elif isinstance(part := delta.get("partial_json"), str) and (
                    tool := w.tools.get(obj.get("index", 0))
                ):
                    tool.arguments += part
            return True
        if name == "content_block_start":
            block = obj.get("content_block")
            is_tool = isinstance(block, dict) and block.get("type") != "text"
            if is_tool or obj.get("index", 0) != 0:
                w.text_only = False
            if isinstance(block, dict) and block.get("type") == "tool_use":
                tool = ToolCallOut(as_text(block.get("id")), as_text(block.get("name")))
                w.tools[obj.get("index", 0)] = tool
                call.tool_calls.append(tool)
            return is_tool
        if name == "message_start":
            msg = obj.get("message")
            if isinstance(msg, dict):
                model = msg.get("model")
                if isinstance(model, str):
                    call.served_model = model
                rid = msg.get("id")
                if isinstance(rid, str) and rid:
                    call.response_id = rid
                u = msg.get("usage")
                if isinstance(u, dict):
                    usage_from_anthropic(u, call.usage)
            return False
        if name == "message_delta":
            u = obj.get("usage")
            if isinstance(u, dict):
                usage_from_anthropic(u, call.usage)
            d = obj.get("delta")
            if isinstance(d, dict) and isinstance(d.get("stop_reason"), str):
                w.stop_reason = call.finish_reason = d["stop_reason"]
            return True
        if name == "message_stop":
            w.finished = True
            return True
        if name == "error":
            w.errored = True
            w.finished = True
            return True
        return False

    def filter_parsed(
        self, ev: SSEEvent, obj: dict[str, Any] | None, text: TextRun, state: dict[str, Any]
    ) -> list[Parsed]:
        if ev.event == "content_block_delta":
            if obj is None:
                obj = loads_object(ev.data)
            delta = obj.get("delta")
            if not isinstance(delta, dict) or delta.get("type") != "text_delta":
                return [(ev, obj)]
            got = delta.get("text")
            index = obj.get("index", 0)
            if not isinstance(got, str) or not isinstance(index, int):
                raise MalformedEvent("a text delta without text or index")
            state["index"] = index
            got = text.run(got)
            return [_text_delta(index, got)] if got else []
        if ev.event == "content_block_stop" and "index" in state:
            if obj is None:
                obj = loads_object(ev.data)
            index = obj.get("index", 0)
            if not isinstance(index, int):
                raise MalformedEvent("a block stop without index")
            tail = text.flush()
            state.pop("index")
            return ([_text_delta(index, tail)] if tail else []) + [(ev, obj)]
        return [(ev, obj)]

    def delta_text(self, data: bytes) -> str | None:
        obj = maybe_object(data)
        if obj is None:
            return None
        d = obj.get("delta")
        return d.get("text") if isinstance(d, dict) and isinstance(d.get("text"), str) else None

    def with_delta_text(self, data: bytes, text: str) -> bytes:
        obj = orjson.loads(data)
        obj["delta"]["text"] = text
        return orjson.dumps(obj)

    def tool_hold(self, judge: HoldJudge) -> _AnthropicHold:
        return _AnthropicHold(judge)

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
        caching.add_anthropic_breakpoints(body, stable_messages, model)
        return body

    # -- requests ---------------------------------------------------------------------------

    def validate(self, body: dict[str, Any]) -> None:
        validate_anthropic(body)

    def end_user(self, body: dict[str, Any]) -> str | None:
        md = body.get("metadata")
        uid = md.get("user_id") if isinstance(md, dict) else None
        return uid if isinstance(uid, str) and uid else None

    def system_text(self, body: dict[str, Any]) -> str:
        return joined(body.get("system"))

    def untrusted_texts(self, body: dict[str, Any], scope: Scope = "last") -> Iterator[Slot]:
        messages = body.get("messages")
        if not isinstance(messages, list):
            return
        last = last_assistant(messages)
        for i in range(last if scope == "last" else 0, len(messages)):
            m = messages[i]
            if isinstance(m, dict) and m.get("role") == "user":  # tool results are user turns
                yield from content_slots(
                    ("messages", i, "content"), m.get("content"), "user", i < last
                )

    def response_schema(self, body: dict[str, Any]) -> dict[str, Any] | None:
        return None  # the Messages API has no response schema field

    def wants_usage(self, body: dict[str, Any]) -> bool:
        return False  # usage is always in message_start and message_delta

    def place_prompt(
        self, body: dict[str, Any], rendered: Any, history: list[dict[str, Any]]
    ) -> None:
        out = rendered.to_anthropic(cache_docs=True)
        body["system"] = out["system"]
        body["messages"] = history + out["messages"]

    def trace_system(self, body: dict[str, Any], parts: TraceParts) -> list[dict[str, Any]]:
        system = body.get("system")
        if isinstance(system, str):
            return [parts.text(system)] if system else []
        if isinstance(system, list):
            return [
                parts.text(b["text"])
                for b in system
                if isinstance(b, Mapping) and isinstance(b.get("text"), str)
            ]
        return []

    def trace_messages(self, body: dict[str, Any], parts: TraceParts) -> Iterator[dict[str, Any]]:
        history = body.get("messages")
        if not isinstance(history, list):
            return
        for m in reversed(history):
            if not isinstance(m, Mapping) or not isinstance(role := m.get("role"), str):
                continue
            content = m.get("content")
            blocks: Iterable[Any] = (
                [{"type": "text", "text": content}] if isinstance(content, str) else content or ()
            )
            if not isinstance(blocks, list | tuple):
                continue
            out = [_trace_block(b, parts) for b in blocks if isinstance(b, Mapping)]
            if out and all(p["type"] == "tool_call_response" for p in out):
                role = "tool"  # the conventions carry tool results in tool messages
            yield {"role": role, "parts": out}

    # -- answers ----------------------------------------------------------------------------

    def error_body(self, exc: BastionError) -> dict[str, Any]:
        err: dict[str, Any] = {"type": exc.anthropic_type, "message": exc.message}
        err.update(exc.extra())
        return {"type": "error", "error": err}

    def error_type(self, exc: BastionError) -> str:
        return exc.anthropic_type

    def error_event(self, message: str, type_: str = "api_error") -> bytes:
        body = {"type": "error", "error": {"type": type_, "message": message}}
        return encode_event(orjson.dumps(body), "error")

    def request_id_headers(self, rid: str | None) -> dict[str, str]:
        return {} if rid is None else {"request-id": rid}

    def model_object(self, model: str) -> dict[str, Any]:
        # the required fields of Anthropic's ModelInfo: the SDK's model refuses one without
        # ``lifecycle`` when validated strictly; a gateway alias is always usable, so "active"
        return {
            "type": "model",
            "id": model,
            "display_name": model,
            "created_at": "2025-01-01T00:00:00Z",
            "lifecycle": "active",
        }

    def model_list(self, models: Sequence[str]) -> dict[str, Any]:
        return {
            "data": [self.model_object(n) for n in models],
            "has_more": False,
            "first_id": models[0] if models else None,
            "last_id": models[-1] if models else None,
        }

    def canned_body(self, model: str, text: str) -> bytes:
        return orjson.dumps(
            {
                "id": "msg_degraded_" + uuid.uuid4().hex[:16],
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }
        )

    def canned_stream(self, model: str, text: str, include_usage: bool) -> list[bytes]:
        start = {
            "type": "message_start",
            "message": {
                "id": "msg_degraded_" + uuid.uuid4().hex[:16],
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            },
        }
        block = {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "text", "text": ""},
        }
        delta = {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": text},
        }
        end = {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 0},
        }
        events = [
            ("message_start", start),
            ("content_block_start", block),
            ("content_block_delta", delta),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", end),
            ("message_stop", {"type": "message_stop"}),
        ]
        return [encode_event(orjson.dumps(d), name) for name, d in events]

    # -- carrying a cut stream on -----------------------------------------------------------

    def stream_view(self) -> ClientView:
        return ClientView(self.format)

    def splicer(self, source: Wire, view: StreamView, *, base: Usage, **kw: Any) -> StreamSplicer:
        return _splicer(source, view, base, kw)


def _trace_block(b: Mapping[str, Any], parts: TraceParts) -> dict[str, Any]:
    """One content block as a trace part."""
    kind = b.get("type")
    if kind == "text" and isinstance(b.get("text"), str):
        return parts.text(b["text"])
    if kind == "tool_use":
        return parts.tool_call(as_text(b.get("id")), as_text(b.get("name")), b.get("input"))
    if kind == "tool_result":
        result = b.get("content")
        if isinstance(result, list):
            result = "\n".join(
                x["text"]
                for x in result
                if isinstance(x, Mapping) and isinstance(x.get("text"), str)
            )
        return parts.tool_result(as_text(b.get("tool_use_id")), result)
    if kind == "thinking" and isinstance(b.get("thinking"), str):
        return parts.reasoning(b["thinking"])
    return parts.media(kind)


# -- holding streamed tool calls ------------------------------------------------------------


@dataclass(slots=True)
class _Block:
    """A held tool_use block: its events as received and its argument JSON."""

    index: int
    name: str
    start: SSEEvent
    events: list[SSEEvent] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)
    start_input: Any = None
    size: int = 0


class _AnthropicHold:
    """One tool_use block held at a time: the Anthropic SDK places blocks by position, so
    events after a held block wait behind it; its arguments are complete at its
    ``content_block_stop``."""

    __slots__ = ("_block", "_judge", "_queue")

    def __init__(self, judge: HoldJudge) -> None:
        self._judge = judge
        self._block: _Block | None = None
        self._queue: list[SSEEvent] = []

    def event(self, ev: SSEEvent) -> list[SSEEvent]:
        block = self._block
        if block is None:
            if ev.event != "content_block_start":
                return [ev]
            obj = loads_object(ev.data)
            cb = obj.get("content_block")
            index = obj.get("index")
            if (
                not isinstance(cb, dict)
                or cb.get("type") != "tool_use"
                or not isinstance(cb.get("name"), str)
                or not self._judge.holds(cb["name"])
                or not isinstance(index, int)
            ):
                return [ev]
            self._block = _Block(index, str(cb["name"]), ev, start_input=cb.get("input"))
            return []
        if ev.event in ("content_block_delta", "content_block_stop"):
            obj = loads_object(ev.data)
            if obj.get("index") == block.index:
                if ev.event == "content_block_stop":
                    return self._release(block, ev)
                delta = obj.get("delta")
                if isinstance(delta, dict) and isinstance(delta.get("partial_json"), str):
                    block.parts.append(delta["partial_json"])
                    block.size += len(delta["partial_json"])
                block.events.append(ev)
                if block.size > self._judge.bound:
                    self._judge.too_large(block.name)  # flag mode: let it go as it is
                    return self._release(block, None)
                return []
        self._queue.append(ev)  # after the held block: waits behind it
        return []

    def _release(self, block: _Block, stop: SSEEvent | None) -> list[SSEEvent]:
        if stop is not None:
            raw = "".join(block.parts) if block.parts else None
            replaced = self._judge.verdict(block.name, raw, block.start_input)
        else:
            replaced = None
        if replaced is None:
            out = [block.start, *block.events]
        else:
            start = loads_object(block.start.data)
            start["content_block"] = {**start["content_block"], "input": {}}
            delta = {"type": "input_json_delta", "partial_json": replaced}
            out = [
                _event("content_block_start", start),
                _event(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": block.index, "delta": delta},
                ),
            ]
        if stop is not None:
            out.append(stop)
        queued, self._queue, self._block = self._queue, [], None
        for ev in queued:  # what waited may hold again (a second held call)
            out += self.event(ev)
        return out


ANTHROPIC = AnthropicDialect()

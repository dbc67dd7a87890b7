"""Anthropic Messages stream events ↔ neutral stream events.

The emitter reproduces Anthropic's exact sequence — message_start, ping, then per
block content_block_start / content_block_delta… / content_block_stop (a block is closed
before the next one starts), then message_delta and message_stop — because SDKs
accumulate by block index and reject events out of order. Usage that arrives only at
the end (OpenAI) goes into message_delta's usage, which Anthropic defines as
cumulative and which may carry input and cache counts as well as output tokens.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..base import Format
from ..sse import SSEEvent, encode_event
from ._anthropic import STOP_FROM_ANTHROPIC, STOP_TO_ANTHROPIC, emit_usage, parse_usage
from ._common import (
    ANTHROPIC_MSG_PREFIX,
    anthropic_tool_id,
    as_dict,
    as_str,
    dumps,
    loads_object,
    message_id,
)
from ._errors import parse_error, render_error
from .model import (
    ErrorKind,
    StopReason,
    StreamEnd,
    StreamError,
    StreamEvent,
    StreamFinish,
    StreamStart,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    Usage,
    UsageUpdate,
)


def _event(payload: dict[str, Any]) -> bytes:
    return encode_event(orjson.dumps(payload), str(payload["type"]))


class AnthropicStreamParser:
    """Reads Anthropic SSE events; thinking, citations and server-tool blocks are skipped."""

    def __init__(self) -> None:
        self._usage = Usage()
        self._tool_keys: dict[int, int] = {}  # block index -> tool key
        self._next_key = 0

    def parse(self, event: SSEEvent) -> list[StreamEvent]:
        data = loads_object(event.data)
        if data is None:
            return []
        kind = data.get("type") or event.event
        if kind == "message_start":
            msg = as_dict(data.get("message"))
            self._usage = parse_usage(as_dict(msg.get("usage")))
            return [StreamStart(as_str(msg.get("id")), as_str(msg.get("model")), self._usage)]
        if kind == "content_block_start":
            return self._block_start(data)
        if kind == "content_block_delta":
            return self._block_delta(data)
        if kind == "message_delta":
            return self._message_delta(data)
        if kind == "message_stop":
            return [StreamEnd()]
        if kind == "error":
            err_kind, message = parse_error(Format.ANTHROPIC, data, 500)
            return [StreamError(err_kind, message)]
        return []

    def _block_start(self, data: dict[str, Any]) -> list[StreamEvent]:
        block = as_dict(data.get("content_block"))
        if block.get("type") == "text":
            text = as_str(block.get("text"))
            return [TextDelta(text)] if text else []
        if block.get("type") != "tool_use":
            return []
        key = self._next_key
        self._next_key += 1
        index = data.get("index")
        self._tool_keys[index if isinstance(index, int) else -1] = key
        out: list[StreamEvent] = [
            ToolCallStart(key, as_str(block.get("id")), as_str(block.get("name")))
        ]
        if as_dict(block.get("input")):
            out.append(ToolCallDelta(key, dumps(block["input"])))
        return out

    def _block_delta(self, data: dict[str, Any]) -> list[StreamEvent]:
        delta = as_dict(data.get("delta"))
        if delta.get("type") == "text_delta":
            text = as_str(delta.get("text"))
            return [TextDelta(text)] if text else []
        if delta.get("type") == "input_json_delta":
            index = data.get("index")
            key = self._tool_keys.get(index if isinstance(index, int) else -1)
            partial = as_str(delta.get("partial_json"))
            return [ToolCallDelta(key, partial)] if key is not None and partial else []
        return []

    def _message_delta(self, data: dict[str, Any]) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        delta = as_dict(data.get("delta"))
        reason = delta.get("stop_reason")
        if reason is not None:
            seq = delta.get("stop_sequence")
            stop = STOP_FROM_ANTHROPIC.get(str(reason), StopReason.END_TURN)
            out.append(StreamFinish(stop, seq if isinstance(seq, str) else None))
        if isinstance(data.get("usage"), dict):
            self._usage = parse_usage(data["usage"], self._usage)
            out.append(UsageUpdate(self._usage))
        return out


class AnthropicStreamEmitter:
    """Writes neutral events as Anthropic SSE events, opening and closing blocks as needed."""

    def __init__(self, model: str | None) -> None:
        self._model = model
        self._started = False
        self._ended = False
        self._next_index = 0
        self._open: tuple[str, int] | None = None  # (kind, block index)
        self._tool_blocks: dict[int, int] = {}  # tool key -> block index
        self._stop: StreamFinish | None = None
        self._usage = Usage()

    def emit(self, ev: StreamEvent) -> list[bytes]:
        if self._ended:
            return []
        if isinstance(ev, StreamStart):
            return self._start(ev)
        if isinstance(ev, TextDelta):
            return self._text(ev.text) if ev.text else []
        if isinstance(ev, ToolCallStart):
            return self._tool_start(ev)
        if isinstance(ev, ToolCallDelta):
            return self._tool_delta(ev)
        if isinstance(ev, StreamFinish):
            self._stop = ev
        elif isinstance(ev, UsageUpdate):
            self._usage = ev.usage
        elif isinstance(ev, StreamEnd):
            return self._end()
        elif isinstance(ev, StreamError):
            self._ended = True
            return [error_event(ev.kind, ev.message)]
        return []

    def resume(self, *, block: int | None, next_index: int) -> None:
        """Carry on a message the client already has (mid-stream recovery): no second
        message_start, and text goes on in the client's open text block ``block``."""
        self._started = True
        self._open = ("text", block) if block is not None else None
        self._next_index = next_index

    def _start(self, ev: StreamStart) -> list[bytes]:
        if self._started:
            return []
        self._started = True
        self._usage = ev.usage
        message: dict[str, Any] = {
            "id": message_id(ev.id, ANTHROPIC_MSG_PREFIX),
            "type": "message",
            "role": "assistant",
            "model": self._model or ev.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": emit_usage(ev.usage),
        }
        return [_event({"type": "message_start", "message": message}), _event({"type": "ping"})]

    def _ensure_started(self) -> list[bytes]:
        return [] if self._started else self._start(StreamStart("", self._model or "", Usage()))

    def _close(self) -> list[bytes]:
        if self._open is None:
            return []
        index = self._open[1]
        self._open = None
        return [_event({"type": "content_block_stop", "index": index})]

    def _open_block(self, kind: str, block: dict[str, Any]) -> list[bytes]:
        out = self._close()
        index = self._next_index
        self._next_index += 1
        self._open = (kind, index)
        out.append(_event({"type": "content_block_start", "index": index, "content_block": block}))
        return out

    def _text(self, text: str) -> list[bytes]:
        out = self._ensure_started()
        if self._open is None or self._open[0] != "text":
            out += self._open_block("text", {"type": "text", "text": ""})
        assert self._open is not None
        delta = {"type": "text_delta", "text": text}
        out.append(_event({"type": "content_block_delta", "index": self._open[1], "delta": delta}))
        return out

    def _tool_start(self, ev: ToolCallStart) -> list[bytes]:
        out = self._ensure_started()
        tool_id = anthropic_tool_id(ev.id, f"toolu_{ev.key}")
        out += self._open_block(
            "tool", {"type": "tool_use", "id": tool_id, "name": ev.name, "input": {}}
        )
        assert self._open is not None
        self._tool_blocks[ev.key] = self._open[1]
        return out

    def _tool_delta(self, ev: ToolCallDelta) -> list[bytes]:
        out: list[bytes] = []
        if ev.key not in self._tool_blocks:
            out += self._tool_start(ToolCallStart(ev.key, "", ""))
        # A fragment for an earlier, already closed call (never sent by OpenAI itself) still
        # goes to that call's block index, which SDKs accumulate by, rather than being lost.
        delta = {"type": "input_json_delta", "partial_json": ev.arguments}
        index = self._tool_blocks[ev.key]
        out.append(_event({"type": "content_block_delta", "index": index, "delta": delta}))
        return out

    def _end(self) -> list[bytes]:
        out = self._ensure_started() + self._close()
        self._ended = True
        if self._stop is not None:
            reason, seq = STOP_TO_ANTHROPIC[self._stop.stop_reason], self._stop.stop_sequence
        else:
            reason, seq = ("tool_use" if self._tool_blocks else "end_turn"), None
        usage = emit_usage(self._usage)
        delta = {"stop_reason": reason, "stop_sequence": seq}
        out.append(_event({"type": "message_delta", "delta": delta, "usage": usage}))
        out.append(_event({"type": "message_stop"}))
        return out


def error_event(kind: ErrorKind, message: str) -> bytes:
    """Anthropic's in-band stream error: ``event: error`` with the same body as an HTTP error."""
    return _event(render_error(Format.ANTHROPIC, kind, message))

"""OpenAI Chat Completions stream chunks ↔ neutral stream events.

The emitter follows OpenAI's sequence: a first chunk whose delta carries the role,
content and ``tool_calls`` deltas (the first per call with index, id, type and name,
then argument fragments with the index only; the index counts tool calls, not content
blocks), one chunk with ``finish_reason`` and an empty delta, a usage chunk with
``choices: []`` when the client asked for ``include_usage``, then ``data: [DONE]``.
The finish chunk is held until the source's end because Anthropic may send more than
one message_delta and only the last stop reason counts.

The parser tolerates OpenAI-compatible servers: tool call deltas without ``index``, an
index reused for a new call id, usage on any chunk, ``finish_reason: "stop"`` after
tool calls.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from ..base import Format
from ..sse import SSEEvent, encode_event
from ._common import OPENAI_MSG_PREFIX, as_dict, as_list, as_str, loads_object, message_id
from ._errors import parse_error, render_error
from ._openai import STOP_TO_OPENAI, emit_usage, parse_usage, stop_from_openai
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

DONE = b"data: [DONE]\n\n"


class OpenAIStreamParser:
    """Reads OpenAI SSE chunks (first choice only)."""

    def __init__(self) -> None:
        self._started = False
        self._tools: dict[int, tuple[int, str]] = {}  # wire index -> (tool key, call id)
        self._last: tuple[int, str] | None = None
        self._next_key = 0
        self._refusal = False

    def parse(self, event: SSEEvent) -> list[StreamEvent]:
        if event.data.strip() == b"[DONE]":
            return [StreamEnd()]
        data = loads_object(event.data)
        if data is None:
            return []
        if data.get("error"):
            kind, message = parse_error(Format.OPENAI, data, 500)
            return [StreamError(kind, message or "upstream stream error")]
        out: list[StreamEvent] = []
        usage = data.get("usage")
        if not self._started:
            self._started = True
            first = parse_usage(usage) if isinstance(usage, dict) else Usage()
            out.append(StreamStart(as_str(data.get("id")), as_str(data.get("model")), first))
        choices = [c for c in as_list(data.get("choices")) if isinstance(c, dict)]
        choice = next((c for c in choices if c.get("index", 0) == 0), None)
        if choice is not None:
            out += self._choice(choice)
        if isinstance(usage, dict):
            out.append(UsageUpdate(parse_usage(usage)))
        return out

    def _choice(self, choice: dict[str, Any]) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        delta = as_dict(choice.get("delta"))
        if text := as_str(delta.get("content")):
            out.append(TextDelta(text))
        if refusal := as_str(delta.get("refusal")):
            self._refusal = True
            out.append(TextDelta(refusal))
        for call in as_list(delta.get("tool_calls")):
            if isinstance(call, dict):
                out += self._tool_call(call)
        reason = choice.get("finish_reason")
        if reason is not None:
            stop = stop_from_openai(reason, has_tools=self._next_key > 0) or StopReason.END_TURN
            if stop is StopReason.END_TURN and self._refusal:
                stop = StopReason.REFUSAL
            out.append(StreamFinish(stop))
        return out

    def _tool_call(self, call: dict[str, Any]) -> list[StreamEvent]:
        raw_index = call.get("index")
        slot = raw_index if isinstance(raw_index, int) and not isinstance(raw_index, bool) else None
        call_id = as_str(call.get("id"))
        fn = as_dict(call.get("function"))
        entry = self._tools.get(slot) if slot is not None else self._last
        out: list[StreamEvent] = []
        if entry is None or (call_id and call_id != entry[1]):
            key = self._next_key
            self._next_key += 1
            entry = (key, call_id or f"call_{key}")
            out.append(ToolCallStart(key, entry[1], as_str(fn.get("name"))))
        if slot is not None:
            self._tools[slot] = entry
        self._last = entry
        args = fn.get("arguments")
        if isinstance(args, str) and args:
            out.append(ToolCallDelta(entry[0], args))
        return out


class OpenAIStreamEmitter:
    """Writes neutral events as OpenAI ``chat.completion.chunk`` SSE events."""

    def __init__(self, model: str | None, *, include_usage: bool) -> None:
        self._model = model or ""
        self._include_usage = include_usage
        self._id = OPENAI_MSG_PREFIX
        self._created = int(time.time())
        self._started = False
        self._ended = False
        self._any_tool = False
        self._stop: StopReason | None = None
        self._usage = Usage()

    def emit(self, ev: StreamEvent) -> list[bytes]:
        if self._ended:
            return []
        if isinstance(ev, StreamStart):
            return self._start(ev)
        if isinstance(ev, TextDelta):
            return [*self._ensure_started(), self._chunk({"content": ev.text})] if ev.text else []
        if isinstance(ev, ToolCallStart):
            self._any_tool = True
            fn = {"name": ev.name, "arguments": ""}
            call = {"index": ev.key, "id": ev.id, "type": "function", "function": fn}
            return [*self._ensure_started(), self._chunk({"tool_calls": [call]})]
        if isinstance(ev, ToolCallDelta):
            call = {"index": ev.key, "function": {"arguments": ev.arguments}}
            return [*self._ensure_started(), self._chunk({"tool_calls": [call]})]
        if isinstance(ev, StreamFinish):
            self._stop = ev.stop_reason
        elif isinstance(ev, UsageUpdate):
            self._usage = ev.usage
        elif isinstance(ev, StreamEnd):
            return self._end()
        elif isinstance(ev, StreamError):
            self._ended = True
            return [error_chunk(ev.kind, ev.message)]
        return []

    def resume(self, *, chunk_id: str, created: int) -> None:
        """Carry on a completion the client already has (mid-stream recovery): the same id and
        ``created`` in every chunk, and no second role chunk."""
        self._started = True
        self._id = chunk_id
        self._created = created

    def _start(self, ev: StreamStart) -> list[bytes]:
        if self._started:
            return []
        self._started = True
        self._id = message_id(ev.id, OPENAI_MSG_PREFIX)
        self._model = self._model or ev.model
        self._usage = ev.usage
        return [self._chunk({"role": "assistant", "content": "", "refusal": None})]

    def _ensure_started(self) -> list[bytes]:
        return [] if self._started else self._start(StreamStart("", self._model, Usage()))

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return self._encode([choice], None)

    def _encode(self, choices: list[dict[str, Any]], usage: dict[str, Any] | None) -> bytes:
        chunk: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": choices,
        }
        if self._include_usage:
            chunk["usage"] = usage
        return encode_event(orjson.dumps(chunk))

    def _end(self) -> list[bytes]:
        out = self._ensure_started()
        self._ended = True
        stop = self._stop or (StopReason.TOOL_USE if self._any_tool else StopReason.END_TURN)
        out.append(self._chunk({}, STOP_TO_OPENAI[stop]))
        if self._include_usage:
            out.append(self._encode([], emit_usage(self._usage)))
        out.append(DONE)
        return out


def error_chunk(kind: ErrorKind, message: str) -> bytes:
    """OpenAI's in-band stream error: a data-only ``{"error": {...}}`` chunk (SDKs raise on it)."""
    return encode_event(orjson.dumps(render_error(Format.OPENAI, kind, message)))

"""Bedrock ConverseStream events ↔ neutral stream events.

A ConverseStream answer is an ``application/vnd.amazon.eventstream`` body (framing in
``providers.eventstream``); each message's ``:event-type`` header names the event and its
payload is the event's JSON. The sequence, from the ``ConverseStreamOutput`` reference:
``messageStart {role}``; per content block, ``contentBlockStart {start: {toolUse: {toolUseId,
name}}, contentBlockIndex}`` (tool blocks only: a text block opens with its first delta),
``contentBlockDelta {delta: {text} | {toolUse: {input}}, contentBlockIndex}`` (tool input as
JSON text fragments), ``contentBlockStop {contentBlockIndex}``; then ``messageStop
{stopReason}`` and last ``metadata {usage, metrics: {latencyMs}}``. Payloads may carry a
``p`` padding field, which is ignored. Errors mid-stream are exception messages
(``:message-type: exception``) whose ``:exception-type`` is ``throttlingException``,
``validationException``, ``serviceUnavailableException``, ``internalServerException`` or
``modelStreamErrorException``, with a ``{"message"}`` payload.

``metadata`` is the stream's final marker (it carries the usage), so a stream cut after
``messageStop`` is still a cut.
"""

from __future__ import annotations

from typing import Any

from ._bedrock import ERROR_KINDS, STOP_FROM_BEDROCK, STOP_TO_BEDROCK, emit_usage, parse_usage
from ._bedrock import tool_id as bedrock_tool_id
from ._common import as_dict, as_str
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

BedrockEvent = tuple[str, dict[str, Any]]  # (event type, JSON payload)
EXCEPTION = "exception"  # the message type of an in-band error


def exception_kind(exception_type: str) -> ErrorKind:
    """``throttlingException`` → the kind of ``ThrottlingException``."""
    name = exception_type[:1].upper() + exception_type[1:]
    return ERROR_KINDS.get(name, ErrorKind.API_ERROR)


class BedrockStreamParser:
    """Reads ConverseStream events (already unframed) into neutral events."""

    def __init__(self, *, id_: str = "", model: str = "") -> None:
        self._id = id_
        self._model = model
        self._started = False
        self._tool_keys: dict[int, int] = {}  # content block index -> tool key
        self._next_key = 0

    def parse(
        self, event_type: str, payload: dict[str, Any], *, exception: bool = False
    ) -> list[StreamEvent]:
        if exception:
            message = as_str(payload.get("message")) or as_str(payload.get("Message"))
            return [StreamError(exception_kind(event_type), message or event_type)]
        out: list[StreamEvent] = []
        if not self._started and event_type in (
            "messageStart",
            "contentBlockStart",
            "contentBlockDelta",
        ):
            self._started = True
            out.append(StreamStart(self._id, self._model, Usage()))
        if event_type == "contentBlockStart":
            out += self._block_start(payload)
        elif event_type == "contentBlockDelta":
            out += self._block_delta(payload)
        elif event_type == "messageStop":
            reason = as_str(payload.get("stopReason"))
            out.append(StreamFinish(STOP_FROM_BEDROCK.get(reason, StopReason.END_TURN)))
        elif event_type == "metadata":
            out.append(UsageUpdate(parse_usage(as_dict(payload.get("usage")))))
            out.append(StreamEnd())
        return out

    def _index(self, payload: dict[str, Any]) -> int:
        index = payload.get("contentBlockIndex")
        return index if isinstance(index, int) and not isinstance(index, bool) else -1

    def _block_start(self, payload: dict[str, Any]) -> list[StreamEvent]:
        use = as_dict(as_dict(payload.get("start")).get("toolUse"))
        if not use:
            return []
        key = self._next_key
        self._next_key += 1
        self._tool_keys[self._index(payload)] = key
        return [ToolCallStart(key, as_str(use.get("toolUseId")), as_str(use.get("name")))]

    def _block_delta(self, payload: dict[str, Any]) -> list[StreamEvent]:
        delta = as_dict(payload.get("delta"))
        if isinstance(delta.get("text"), str):
            return [TextDelta(delta["text"])] if delta["text"] else []
        use = delta.get("toolUse")
        if isinstance(use, dict):
            key = self._tool_keys.get(self._index(payload))
            fragment = as_str(use.get("input"))
            return [ToolCallDelta(key, fragment)] if key is not None and fragment else []
        return []


class BedrockStreamEmitter:
    """Writes neutral events as ConverseStream events, in the documented order."""

    def __init__(self) -> None:
        self._started = False
        self._ended = False
        self._next_index = 0
        self._open: tuple[str, int] | None = None  # (kind, content block index)
        self._tool_blocks: dict[int, int] = {}
        self._stop: StopReason | None = None
        self._usage = Usage()

    def emit(self, ev: StreamEvent) -> list[BedrockEvent]:
        if self._ended:
            return []
        if isinstance(ev, StreamStart):
            self._usage = ev.usage
            return self._ensure_started()
        if isinstance(ev, TextDelta):
            return self._text(ev.text) if ev.text else []
        if isinstance(ev, ToolCallStart):
            return self._tool_start(ev)
        if isinstance(ev, ToolCallDelta):
            out: list[BedrockEvent] = []
            if ev.key not in self._tool_blocks:
                out += self._tool_start(ToolCallStart(ev.key, "", ""))
            index = self._tool_blocks[ev.key]
            delta = {"toolUse": {"input": ev.arguments}}
            out.append(("contentBlockDelta", {"delta": delta, "contentBlockIndex": index}))
            return out
        if isinstance(ev, StreamFinish):
            self._stop = ev.stop_reason
        elif isinstance(ev, UsageUpdate):
            self._usage = ev.usage
        elif isinstance(ev, StreamEnd):
            return self._end()
        elif isinstance(ev, StreamError):
            self._ended = True
        return []

    def _ensure_started(self) -> list[BedrockEvent]:
        if self._started:
            return []
        self._started = True
        return [("messageStart", {"role": "assistant"})]

    def _close(self) -> list[BedrockEvent]:
        if self._open is None:
            return []
        index = self._open[1]
        self._open = None
        return [("contentBlockStop", {"contentBlockIndex": index})]

    def _text(self, text: str) -> list[BedrockEvent]:
        out = self._ensure_started()
        if self._open is None or self._open[0] != "text":
            out += self._close()
            self._open = ("text", self._next_index)
            self._next_index += 1
        delta = {"delta": {"text": text}, "contentBlockIndex": self._open[1]}
        out.append(("contentBlockDelta", delta))
        return out

    def _tool_start(self, ev: ToolCallStart) -> list[BedrockEvent]:
        out = self._ensure_started() + self._close()
        index = self._next_index
        self._next_index += 1
        self._open = ("tool", index)
        self._tool_blocks[ev.key] = index
        use = {"toolUseId": bedrock_tool_id(ev.id, f"tooluse_{ev.key}"), "name": ev.name}
        out.append(("contentBlockStart", {"start": {"toolUse": use}, "contentBlockIndex": index}))
        return out

    def _end(self) -> list[BedrockEvent]:
        out = self._ensure_started() + self._close()
        self._ended = True
        stop = self._stop or (StopReason.TOOL_USE if self._tool_blocks else StopReason.END_TURN)
        out.append(("messageStop", {"stopReason": STOP_TO_BEDROCK[stop]}))
        out.append(("metadata", {"usage": emit_usage(self._usage), "metrics": {"latencyMs": 0}}))
        return out

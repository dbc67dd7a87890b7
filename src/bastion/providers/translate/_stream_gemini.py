"""Gemini ``streamGenerateContent?alt=sse`` events ↔ neutral stream events.

With ``alt=sse`` each event is ``data: <GenerateContentResponse>`` (no event names, no
``[DONE]``): text arrives as ``candidates[0].content.parts[].text`` pieces, a function call
arrives whole in one part (``functionCall: {name, args}``, no argument fragments),
``usageMetadata`` rides on the chunks (the last one complete), and the chunk carrying
``finishReason`` is the last (ai.google.dev/api/generate-content#method:-models.streamgeneratecontent,
Candidate.finishReason: "If empty, the model has not stopped generating"). A stream that ends
before a ``finishReason`` was cut. A blocked prompt is one chunk with
``promptFeedback.blockReason`` and no candidates. An error after the headers is a
``data: {"error": {code, message, status}}`` event.

The parser ends the neutral stream at the ``finishReason`` chunk (finish, usage, end); a
``finishReason`` that is the model's failure (``_gemini.failure``: ``MALFORMED_FUNCTION_CALL``,
``OTHER``, one not known…) ends it with an error instead, never a clean finish. The emitter
holds function calls until they are complete, since Gemini sends each one whole.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..base import Format
from ..sse import SSEEvent, encode_event
from ._common import as_dict, as_list, as_str, dumps, loads_object, parse_arguments
from ._errors import parse_error, render_error
from ._gemini import (
    STOP_TO_GEMINI,
    call_id,
    emit_usage,
    failed_message,
    parse_usage,
    part_text,
    stop_from_gemini,
)
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


class GeminiStreamParser:
    """Reads Gemini SSE chunks (first candidate only)."""

    def __init__(self) -> None:
        self._started = False
        self._calls = 0
        self._id = ""

    def parse(self, event: SSEEvent) -> list[StreamEvent]:
        data = loads_object(event.data)
        if data is None:
            return []
        if isinstance(data.get("error"), dict):
            kind, message = parse_error(Format.GEMINI, data, _error_status(data))
            return [StreamError(kind, message or "upstream stream error")]
        out: list[StreamEvent] = []
        usage_raw = data.get("usageMetadata")
        usage = parse_usage(usage_raw) if isinstance(usage_raw, dict) else None
        if not self._started:
            self._started = True
            self._id = as_str(data.get("responseId"))
            out.append(StreamStart(self._id, as_str(data.get("modelVersion")), usage or Usage()))
        cands = as_list(data.get("candidates"))
        cand = as_dict(cands[0]) if cands else {}
        for raw in as_list(as_dict(cand.get("content")).get("parts")):
            out += self._part(as_dict(raw))
        stop = stop_from_gemini(cand.get("finishReason"), has_tools=self._calls > 0)
        if not cands and as_dict(data.get("promptFeedback")).get("blockReason"):
            stop = StopReason.REFUSAL
        if usage is not None:
            out.append(UsageUpdate(usage))
        if stop is StopReason.ERROR:  # the model failed: an error, never a clean finish
            out.append(StreamError(ErrorKind.API_ERROR, failed_message(cand.get("finishReason"))))
        elif stop is not None:
            out += [StreamFinish(stop), StreamEnd()]
        return out

    def _part(self, part: dict[str, Any]) -> list[StreamEvent]:
        if text := part_text(part):
            return [TextDelta(text)]
        if "functionCall" not in part:
            return []
        fc = as_dict(part["functionCall"])
        key = self._calls
        self._calls += 1
        out: list[StreamEvent] = [
            ToolCallStart(
                key, as_str(fc.get("id")) or call_id(self._id, key), as_str(fc.get("name"))
            )
        ]
        # always the arguments, "{}" for none: a chat client's JSON parse of "" fails
        out.append(ToolCallDelta(key, dumps(parse_arguments(fc.get("args")))))
        return out


def _error_status(data: dict[str, Any]) -> int:
    """The HTTP code an in-stream Google error names (500 when it names none)."""
    code = as_dict(data.get("error")).get("code")
    return code if isinstance(code, int) and not isinstance(code, bool) else 500


class GeminiStreamEmitter:
    """Writes neutral events as Gemini SSE chunks."""

    def __init__(self, model: str | None) -> None:
        self._model = model or ""
        self._id = ""
        self._ended = False
        self._calls: dict[int, tuple[str, str, list[str]]] = {}  # key -> (id, name, fragments)
        self._stop: StopReason | None = None
        self._usage = Usage()

    def emit(self, ev: StreamEvent) -> list[bytes]:
        if self._ended:
            return []
        if isinstance(ev, StreamStart):
            self._id = ev.id
            self._model = self._model or ev.model
            self._usage = ev.usage
            return []
        if isinstance(ev, ToolCallStart):
            self._calls[ev.key] = (ev.id, ev.name, [])
            return []
        if isinstance(ev, ToolCallDelta):
            self._calls.setdefault(ev.key, ("", "", []))[2].append(ev.arguments)
            return []
        if isinstance(ev, TextDelta):
            return [self._chunk([{"text": ev.text}])] if ev.text else []
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

    def _chunk(self, parts: list[dict[str, Any]], finish: str | None = None) -> bytes:
        cand: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
        if finish is not None:
            cand["finishReason"] = finish
        chunk = {
            "candidates": [cand],
            "usageMetadata": emit_usage(self._usage),
            "modelVersion": self._model,
            "responseId": self._id,
        }
        return encode_event(orjson.dumps(chunk))

    def _end(self) -> list[bytes]:
        self._ended = True
        parts: list[dict[str, Any]] = []
        for cid, name, fragments in self._calls.values():
            call: dict[str, Any] = {"name": name, "args": parse_arguments("".join(fragments))}
            if cid:
                call["id"] = cid
            parts.append({"functionCall": call})
        stop = self._stop or (StopReason.TOOL_USE if self._calls else StopReason.END_TURN)
        return [self._chunk(parts, STOP_TO_GEMINI[stop])]


def error_chunk(kind: ErrorKind, message: str) -> bytes:
    """Gemini's error after the headers: a ``data:`` event with Google's error body."""
    return encode_event(orjson.dumps(render_error(Format.GEMINI, kind, message)))

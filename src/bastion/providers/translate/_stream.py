"""The stateful stream translator the relay drives, one instance per streamed attempt."""

from __future__ import annotations

from ..base import Format
from ..sse import SSEEvent
from ._errors import kind_from_name
from ._stream_anthropic import AnthropicStreamEmitter, AnthropicStreamParser, error_event
from ._stream_gemini import GeminiStreamEmitter, GeminiStreamParser
from ._stream_gemini import error_chunk as gemini_error_chunk
from ._stream_openai import OpenAIStreamEmitter, OpenAIStreamParser, error_chunk
from .model import (
    StreamEnd,
    StreamError,
    StreamStart,
    TextDelta,
    Usage,
    UsageUpdate,
)

CUT_MESSAGE = "upstream stream ended before the response was complete"


class StreamTranslator:
    """Turns a provider's SSE events into the client's format, tracking usage, text and completion.

    ``feed`` returns complete encoded SSE events for the client (when ``source`` equals
    ``target`` the events are relayed as received and only observed). ``finish`` is for the
    end of the upstream body: if the source's final marker was never seen, it returns one
    in-band error event so a cut stream never looks like a clean, complete answer (the relay
    should not call it when it would rather fail over before the first byte). In-band errors
    are Anthropic ``event: error`` events or, for OpenAI, a data-only chunk
    ``{"error": {message, type, param, code}}`` with no ``[DONE]`` after it — the shape the
    OpenAI SDK raises ``APIError`` on. After ``error``, a source error, or the final marker,
    ``feed`` and ``finish`` return nothing more.
    """

    __slots__ = ("_closed", "_emitter", "_finished", "_parser", "_target", "_text", "_usage")

    def __init__(
        self, source: Format, target: Format, *, model: str | None, include_usage: bool
    ) -> None:
        self._parser: AnthropicStreamParser | OpenAIStreamParser | GeminiStreamParser
        if source is Format.ANTHROPIC:
            self._parser = AnthropicStreamParser()
        elif source is Format.GEMINI:
            self._parser = GeminiStreamParser()
        else:
            self._parser = OpenAIStreamParser()
        self._emitter: AnthropicStreamEmitter | OpenAIStreamEmitter | GeminiStreamEmitter | None
        self._emitter = None
        if source is not target:
            if target is Format.ANTHROPIC:
                self._emitter = AnthropicStreamEmitter(model)
            elif target is Format.GEMINI:
                self._emitter = GeminiStreamEmitter(model)
            else:
                self._emitter = OpenAIStreamEmitter(model, include_usage=include_usage)
        self._target = target
        self._usage = Usage()
        self._text: list[str] = []
        self._finished = False
        self._closed = False

    @property
    def usage(self) -> Usage:
        """Usage reported by the source so far (cumulative; input excludes cache tokens)."""
        return self._usage

    @property
    def finished(self) -> bool:
        """Whether the source's final marker (message_stop / [DONE]) was seen."""
        return self._finished

    @property
    def text_so_far(self) -> str:
        """All answer text received so far, for a continuation request after a cut."""
        return "".join(self._text)

    def feed(self, event: SSEEvent) -> list[bytes]:
        """Translate one upstream event into zero or more client events."""
        if self._closed:
            return []
        out: list[bytes] = []
        for ev in self._parser.parse(event):
            if isinstance(ev, TextDelta):
                self._text.append(ev.text)
            elif isinstance(ev, StreamStart | UsageUpdate):
                self._usage = ev.usage
            elif isinstance(ev, StreamEnd):
                self._finished = self._closed = True
            elif isinstance(ev, StreamError):
                self._closed = True
            if self._emitter is not None:
                out += self._emitter.emit(ev)
        if self._emitter is None:
            return [event.raw]
        return out

    def finish(self) -> list[bytes]:
        """End of the upstream body: nothing if it completed, else an in-band error event."""
        if self._closed:
            return []
        return [self.error(CUT_MESSAGE, "api_error")]

    def error(self, message: str, type_: str) -> bytes:
        """An in-band error in the target format (``type_``: Anthropic type or OpenAI type/code)."""
        self._closed = True
        kind = kind_from_name(type_)
        if self._target is Format.ANTHROPIC:
            return error_event(kind, message)
        if self._target is Format.GEMINI:
            return gemini_error_chunk(kind, message)
        return error_chunk(kind, message)

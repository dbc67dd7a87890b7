"""Splicing a fallback's stream onto a client stream that was cut mid-answer.

The client already holds an open message: an Anthropic ``message_start`` and a text block,
or OpenAI chunks with an id, a model and a role. ``ClientView`` follows what it was sent;
``StreamSplicer`` turns the fallback's events (either format) into the rest of that same
message: no second opening, the client's id and model, text the client already has
dropped from a restarted answer, and usage that sums both parts so the client is told
what the whole answer cost. A restarted answer that does not reproduce the client's text
cannot be spliced: ``SpliceDiverged`` says so before any of it is sent.
"""

from __future__ import annotations

from ..base import Format
from ..sse import SSEDecoder, SSEEvent
from ._common import as_dict, as_str, loads_object
from ._stream_anthropic import AnthropicStreamEmitter, AnthropicStreamParser
from ._stream_openai import OpenAIStreamEmitter, OpenAIStreamParser
from .model import (
    StreamEnd,
    StreamEvent,
    StreamFinish,
    StreamStart,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    Usage,
    UsageUpdate,
)

__all__ = ["ClientView", "SpliceDiverged", "StreamSplicer", "add_usage"]

_WATCHED = (b"event: message_start", b"event: content_block_st")  # ..._start and ..._stop


class SpliceDiverged(ValueError):
    """The restarted answer is not a continuation of the text the client already has."""


class ClientView:
    """What one client stream has been sent: enough to carry it on as the same message.

    Fed the client-format events as they go out (``observe`` with parsed fields on the fast
    path, ``observe_raw`` with a translator's encoded events); it parses only the few events
    that open a message or a block, so watching costs next to nothing per delta.
    """

    __slots__ = ("block", "created", "fmt", "id", "model", "next_index", "ready")

    def __init__(self, fmt: Format) -> None:
        self.fmt = fmt
        self.ready = False  # the client has the message's opening (ids below are known)
        self.id = ""
        self.model = ""
        self.created = 0
        self.block: int | None = None  # Anthropic: the text block still open at the client
        self.next_index = 0

    def observe(self, event: str | None, data: bytes) -> None:
        if self.fmt is Format.ANTHROPIC:
            if event == "content_block_stop":
                self.block = None
            elif event in ("message_start", "content_block_start"):
                self._anthropic(event, data)
        elif not self.ready and data != b"[DONE]":
            obj = loads_object(data)
            if obj is not None and isinstance(obj.get("id"), str):
                self.id, self.model = obj["id"], as_str(obj.get("model"))
                created = obj.get("created")
                self.created = created if isinstance(created, int) else 0
                self.ready = True

    def observe_raw(self, raw: bytes) -> None:
        """One whole event as encoded by a translator's emitter."""
        if self.fmt is Format.ANTHROPIC:
            if not raw.startswith(_WATCHED):
                return
        elif self.ready:
            return
        for ev in SSEDecoder().feed(raw):
            self.observe(ev.event, ev.data)

    def _anthropic(self, event: str, data: bytes) -> None:
        obj = loads_object(data)
        if obj is None:
            return
        if event == "message_start":
            msg = as_dict(obj.get("message"))
            self.id, self.model = as_str(msg.get("id")), as_str(msg.get("model"))
            self.ready = True
            return
        index = obj.get("index")
        if isinstance(index, int) and not isinstance(index, bool):
            text = as_dict(obj.get("content_block")).get("type") == "text"
            self.block = index if text else None
            self.next_index = max(self.next_index, index + 1)


def add_usage(a: Usage, b: Usage) -> Usage:
    return Usage(
        a.input_tokens + b.input_tokens,
        a.output_tokens + b.output_tokens,
        a.cache_read + b.cache_read,
        a.cache_write + b.cache_write,
    )


class StreamSplicer:
    """Carries a client's stream on from a fallback's events; one per recovered stream.

    ``expect`` is text the fallback's answer must start with before anything more is sent
    (a restart repeats the whole answer; a prefill continuation may repeat the white space
    the prefill could not end with). With ``strict``, an answer that departs from it raises
    ``SpliceDiverged``; otherwise the rest is sent as it comes. ``text`` receives what this
    part adds to the client's answer.

    ``base`` is the cut part's usage. An OpenAI stream reports usage only at its end, so a
    cut one leaves its input unknown (all zero): it read the same prompt as the fallback,
    less the ``prefilled`` tokens a continuation adds, and is counted so (see ``base``).
    """

    __slots__ = (
        "_base",
        "_emitter",
        "_expect",
        "_input_known",
        "_parser",
        "_pos",
        "_prefilled",
        "_strict",
        "text",
    )

    def __init__(
        self,
        source: Format,
        view: ClientView,
        *,
        base: Usage,
        include_usage: bool,
        text: list[str],
        expect: str = "",
        strict: bool = True,
        prefilled: int = 0,
    ) -> None:
        self._parser: AnthropicStreamParser | OpenAIStreamParser = (
            AnthropicStreamParser() if source is Format.ANTHROPIC else OpenAIStreamParser()
        )
        self._emitter: AnthropicStreamEmitter | OpenAIStreamEmitter
        if view.fmt is Format.ANTHROPIC:
            anthropic = AnthropicStreamEmitter(view.model)
            anthropic.resume(block=view.block, next_index=view.next_index)
            self._emitter = anthropic
        else:
            openai = OpenAIStreamEmitter(view.model, include_usage=include_usage)
            openai.resume(chunk_id=view.id, created=view.created)
            self._emitter = openai
        self._base = base
        self._input_known = bool(base.input_tokens or base.cache_read or base.cache_write)
        self._prefilled = prefilled
        self._expect = expect
        self._pos = 0
        self._strict = strict
        self.text = text

    @property
    def base(self) -> Usage:
        """The cut part's usage, its input estimated from the fallback's when it was unknown."""
        return self._base

    @property
    def matching(self) -> bool:
        """Still reading the part of the answer the client already has."""
        return self._pos < len(self._expect)

    def feed(self, event: SSEEvent) -> list[bytes]:
        """The client's events for one fallback event; raises ``SpliceDiverged``."""
        out: list[bytes] = []
        for ev in self._parser.parse(event):
            spliced = self._splice(ev)
            if spliced is not None:
                out += self._emitter.emit(spliced)
        return out

    def _splice(self, ev: StreamEvent) -> StreamEvent | None:
        if isinstance(ev, StreamStart | UsageUpdate):
            own = ev.usage
            if not self._input_known and (own.input_tokens or own.cache_read or own.cache_write):
                b = self._base
                self._base = Usage(
                    max(0, own.input_tokens - self._prefilled),
                    b.output_tokens,
                    own.cache_read,
                    own.cache_write,
                )
            return UsageUpdate(add_usage(self._base, own))
        if self.matching:
            if isinstance(ev, TextDelta):
                return self._match(ev.text)
            if isinstance(ev, ToolCallStart | ToolCallDelta | StreamFinish | StreamEnd):
                self._diverged("it ended before reproducing the text already sent")
        if isinstance(ev, TextDelta):
            self.text.append(ev.text)
        return ev

    def _match(self, text: str) -> TextDelta | None:
        pos = self._pos
        n = min(len(text), len(self._expect) - pos)
        if text[:n] != self._expect[pos : pos + n]:
            self._diverged("its text differs from the text already sent")
            rest = text
        else:
            self._pos = pos + n
            rest = text[n:]
        if not rest:
            return None
        self.text.append(rest)
        return TextDelta(rest)

    def _diverged(self, why: str) -> None:
        if self._strict:
            raise SpliceDiverged(f"the fallback's answer cannot carry the stream on: {why}")
        self._expect, self._pos = "", 0  # lenient: stop matching, send the rest as it comes

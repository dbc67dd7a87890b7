"""Watching and relaying provider streams: usage, text and the final marker, chunk by chunk.

A ``StreamWatcher`` reads one provider format's events (never changing them);
``StreamRelay`` forwards each event as soon as it is complete — raw on the fast
path, through a translator across formats — and guarantees that a stream which
is cut, stalls or breaks ends with an explicit error event, never a clean end.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import orjson

from .call import Attempt, Call, Usage
from .errors import BastionError, UpstreamError, UpstreamProtocolError, UpstreamTimeout
from .output import filter_event
from .providers.adapters import usage_from_anthropic, usage_from_openai
from .providers.base import Format, UpstreamResponse
from .providers.sse import SSEDecoder, SSEEvent, encode_event


class StreamWatcher:
    """Observes one provider format's events; returns whether an event carried model output."""

    __slots__ = ("_call", "errored", "finished", "fmt", "stop_reason", "text_only")

    def __init__(self, call: Call, fmt: Format) -> None:
        self._call = call
        self.fmt = fmt
        self.finished = False
        self.errored = False
        self.stop_reason: str | None = None
        self.text_only = True  # no tool call or second block yet: the answer can be continued

    def observe(self, ev: SSEEvent) -> bool:
        if self.fmt is Format.ANTHROPIC:
            return self._anthropic(ev)
        return self._openai(ev)

    def _anthropic(self, ev: SSEEvent) -> bool:
        name = ev.event
        call = self._call
        if name == "content_block_delta":
            obj = _loads(ev.data)
            if obj is None:
                raise UpstreamProtocolError("upstream sent a malformed stream event")
            delta = obj.get("delta")
            if isinstance(delta, dict):
                text = delta.get("text")
                if isinstance(text, str):
                    call.output_text.append(text)
            return True
        if name == "content_block_start":
            obj = _loads(ev.data)
            block = obj.get("content_block") if obj else None
            is_tool = isinstance(block, dict) and block.get("type") != "text"
            if is_tool or (obj and obj.get("index", 0) != 0):
                self.text_only = False
            return is_tool
        if name == "message_start":
            obj = _loads(ev.data)
            msg = obj.get("message") if obj else None
            if isinstance(msg, dict):
                model = msg.get("model")
                if isinstance(model, str):
                    call.served_model = model
                u = msg.get("usage")
                if isinstance(u, dict):
                    usage_from_anthropic(u, call.usage)
            return False
        if name == "message_delta":
            obj = _loads(ev.data)
            if obj:
                u = obj.get("usage")
                if isinstance(u, dict):
                    usage_from_anthropic(u, call.usage)
                d = obj.get("delta")
                if isinstance(d, dict) and isinstance(d.get("stop_reason"), str):
                    self.stop_reason = call.finish_reason = d["stop_reason"]
            return True
        if name == "message_stop":
            self.finished = True
            return True
        if name == "error":
            self.errored = True
            self.finished = True
            return True
        return False

    def _openai(self, ev: SSEEvent) -> bool:
        data = ev.data
        if data == b"[DONE]":
            self.finished = True
            return True
        obj = _loads(data)
        if obj is None:
            raise UpstreamProtocolError("upstream sent a malformed stream chunk")
        if obj.get("error"):
            self.errored = True
            self.finished = True
            return True
        call = self._call
        model = obj.get("model")
        if isinstance(model, str):
            call.served_model = model
        u = obj.get("usage")
        if isinstance(u, dict):
            usage_from_openai(u, call.usage)
        content = False
        for choice in obj.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                text = delta.get("content")
                if isinstance(text, str) and text:
                    call.output_text.append(text)
                    content = True
                if delta.get("tool_calls"):
                    content = True
            fr = choice.get("finish_reason")
            if isinstance(fr, str):
                self.stop_reason = call.finish_reason = fr
                content = True
        return content


def _loads(data: bytes) -> dict[str, Any] | None:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def error_event(fmt: Format, message: str, type_: str = "api_error") -> bytes:
    """An in-band stream error in the client's format: the stream never ends looking successful."""
    if fmt is Format.ANTHROPIC:
        body = {"type": "error", "error": {"type": type_, "message": message}}
        return encode_event(orjson.dumps(body), "error")
    return encode_event(
        orjson.dumps({"error": {"message": message, "type": type_, "code": "stream_error"}})
    )


Emit = Callable[[SSEEvent], list[bytes]]
Continuation = Callable[[str], Awaitable[UpstreamResponse | None]]
_PREAMBLE = frozenset({"message_start", "ping"})


class StreamRelay:
    """Relays one upstream stream to the client; primes until the first model output so
    a failure before then can still fail over."""

    __slots__ = (
        "_attempt",
        "_base_usage",
        "_call",
        "_continuation",
        "_decoder",
        "_emit",
        "_filter_state",
        "_idle",
        "_it",
        "_on_end",
        "_resp",
        "_skip_preamble",
        "_suppress_usage_chunk",
        "client_format",
        "watcher",
    )

    def __init__(
        self,
        call: Call,
        resp: UpstreamResponse,
        upstream_format: Format,
        *,
        emit: Emit | None,
        idle_timeout: float,
        on_end: Callable[[BaseException | None], Awaitable[None]],
        continuation: Continuation | None = None,
        attempt: Attempt | None = None,
    ) -> None:
        self._call = call
        self._attempt = attempt
        self._resp = resp
        self._it = resp.iter_chunks().__aiter__()
        self._decoder = SSEDecoder()
        self.watcher = StreamWatcher(call, upstream_format)
        self._emit = emit
        self._idle = idle_timeout
        self._on_end = on_end
        self.client_format = call.client_format
        self._continuation = continuation
        self._base_usage: Usage | None = None
        self._skip_preamble = False
        self._filter_state: dict[str, Any] = {}
        self._suppress_usage_chunk = (
            emit is None and upstream_format is Format.OPENAI and not call.include_usage
        )

    def adopt(self, call: Call) -> None:
        """Write into the winning call from now on (hedged attempts run on shadows)."""
        self._call = call
        self.watcher._call = call

    async def _next_events(self, timeout: float) -> list[SSEEvent] | None:
        """The next complete events (after output filters), or None at end of upstream body."""
        while True:
            try:
                async with asyncio.timeout(max(timeout, 0.0)):
                    chunk = await self._it.__anext__()
            except StopAsyncIteration:
                return None
            except TimeoutError:
                raise UpstreamTimeout(f"upstream stream silent for {timeout:.3g}s") from None
            events = self._decoder.feed(chunk)
            filters = self._call.output_filters
            if events and filters:
                try:
                    events = [
                        f
                        for ev in events
                        for f in filter_event(ev, self.watcher.fmt, filters, self._filter_state)
                    ]
                except orjson.JSONDecodeError:
                    raise UpstreamProtocolError("upstream sent a malformed stream event") from None
            if events:
                return events

    def _out(self, ev: SSEEvent) -> list[bytes]:
        if self._skip_preamble:
            # a continuation's own opening: the client already has the message and its text block
            if ev.event in _PREAMBLE:
                return []
            if ev.event == "content_block_start" and b'"index":0' in ev.data:
                return []
            if ev.event == "content_block_delta":
                self._skip_preamble = False
        if self._emit is not None:
            return self._emit(ev)
        if self._suppress_usage_chunk and b'"choices":[]' in ev.data and b'"usage"' in ev.data:
            return []
        return [ev.raw]

    async def prime(self, first_token_timeout: float) -> list[bytes]:
        """Read until the first model output (or the end); raise if the upstream fails before it."""
        out: list[bytes] = []
        deadline = time.monotonic() + first_token_timeout
        while True:
            events = await self._next_events(min(deadline, self._call.deadline) - time.monotonic())
            if events is None:
                raise UpstreamProtocolError("upstream stream ended before any output")
            got = False
            for ev in events:
                got = self.watcher.observe(ev) or got
                out.extend(self._out(ev))
            if self.watcher.errored:
                raise UpstreamProtocolError("upstream sent an error event before any output")
            if got:
                return out

    def _can_continue(self) -> bool:
        return (
            self._continuation is not None
            and self._base_usage is None  # at most one continuation per call
            and self._emit is None
            and self.client_format is Format.ANTHROPIC
            and self.watcher.text_only
            and self._call.remaining() > 1.0
        )

    async def _continue(self) -> bool:
        """Carry the answer on at a fallback from the partial text (assistant prefill)."""
        assert self._continuation is not None
        call = self._call
        try:
            resp = await self._continuation("".join(call.output_text))
        except UpstreamError:
            return False
        if resp is None:
            return False
        await self._resp.aclose()
        self._resp = resp
        # the cut attempt's usage stays unknown (settled at its reservation); the rest is the
        # continuation's own
        self._attempt = call.attempts[-1] if call.attempts else None
        self._it = resp.iter_chunks().__aiter__()
        self._decoder = SSEDecoder()
        self._base_usage = call.usage
        call.usage = Usage()
        self.watcher.finished = False
        self._skip_preamble = True
        call.flags["continued"] = True
        return True

    async def _relay(self) -> AsyncIterator[bytes]:
        call = self._call
        while not self.watcher.finished:
            timeout = min(self._idle, call.remaining())
            events = await self._next_events(timeout)
            if events is None:
                break
            # everything one upstream read completed goes out in one write: no extra latency,
            # one send instead of one per event
            out: list[bytes] = []
            try:
                for ev in events:
                    self.watcher.observe(ev)
                    out.extend(self._out(ev))
            finally:
                if out:
                    yield b"".join(out)
        if not self.watcher.finished:
            pending = " (partial event discarded)" if self._decoder.pending.strip() else ""
            raise UpstreamProtocolError("upstream stream ended before completion" + pending)

    async def run(self, first: list[bytes]) -> AsyncIterator[bytes]:
        """Yield the primed bytes, then every event as it completes; always end honestly."""
        call = self._call
        error: BaseException | None = None
        try:
            if call.first_byte is None:
                call.first_byte = time.monotonic()
            if first:
                yield b"".join(first)
            while True:
                try:
                    async for b in self._relay():
                        yield b
                    break
                except UpstreamError as exc:
                    call.flags["stream_cut"] = exc.message
                    if not (self._can_continue() and await self._continue()):
                        raise
            if self.watcher.errored:
                error = UpstreamError("upstream sent an error event mid-stream")
        except BastionError as exc:  # upstream broke, or an output guard withheld the rest
            error = exc
            call.flags["stream_error"] = exc.message
            yield error_event(
                self.client_format,
                exc.message,
                exc.anthropic_type if self.client_format is Format.ANTHROPIC else exc.openai_type,
            )
        except BaseException as exc:  # client went away (GeneratorExit) or cancelled
            error = exc
            call.status = 499
            call.flags["client_disconnected"] = True
            raise
        finally:
            call = self._call
            call.ended = time.monotonic()
            if self.watcher.finished and self._attempt is not None:
                self._attempt.usage = replace(call.usage)
            if not self.watcher.finished:
                # the final usage never came: bill at least what was streamed (~4 chars a token)
                streamed = sum(len(t) for t in call.output_text) // 4
                call.usage.output_tokens = max(call.usage.output_tokens, streamed)
            if self._base_usage is not None:
                base, u = self._base_usage, call.usage
                u.input_tokens += base.input_tokens
                u.output_tokens += base.output_tokens
                u.cache_read_tokens += base.cache_read_tokens
                u.cache_write_tokens += base.cache_write_tokens
            await self._resp.aclose()
            await self._on_end(error)

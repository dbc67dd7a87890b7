"""Relaying provider streams to the client, chunk by chunk, and never ending one dishonestly.

``StreamRelay`` forwards each event as soon as it is complete — raw on the fast path,
through a translator across formats — while a ``StreamWatcher`` (``watch``) takes text,
usage and the end from it. A stream that is cut or stalls after the client got text is
carried on at a fallback (``recovery``: prefill or restart, spliced onto the client's
message by ``translate``); otherwise it ends with an explicit error event naming the
failure class, never a clean end of a truncated answer. A malformed event is skipped
and counted, not fatal.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import replace
from functools import partial
from typing import Any

from .after_send import drain_and_close
from .call import Attempt, Call, Usage
from .dialects import Dialect, SpliceDiverged, Splicer, Wire, dialect_for, wire_for
from .dialects.base import Parsed, maybe_object
from .errors import (
    BastionError,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from .output import MalformedEvent, discard_held, filter_parsed
from .providers.base import UpstreamResponse
from .providers.sse import SSEDecoder, SSEEvent
from .recovery import CUT, DEADLINE, DIVERGED, RESET, STALLED, Continuation, stream_failure
from .watch import StreamWatcher

__all__ = ["Continuation", "Emit", "StreamRelay", "StreamWatcher", "error_event"]

log = logging.getLogger("bastion.streams")


def error_event(fmt: str | Dialect, message: str, type_: str = "api_error") -> bytes:
    """An in-band stream error in the client's format: the stream never ends looking successful."""
    return dialect_for(fmt).error_event(message, type_)


Emit = Callable[[SSEEvent], list[bytes]]
# what an OpenAI-compatible server that closes after finish_reason and usage left unsaid
_DONE: Parsed = (SSEEvent(raw=b"data: [DONE]\n\n", event=None, data=b"[DONE]"), None)


class StreamRelay:
    """Relays one upstream stream to the client; primes until the first model output so
    a failure before then can still fail over."""

    __slots__ = (
        "_attempt",
        "_base_usage",
        "_call",
        "_continuation",
        "_decoder",
        "_dog",
        "_emit",
        "_expired",
        "_filter_state",
        "_idle",
        "_it",
        "_on_end",
        "_read_until",
        "_reader",
        "_resp",
        "_splice",
        "_suppress_usage_chunk",
        "_view",
        "_withheld",
        "dialect",
        "watcher",
    )

    def __init__(
        self,
        call: Call,
        resp: UpstreamResponse,
        upstream_format: str | Wire,
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
        self.dialect = call.dialect
        self._continuation = continuation
        # what the client was sent, followed only when the stream could be carried on
        self._view = call.dialect.stream_view() if continuation is not None else None
        self._splice: Splicer | None = None
        self._base_usage: Usage | None = None
        self._filter_state: dict[str, Any] = {}
        # an output guard's refusal, raised once what the same read carried before it is out
        self._withheld: BastionError | None = None
        self._suppress_usage_chunk = (
            emit is None and self.watcher.wire.usage_on_request and not call.include_usage
        )
        # The idle bound of each read: one watchdog timer per relay (see ``_read``)
        self._read_until: float | None = None  # when the read in progress times out
        self._reader: asyncio.Task[Any] | None = None  # the task doing that read
        self._dog: asyncio.TimerHandle | None = None
        self._expired = False  # the watchdog cancelled the reader

    def adopt(self, call: Call) -> None:
        """Write into the winning call from now on (hedged attempts run on shadows)."""
        self._call = call
        self.watcher.adopt(call)

    async def _read(self, timeout: float) -> bytes | None:
        """The next body chunk, or None at its end; a failure is raised in fixed words.

        What the transport said goes to the log: the client learns the class of failure.
        """
        try:
            if timeout <= 0:  # already due: a chunk that is buffered is still taken, as before
                async with asyncio.timeout(0.0):
                    chunk: bytes = await self._it.__anext__()
                    return chunk
            return await self._read_watched(timeout)
        except StopAsyncIteration:
            return None
        except TimeoutError:
            raise UpstreamTimeout(DEADLINE if self._call.remaining() <= 0 else STALLED) from None
        except UpstreamError as exc:
            log.warning("upstream stream failed (call %s): %s", self._call.request_id, exc.message)
            if isinstance(exc, UpstreamTimeout):
                raise UpstreamTimeout(STALLED) from exc
            raise UpstreamConnectError(RESET) from exc
        except Exception as exc:  # a transport's own error that got past it
            log.warning("upstream stream failed (call %s): %r", self._call.request_id, exc)
            raise UpstreamConnectError(RESET) from exc

    async def _read_watched(self, timeout: float) -> bytes:
        """The next chunk, bounded by ``timeout`` without a timeout scope per chunk (a scope
        arms and cancels a timer on every read): the read notes its deadline, and one timer
        per relay, moved only when it fires early or a read is due sooner, cancels a read
        that is overdue. ``TimeoutError`` when it did, as ``asyncio.timeout`` would."""
        loop = asyncio.get_running_loop()
        until = loop.time() + timeout
        task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()
        self._read_until, self._reader = until, task
        dog = self._dog
        if dog is None or dog.when() > until:
            if dog is not None:
                dog.cancel()
            self._dog = loop.call_at(until, self._watch)
        try:
            chunk: bytes = await self._it.__anext__()
            return chunk
        except asyncio.CancelledError:
            if self._expired:
                self._expired = False
                if task.uncancel() <= cancelling:  # our cancel alone: the read timed out
                    raise TimeoutError from None
            raise
        finally:
            self._read_until = self._reader = None

    def _watch(self) -> None:
        """The watchdog: cancel the read in progress if it is overdue, else wait for it."""
        self._dog = None
        until, reader = self._read_until, self._reader
        if until is None or reader is None:
            return  # no read in progress: the next one arms the watchdog
        loop = asyncio.get_running_loop()
        if loop.time() >= until:
            # the reader is suspended in that read (the only await while it is noted), so
            # the cancellation lands there and nowhere else
            self._expired = True
            reader.cancel()
        else:
            self._dog = loop.call_at(until, self._watch)

    def _stop_watch(self) -> None:
        if self._dog is not None:
            self._dog.cancel()
            self._dog = None

    async def _next_events(self, timeout: float) -> list[Parsed] | None:
        """The next complete events (after output filters), or None at end of upstream body.

        Each event's data is parsed here, once: the filters and the watcher read that dict
        (an event a filter rewrote comes with the dict it was encoded from); an event passed
        on unchanged keeps its bytes as they came.

        An empty list: the upstream sent events, but the filters hold all of them back for now
        (the start of a word a PII filter must see whole): the upstream is not silent.
        """
        while True:
            if self._withheld is not None:
                raise self._withheld
            chunk = await self._read(timeout)
            if chunk is None:
                return None
            decoded = self._decoder.feed(chunk)
            if not decoded:
                continue
            events = [(ev, _parse(ev.data)) for ev in decoded]
            if self._call.output_filters:
                return self._filtered(events)
            return events

    def _filtered(self, events: list[Parsed]) -> list[Parsed]:
        """The events to pass on; an output guard's refusal is kept for the next read, so what
        came before it goes out first however the upstream's bytes were split into reads."""
        filters = self._call.output_filters
        out: list[Parsed] = []
        for ev, obj in events:
            try:
                out += filter_parsed(ev, obj, self.watcher.wire, filters, self._filter_state)
            except MalformedEvent:
                self._malformed()
            except BastionError as exc:
                self._withheld = exc
                break
        return out

    def _malformed(self) -> None:
        """An event that is not the JSON its format promises: skipped, counted, the stream goes on."""
        flags = self._call.flags
        flags["malformed_events"] = int(flags.get("malformed_events", 0)) + 1

    def _take(self, ev: SSEEvent, obj: dict[str, Any] | None, out: list[bytes]) -> bool:
        """Observe one event and add what the client gets of it; whether it carried output."""
        try:
            got = self.watcher.observe(ev, obj)
        except MalformedEvent:
            self._malformed()
            return False
        out += self._out(ev, obj)
        return got

    def _out(self, ev: SSEEvent, obj: dict[str, Any] | None) -> list[bytes]:
        if self._splice is not None:
            try:
                return self._splice.feed(ev)
            except SpliceDiverged as exc:
                log.info("stream of call %s not recovered: %s", self._call.request_id, exc)
                raise UpstreamProtocolError(DIVERGED) from None
        view = self._view
        if self._emit is not None:
            out = self._emit(ev)
            if view is not None:
                for b in out:
                    view.observe_raw(b)
            return out
        if self._suppress_usage_chunk and b'"usage"' in ev.data and _usage_only(ev.data, obj):
            return []  # Bastion asked for usage upstream; this client did not
        if view is not None:
            view.observe(ev.event, ev.data)
        return [ev.raw]

    async def prime(self, first_token_timeout: float) -> list[bytes]:
        """Read until the first model output (or the end); raise if the upstream fails before it.

        On a failure, what the output filters hold of this attempt is dropped: the next
        deployment's answer starts clean, never after an unseen tail of this one."""
        try:
            return await self._prime(first_token_timeout)
        except BaseException:
            self._stop_watch()
            discard_held(self._call.output_filters)
            self._filter_state = {}
            raise

    async def _prime(self, first_token_timeout: float) -> list[bytes]:
        out: list[bytes] = []
        deadline = time.monotonic() + first_token_timeout
        while True:
            timeout = min(deadline, self._call.deadline) - time.monotonic()
            try:
                events = await self._next_events(timeout)
                if events == []:
                    # output came but a filter holds it: from now on the upstream is judged as
                    # a stream that stalls (idle bound), not one that never spoke
                    deadline = time.monotonic() + self._idle_bound()
                    continue
            except UpstreamTimeout:
                # before the first byte the engine fails over; it reads the class from the words
                raise UpstreamTimeout(f"upstream stream silent for {timeout:.3g}s") from None
            if events is None:
                raise UpstreamProtocolError("upstream stream ended before any output")
            got = False
            for ev, obj in events:
                got = self._take(ev, obj, out) or got
            if self.watcher.errored:
                raise UpstreamProtocolError("upstream sent an error event before any output")
            if got:
                return out

    def _idle_bound(self) -> float:
        """How long a silent upstream is waited for: the idle timeout, and while a recovery is
        still possible at most half the deadline left, so a stall leaves the fallback time."""
        remaining = self._call.remaining()
        if self._continuation is not None and self._splice is None:
            return min(self._idle, remaining / 2)
        return min(self._idle, remaining)

    def _can_continue(self) -> bool:
        return (
            self._continuation is not None
            and self._splice is None  # at most one recovery per call
            and self._view is not None
            and self._view.ready
            and self.watcher.text_only
            and self._call.remaining() > 1.0
        )

    async def _recover(self) -> bool:
        """Carry the answer on at a fallback (prefill or restart), spliced onto the client's stream."""
        assert self._continuation is not None and self._view is not None
        call = self._call
        sent = "".join(call.output_text)
        # the cut part's final usage never came: count at least what was streamed (~4 chars a token)
        call.usage.output_tokens = max(call.usage.output_tokens, len(sent) // 4)
        try:
            got = await self._continuation(call, sent)
        except UpstreamError:
            return False
        if got is None:
            return False
        await self._resp.aclose()
        discard_held(call.output_filters)
        self._filter_state = {}
        self._resp = got.resp
        self._it = got.resp.iter_chunks().__aiter__()
        self._decoder = SSEDecoder()
        self._idle = got.idle_timeout
        # the cut attempt's usage stays unknown (settled at its reservation); the rest is the
        # fallback's own, and the client is told the sum
        self._attempt = got.attempt
        base = self._base_usage = call.usage
        call.usage = Usage()
        self.watcher = StreamWatcher(call, got.fmt, text=[])
        restart = got.mode == "restart"
        self._splice = call.dialect.splicer(
            wire_for(got.fmt),
            self._view,
            base=base,
            include_usage=call.include_usage,
            text=call.output_text,
            # a restart repeats the whole answer; a continuation may repeat the trailing white
            # space the prefill had to leave out
            expect=sent if restart else sent[len(sent.rstrip()) :],
            strict=restart,
            prefilled=0 if restart else base.output_tokens,
        )
        call.flags["recovered"] = got.mode
        call.flags["continued"] = True  # a carried-on stream is a complete answer (idempotency)
        return True

    async def _relay(self) -> AsyncIterator[bytes]:
        call = self._call
        while not self.watcher.finished:
            events = await self._next_events(self._idle_bound())
            if events is None:
                if not self.watcher.ended_cleanly:
                    break
                call.flags["upstream_no_done"] = True
                events = [_DONE]
            # everything one upstream read completed goes out in one write: no extra latency,
            # one send instead of one per event
            out: list[bytes] = []
            try:
                for ev, obj in events:
                    self._take(ev, obj, out)
            finally:
                if out:
                    yield b"".join(out)
        if not self.watcher.finished:
            if self._decoder.pending.strip():
                log.info("stream of call %s cut inside an event", call.request_id)
            raise UpstreamProtocolError(CUT)

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
                    call.flags.setdefault("stream_cut", stream_failure(exc))
                    if not (self._can_continue() and await self._recover()):
                        raise
            if self.watcher.errored:
                error = UpstreamError("upstream sent an error event mid-stream")
        except BastionError as exc:  # upstream broke, or an output guard withheld the rest
            error = exc
            message = stream_failure(exc)
            call.flags["stream_error"] = message
            yield self.dialect.error_event(message, self.dialect.error_type(exc))
        except BaseException as exc:  # client went away (GeneratorExit) or cancelled
            error = exc
            call.status = 499
            call.flags["client_disconnected"] = True
            raise
        finally:
            call = self._call
            call.ended = time.monotonic()
            w = self.watcher  # a usage asked for and never sent stays unknown (cost/meter.py)
            if w.finished and (w.usage_seen or not w.wire.usage_on_request) and self._attempt:
                self._attempt.usage = replace(call.usage)
            if not self.watcher.finished:
                # the final usage never came: bill at least what was streamed (~4 chars a token)
                streamed = sum(len(t) for t in self.watcher.text) // 4
                call.usage.output_tokens = max(call.usage.output_tokens, streamed)
            if self._base_usage is not None:
                base, u = self._base_usage, call.usage
                if self._splice is not None:  # with the cut part's input, if it had to be estimated
                    est = self._splice.base
                    base.input_tokens = est.input_tokens
                    base.cache_read_tokens, base.cache_write_tokens = (
                        est.cache_read,
                        est.cache_write,
                    )
                u.input_tokens += base.input_tokens
                u.output_tokens += base.output_tokens
                u.cache_read_tokens += base.cache_read_tokens
                u.cache_write_tokens += base.cache_write_tokens
            self._stop_watch()
            # a stream that ended cleanly has only the body's last bytes left upstream: read
            # after the response (the connection is then kept for the next call) when the
            # server runs work after it; else closed now
            after = call.after_send
            keep = after is not None and self.watcher.finished and error is None

            async def close_books() -> None:
                if not keep:
                    await self._resp.aclose()
                try:
                    await self._on_end(error)
                finally:  # the response is closed whatever settling did
                    if keep:
                        assert after is not None
                        after.defer(partial(drain_and_close, self._it, self._resp.aclose))

            await _uncancellable(close_books())


async def _uncancellable(work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` to its end even if the task awaiting it is cancelled meanwhile (a client
    that leaves right after the stream's last event: the server cancels the relay while the
    call is being settled and journaled, which then lost its record); the cancellation is
    re-raised once the work is done."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done() and task.cancelled():
                raise
            cancelled = True
    task.result()  # the work's own error, if any
    if cancelled:
        raise asyncio.CancelledError


def _parse(data: bytes) -> dict[str, Any] | None:
    """An event's data as a JSON object, or None (``[DONE]``, or not an object: whoever reads
    the event then finds it malformed itself)."""
    return None if data == b"[DONE]" else maybe_object(data)


def _usage_only(data: bytes, obj: dict[str, Any] | None) -> bool:
    """A usage chunk without choices (however the server spaced its JSON): the client's
    ``chunk.choices[0]`` would fail on it. ``obj``: its data parsed (None: parse it)."""
    if obj is None:
        obj = maybe_object(data)
    return obj is not None and isinstance(obj.get("usage"), dict) and not obj.get("choices")

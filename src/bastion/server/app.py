"""The ASGI application: routes, request limits, and errors in the caller's own API format.

Plain ASGI instead of a framework on the LLM routes: they are the hot path and
need exact control over when response headers go out (only once the first
upstream output is in, so failover can still happen) and over streaming.

Against a hostile client: the key is checked before the body is read (a bogus key
costs no memory), the body is read within a time limit, every write to the client
is bounded by the call's deadline (a client that stops reading is cut and its
upstream connection released), open streams are limited per key and per user, and
no header value goes out that the client could have shaped. Error bodies name the
failing component, never its address; the details go to the server log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from functools import partial
from typing import Any

import orjson

from ..after_send import AfterSend
from ..auth import key_from_headers
from ..call import Principal
from ..dialects import dialect_for
from ..eager import within
from ..embeddings import EmbeddingsApi
from ..engine import Reply, render_error
from ..errors import (
    BastionError,
    BodyTooLarge,
    HeadersTooLarge,
    InvalidRequest,
    NotFound,
    RequestTimeout,
    StateUnavailable,
    UpstreamError,
)
from ..gateway import Gateway
from ..identity import resolve_user
from ..providers.base import Format
from ..readiness import readiness
from ..reliability.concurrency import StreamLease, StreamLimits
from .body import read_body
from .headers import header_list
from .protocol import refusal_format
from .worker_metrics import WORKER_ONLY, WorkerPeers

log = logging.getLogger("bastion.server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

STREAM_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
]
JSON = [(b"content-type", b"application/json")]
CLOSE = {"connection": "close"}

_TAIL_S = 1.0  # a stream's last writes (final event, end) may run this far past the deadline
# request headers the gateway reads as numbers: plain ASCII, bounded (str.isdigit accepts "²",
# and int() refuses more than 4300 digits, both of which would otherwise be a 500)
_NUMERIC_HEADERS = {
    "x-bastion-stable-messages": re.compile(r"[0-9]{1,6}"),
    "x-bastion-retrieval-ms": re.compile(r"[0-9]{1,9}(\.[0-9]{1,6})?"),
}


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


async def _send_json(
    send: Send,
    status: int,
    body: bytes,
    headers: Mapping[str, str] | None = None,
    *,
    timeout: float = 30.0,
) -> None:
    hs = JSON + header_list(headers or {})
    try:
        await within(_send_whole(send, status, hs, body), timeout)
    except TimeoutError:
        await _abort(send)


async def _send_whole(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _abort(send: Send) -> None:
    """Drop the connection of a client that stopped reading (closing would wait to flush).

    Under uvicorn the transport is reached through the ``send`` callable; under another
    server, returning with the response incomplete makes the server close it.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    abort = getattr(transport, "abort", None)
    if callable(abort):
        abort()
        await asyncio.sleep(0)  # let the server see the connection gone before we return


def _check_numeric_headers(headers: Mapping[str, str]) -> None:
    for name, pattern in _NUMERIC_HEADERS.items():
        value = headers.get(name)
        if value and pattern.fullmatch(value) is None:
            raise InvalidRequest(f"header {name}: must be a plain non-negative number")


def _log_refusal(exc: BaseException, path: str) -> None:
    """What the client is not told (addresses, the underlying error) goes to the server log."""
    if isinstance(exc, StateUnavailable | UpstreamError) and exc.__cause__ is not None:
        log.warning("%s on %s: %s (%r)", type(exc).__name__, path, exc, exc.__cause__)


class BastionApp:
    """Routes requests to the gateway; lifespan opens and closes it."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        srv = gateway.config.server
        self._max_body = srv.max_body_bytes
        self._max_header_bytes = srv.max_header_bytes
        self._max_header_count = srv.max_header_count
        self._body_timeout = srv.body_timeout_seconds
        self._send_timeout = srv.send_timeout_seconds
        gateway.keys.stale = srv.key_stale_seconds  # the server's policy for store outages
        self.streams = StreamLimits(
            per_key=srv.max_concurrent_streams_per_key,
            per_user=srv.max_concurrent_streams_per_user,
        )
        self._routes: dict[tuple[str, str], Callable[[Scope, Receive, Send], Awaitable[None]]] = {
            ("POST", "/v1/messages"): self._anthropic,
            ("POST", "/v1/chat/completions"): self._openai,
            ("POST", "/v1/responses"): self._responses,
            ("POST", "/v1/embeddings"): self._embeddings,
            ("GET", "/v1/models"): self._models,
            ("POST", "/v1/messages/count_tokens"): self._count_tokens,
            ("GET", "/healthz"): self._healthz,
            ("GET", "/readyz"): self._readyz,
            ("GET", "/admin/kill"): self._admin_kill,
            ("POST", "/admin/kill"): self._admin_kill,
            ("GET", "/metrics"): self._metrics,
        }
        self._embedder = EmbeddingsApi(gateway)  # its guard chain is built once, here
        self.peers: WorkerPeers | None = None  # set when one of `serve --workers N`
        from .dashboard import dashboard_routes

        self._routes.update(dashboard_routes(gateway))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = scope["path"]
        if len(path) > 1 and path.endswith("/"):
            path = path[:-1]
        if not self._headers_fit(scope):
            # the server protocol refuses these first; this holds under any ASGI server
            big = HeadersTooLarge(
                f"request headers exceed the limit of {self._max_header_bytes} bytes "
                f"or {self._max_header_count} lines"
            )
            await self._error(scope, send, big, refusal_format(path), close=True)
            return
        handler = self._routes.get((scope["method"], path))
        if handler is None and scope["method"] == "GET" and path.startswith("/v1/models/"):
            handler = self._model
        if handler is None:
            err = NotFound(f"no route for {scope['method']} {path[:200]}")
            await self._error(scope, send, err, refusal_format(path))
            return
        await handler(scope, receive, send)

    def _headers_fit(self, scope: Scope) -> bool:
        hs = scope["headers"]
        if len(hs) > self._max_header_count:
            return False
        return sum(len(k) + len(v) for k, v in hs) <= self._max_header_bytes

    async def _error(
        self, scope: Scope, send: Send, exc: BaseException, fmt: Format, *, close: bool = False
    ) -> None:
        request_id = getattr(exc, "request_id", None)
        if request_id is None:
            # refused before it became a call (no key, no route): counted and logged here
            self.gateway.refusals.unauthenticated(scope["method"], scope["path"], exc)
        status, hs, body = render_error(exc, fmt)
        if request_id is not None:
            hs = {**hs, "x-request-id": request_id}
        await _send_json(
            send, status, body, {**hs, **CLOSE} if close else hs, timeout=self._send_timeout
        )

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                try:
                    await self.gateway.start()
                except Exception as exc:  # report start-up failure to the server
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await self.gateway.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _read_body(self, scope: Scope, receive: Receive, headers: dict[str, str]) -> bytes:
        cl = headers.get("content-length")
        if cl and cl.isascii() and cl.isdigit() and (len(cl) > 18 or int(cl) > self._max_body):
            raise BodyTooLarge(f"request body exceeds the limit of {self._max_body} bytes")
        try:
            # a body that came with its headers is read without arming a timer (eager.py)
            return await within(read_body(receive, self._max_body), self._body_timeout)
        except TimeoutError:
            raise RequestTimeout(
                f"request body not received within {self._body_timeout:g} seconds"
            ) from None

    async def _anthropic(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._llm(Format.ANTHROPIC, scope, receive, send)

    async def _openai(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._llm(Format.OPENAI, scope, receive, send)

    async def _responses(self, scope: Scope, receive: Receive, send: Send) -> None:
        from ..responses import ResponsesApi  # translated to chat, then the same path

        await self._llm(
            Format.OPENAI, scope, receive, send, handle=ResponsesApi(self.gateway).handle
        )

    async def _embeddings(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._llm(Format.OPENAI, scope, receive, send, handle=self._embedder.handle)

    async def _llm(
        self,
        fmt: Format,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        handle: Callable[..., Awaitable[Reply]] | None = None,
    ) -> None:
        headers = _headers(scope)
        # what the gateway defers until the response is out (after_send.py)
        after = AfterSend()
        if handle is None:
            run: Callable[..., Awaitable[Reply]] = partial(self.gateway.handle, after=after)
        else:
            run = handle
        lease: StreamLease | None = None

        def admit(body: dict[str, Any], principal: Principal) -> None:
            nonlocal lease
            if body.get("stream") is True:
                # the user the key decides (identity.py), scoped to the key: a claimed id that
                # the key may not make counts for nothing, so rotating it escapes no limit
                user, _ = resolve_user(principal, fmt, body, headers, end_user_caps=False)
                subject = f"{principal.key_id}/{user}" if user else None
                lease = self.streams.acquire(principal.key_id, subject)

        try:
            principal: Principal | None = None
            received = time.monotonic()
            try:
                # the key first: a caller without one costs a header lookup, not a body in memory
                principal = await self.gateway.keys.resolve(key_from_headers(headers))
                _check_numeric_headers(headers)
                raw = await self._read_body(scope, receive, headers)
                reply = await run(fmt, raw, headers, principal=principal, admit=admit)
            except ConnectionAbortedError:
                if lease is not None:
                    lease.release()
                return
            except Exception as exc:
                if lease is not None:
                    lease.release()
                if not isinstance(exc, BastionError):
                    log.exception("unhandled error on %s", scope["path"])
                elif principal is not None and exc.request_id is None:
                    # a caller with a key whose body never arrived whole (413, 408): on the record
                    exc.request_id = await self.gateway.refusals.refused(
                        fmt, exc, principal, None, headers, received, None
                    )
                _log_refusal(exc, scope["path"])
                # a body still trickling in would hold the connection: close it (a body that is
                # merely too large is drained by the server, so its sender still reads the 413)
                await self._error(scope, send, exc, fmt, close=isinstance(exc, RequestTimeout))
                return
            if reply.stream is None and lease is not None:
                lease.release()  # answered without a stream after all (an idempotent replay, say)
                lease = None
            try:
                await self._send_reply(
                    reply, send, receive, ended=lease.release if lease is not None else None
                )
            finally:
                if lease is not None:
                    lease.release()
        finally:
            # the client has its answer (or is gone): the call's deferred after-phase runs now
            await after.run()

    def _write_timeout(self, reply: Reply) -> float:
        """How long one write may wait on the client: within the call's deadline, and never long."""
        if reply.call is None or not reply.call.deadline:
            return self._send_timeout
        return min(self._send_timeout, max(reply.call.remaining(), _TAIL_S))

    async def _send_reply(
        self,
        reply: Reply,
        send: Send,
        receive: Receive,
        *,
        ended: Callable[[], None] | None = None,
    ) -> None:
        """Send the reply; for a stream, ``ended`` runs once its last event is out and the
        relay has finished, before the closing write: the client may start its next stream
        as soon as it sees the end, and under load the task's own wind-down can take longer
        than that. The call's after-phase (settling, recording) runs after this returns
        (``_llm``), except for callers that finish before they reply (library, idempotent)."""
        extra = header_list(reply.headers)
        if reply.stream is None:
            try:
                # a write into an unpaused transport never waits: no timer then (eager.py)
                await within(
                    _send_whole(send, reply.status, JSON + extra, reply.body or b""),
                    self._write_timeout(reply),
                )
            except TimeoutError:
                await _abort(send)
            return
        stream = reply.stream
        stalled = False
        loop = asyncio.get_running_loop()
        # When the write in progress must have finished (None: no write in progress). One
        # watchdog timer per stream enforces it instead of a timeout scope per chunk (a
        # scope costs a timer and a cancel on every write; nearly every write never waits).
        until: float | None = None
        timer: asyncio.TimerHandle | None = None
        # _write_timeout per chunk, without a method call and the lookups it repeats
        send_timeout = self._send_timeout
        deadline = reply.call.deadline if reply.call is not None else 0.0
        clock = time.monotonic

        async def write(msg: Message) -> None:
            nonlocal until
            until = loop.time() + (
                min(send_timeout, max(deadline - clock(), _TAIL_S)) if deadline else send_timeout
            )
            try:
                await send(msg)
            finally:  # a failed write must not leave the relay's clean-up under the watchdog
                until = None

        def watchdog() -> None:
            nonlocal stalled, timer
            if sender.done():
                return
            now = loop.time()
            if until is not None and now >= until:
                stalled = True  # the client stopped reading: cut it, release the upstream
                sender.cancel()
                return
            # a write that starts later can expire no sooner than one starting now would
            timer = loop.call_at(
                until if until is not None else now + self._write_timeout(reply), watchdog
            )

        async def pump() -> None:
            try:
                # start the stream before anything can fail: only a started generator runs its
                # cleanup on close (closing the upstream response, settling the budget)
                first = await anext(stream, None)
                await write(
                    {
                        "type": "http.response.start",
                        "status": reply.status,
                        "headers": STREAM_HEADERS + extra,
                    }
                )
                if first is not None:
                    await write({"type": "http.response.body", "body": first, "more_body": True})
                    async for chunk in stream:
                        await write(
                            {"type": "http.response.body", "body": chunk, "more_body": True}
                        )
                if ended is not None:
                    ended()
                await write({"type": "http.response.body", "body": b""})
            except OSError:
                pass  # client went away mid-send
            finally:
                await _aclose(stream)

        # A server may not raise on send after the client left, so watch for the disconnect:
        # it cancels the relay at once, closing the upstream and settling the budget.
        sender = asyncio.ensure_future(pump())
        timer = loop.call_at(loop.time() + self._write_timeout(reply), watchdog)
        watcher = asyncio.ensure_future(_until_disconnect(receive))
        try:
            await asyncio.wait({sender, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if timer is not None:
                timer.cancel()
            for t in (watcher, sender):
                if not t.done():
                    t.cancel()
            for t in (watcher, sender):
                with contextlib.suppress(asyncio.CancelledError):
                    await t
        if stalled:
            log.warning("cut a client that stopped reading its stream")
            await _abort(send)

    async def _models(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = _headers(scope)
        fmt = Format.ANTHROPIC if "anthropic-version" in headers else Format.OPENAI
        try:
            await self.gateway.keys.resolve(key_from_headers(headers))
        except BastionError as exc:
            _log_refusal(exc, scope["path"])
            await self._error(scope, send, exc, fmt)
            return
        payload = dialect_for(fmt).model_list(self.gateway.router.aliases())
        await _send_json(send, 200, orjson.dumps(payload), timeout=self._send_timeout)

    async def _model(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``GET /v1/models/{id}`` in each format's shape; 404 for a model not configured."""
        headers = _headers(scope)
        fmt = Format.ANTHROPIC if "anthropic-version" in headers else Format.OPENAI
        model = scope["path"].removeprefix("/v1/models/").rstrip("/")
        try:
            await self.gateway.keys.resolve(key_from_headers(headers))
            if model not in self.gateway.router.aliases():
                raise NotFound(f"model {model[:200]!r} is not configured on this gateway")
        except BastionError as exc:
            _log_refusal(exc, scope["path"])
            await self._error(scope, send, exc, fmt)
            return
        obj = dialect_for(fmt).model_object(model)
        await _send_json(send, 200, orjson.dumps(obj), timeout=self._send_timeout)

    async def _count_tokens(self, scope: Scope, receive: Receive, send: Send) -> None:
        from ..count_tokens import count_tokens

        headers = _headers(scope)
        try:
            await self.gateway.keys.resolve(key_from_headers(headers))  # before reading the body
            raw = await self._read_body(scope, receive, headers)
            status, hs, body = await count_tokens(self.gateway.router, raw, headers)
        except ConnectionAbortedError:
            return
        except BastionError as exc:
            _log_refusal(exc, scope["path"])
            await self._error(scope, send, exc, Format.ANTHROPIC)
            return
        await _send_json(send, status, body, hs, timeout=self._send_timeout)

    async def _admin_kill(self, scope: Scope, receive: Receive, send: Send) -> None:
        from .admin import admin_principal, kill_status, kill_toggle

        headers = _headers(scope)
        try:
            principal = await admin_principal(self.gateway, headers)  # before reading any body
            raw = await self._read_body(scope, receive, headers)
            if scope["method"] == "POST":
                result = await kill_toggle(self.gateway, principal, raw)
            else:
                result = await kill_status(self.gateway)
        except ConnectionAbortedError:
            return
        except BastionError as exc:
            _log_refusal(exc, scope["path"])
            await self._error(
                scope, send, exc, Format.OPENAI, close=isinstance(exc, RequestTimeout)
            )
            return
        await _send_json(send, 200, orjson.dumps(result), timeout=self._send_timeout)

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Prometheus scrape, behind the admin key unless configured open (spend is sensitive)."""
        from ..observability.metrics import render_metrics

        headers = _headers(scope)
        if self.gateway.config.observability.metrics_require_admin:
            from .admin import admin_principal

            try:
                await admin_principal(self.gateway, headers)
            except BastionError as exc:
                _log_refusal(exc, scope["path"])
                await self._error(scope, send, exc, Format.OPENAI)
                return
        await self.gateway.metrics.refresh()
        if self.peers is not None and WORKER_ONLY not in headers:
            own, _ = render_metrics(self.gateway.metrics, "text/plain")
            body, ctype = await self.peers.gather(own, headers)  # every worker's, labelled
        else:
            body, ctype = render_metrics(self.gateway.metrics, headers.get("accept"))
        start = {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", ctype.encode())],
        }
        try:
            async with asyncio.timeout(self._send_timeout):
                await send(start)
                await send({"type": "http.response.body", "body": body})
        except TimeoutError:
            await _abort(send)

    async def _healthz(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _send_json(send, 200, b'{"status":"ok"}', timeout=self._send_timeout)

    async def _readyz(self, scope: Scope, receive: Receive, send: Send) -> None:
        ready = await readiness(
            self.gateway.store,
            {name: (ep.kind, ep.api_key) for name, ep in self.gateway.endpoints.items()},
        )
        if ready.store_error is not None:
            exc = ready.store_error
            # the error names the store's address: it goes to the log, the probe gets the verdict
            log.warning("readiness: record store unreachable: %s (%r)", exc, exc.__cause__)
        body = orjson.dumps({"status": ready.status, "checks": ready.checks})
        await _send_json(send, 200 if ready.ok else 503, body, timeout=self._send_timeout)


async def _aclose(stream: AsyncIterator[bytes]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


def create_app(gateway: Gateway) -> BastionApp:
    return BastionApp(gateway)

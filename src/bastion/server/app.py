"""The ASGI application: routes, body limits, and errors in the caller's own API format.

Plain ASGI instead of a framework on the LLM routes: they are the hot path and
need exact control over when response headers go out (only once the first
upstream output is in, so failover can still happen) and over streaming.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from ..engine import Reply, render_error
from ..errors import BastionError, BodyTooLarge, NotFound
from ..gateway import Gateway
from ..providers.base import Format

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


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


async def _send_json(
    send: Send, status: int, body: bytes, headers: dict[str, str] | None = None
) -> None:
    hs = list(JSON)
    if headers:
        hs.extend(
            (k.encode("latin-1"), v.encode("latin-1"))
            for k, v in headers.items()
            if k != "content-type"
        )
    await send({"type": "http.response.start", "status": status, "headers": hs})
    await send({"type": "http.response.body", "body": body})


class BastionApp:
    """Routes requests to the gateway; lifespan opens and closes it."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._max_body = gateway.config.server.max_body_bytes
        self._routes: dict[tuple[str, str], Callable[[Scope, Receive, Send], Awaitable[None]]] = {
            ("POST", "/v1/messages"): self._anthropic,
            ("POST", "/v1/chat/completions"): self._openai,
            ("GET", "/v1/models"): self._models,
            ("GET", "/healthz"): self._healthz,
            ("GET", "/readyz"): self._readyz,
            ("GET", "/admin/kill"): self._admin_kill,
            ("POST", "/admin/kill"): self._admin_kill,
            ("GET", "/metrics"): self._metrics,
        }
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
        handler = self._routes.get((scope["method"], path))
        if handler is None:
            fmt = Format.ANTHROPIC if path.startswith("/v1/messages") else Format.OPENAI
            err = NotFound(f"no route for {scope['method']} {path}")
            await _send_json(send, 404, err.render(fmt.value))
            return
        await handler(scope, receive, send)

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
        if cl and cl.isdigit() and int(cl) > self._max_body:
            raise BodyTooLarge(f"request body exceeds the limit of {self._max_body} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                raise ConnectionAbortedError("client disconnected while sending the body")
            chunk = msg.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > self._max_body:
                    raise BodyTooLarge(f"request body exceeds the limit of {self._max_body} bytes")
                chunks.append(chunk)
            if not msg.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _anthropic(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._llm(Format.ANTHROPIC, scope, receive, send)

    async def _openai(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._llm(Format.OPENAI, scope, receive, send)

    async def _llm(self, fmt: Format, scope: Scope, receive: Receive, send: Send) -> None:
        headers = _headers(scope)
        try:
            raw = await self._read_body(scope, receive, headers)
            reply = await self.gateway.handle(fmt, raw, headers)
        except ConnectionAbortedError:
            return
        except BastionError as exc:
            status, hs, body = render_error(exc, fmt)
            await _send_json(send, status, body, hs)
            return
        except Exception as exc:
            log.exception("unhandled error on %s", scope["path"])
            status, hs, body = render_error(exc, fmt)
            await _send_json(send, status, body, hs)
            return
        await self._send_reply(reply, send, receive)

    async def _send_reply(self, reply: Reply, send: Send, receive: Receive) -> None:
        extra = [
            (k.encode("latin-1"), v.encode("latin-1"))
            for k, v in reply.headers.items()
            if k != "content-type"
        ]
        if reply.stream is None:
            await send(
                {"type": "http.response.start", "status": reply.status, "headers": JSON + extra}
            )
            await send({"type": "http.response.body", "body": reply.body or b""})
            return
        stream = reply.stream

        async def pump() -> None:
            try:
                await send(
                    {
                        "type": "http.response.start",
                        "status": reply.status,
                        "headers": STREAM_HEADERS + extra,
                    }
                )
                async for chunk in stream:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
            except OSError:
                pass  # client went away mid-send
            finally:
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    await aclose()

        # A server may not raise on send after the client left, so watch for the disconnect:
        # it cancels the relay at once, closing the upstream and settling the budget.
        sender = asyncio.ensure_future(pump())
        watcher = asyncio.ensure_future(_until_disconnect(receive))
        try:
            await asyncio.wait({sender, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (watcher, sender):
                if not t.done():
                    t.cancel()
            for t in (watcher, sender):
                with contextlib.suppress(asyncio.CancelledError):
                    await t

    async def _models(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = _headers(scope)
        anthropic = "anthropic-version" in headers
        fmt = Format.ANTHROPIC if anthropic else Format.OPENAI
        try:
            from ..auth import key_from_headers

            await self.gateway.keys.resolve(key_from_headers(headers))
        except BastionError as exc:
            status, hs, body = render_error(exc, fmt)
            await _send_json(send, status, body, hs)
            return
        names = self.gateway.router.aliases()
        if anthropic:
            data: list[dict[str, Any]] = [
                {"id": n, "type": "model", "display_name": n, "created_at": "2025-01-01T00:00:00Z"}
                for n in names
            ]
            payload: dict[str, Any] = {
                "data": data,
                "has_more": False,
                "first_id": names[0] if names else None,
                "last_id": names[-1] if names else None,
            }
        else:
            payload = {
                "object": "list",
                "data": [
                    {"id": n, "object": "model", "created": 0, "owned_by": "bastion"} for n in names
                ],
            }
        await _send_json(send, 200, orjson.dumps(payload))

    async def _admin_kill(self, scope: Scope, receive: Receive, send: Send) -> None:
        from .admin import admin_principal, kill_status, kill_toggle

        headers = _headers(scope)
        try:
            raw = await self._read_body(scope, receive, headers)
            principal = await admin_principal(self.gateway, headers)
            if scope["method"] == "POST":
                result = await kill_toggle(self.gateway, principal, raw)
            else:
                result = await kill_status(self.gateway)
        except ConnectionAbortedError:
            return
        except BastionError as exc:
            status, hs, body = render_error(exc, Format.OPENAI)
            await _send_json(send, status, body, hs)
            return
        await _send_json(send, 200, orjson.dumps(result))

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Prometheus scrape; optionally behind the admin key (spend is sensitive)."""
        from ..observability.metrics import render_metrics

        headers = _headers(scope)
        if self.gateway.config.observability.metrics_require_admin:
            from .admin import admin_principal

            try:
                await admin_principal(self.gateway, headers)
            except BastionError as exc:
                status, hs, body = render_error(exc, Format.OPENAI)
                await _send_json(send, status, body, hs)
                return
        await self.gateway.metrics.refresh()
        body, ctype = render_metrics(self.gateway.metrics, headers.get("accept"))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", ctype.encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _healthz(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _send_json(send, 200, b'{"status":"ok"}')

    async def _readyz(self, scope: Scope, receive: Receive, send: Send) -> None:
        checks: dict[str, Any] = {}
        ok = True
        t0 = time.monotonic()
        try:
            await self.gateway.store.ping()
            checks["store"] = {"ok": True, "ms": round((time.monotonic() - t0) * 1000, 2)}
        except Exception as exc:
            ok = False
            checks["store"] = {"ok": False, "error": str(exc)}
        providers = {}
        for name, ep in self.gateway.endpoints.items():
            configured = ep.kind == "sim" or bool(ep.api_key) or ep.kind == "openai-compatible"
            providers[name] = {"kind": ep.kind, "configured": configured}
            ok = ok and configured
        checks["providers"] = providers
        body = orjson.dumps({"status": "ready" if ok else "not_ready", "checks": checks})
        await _send_json(send, 200 if ok else 503, body)


def create_app(gateway: Gateway) -> BastionApp:
    return BastionApp(gateway)

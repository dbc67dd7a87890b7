"""The simulator over HTTP: a raw ASGI app (no framework, nothing buffered) and ``serve``.

Raw ASGI because the simulator must do what frameworks hide: drop a connection
mid-body, or reset it before any header. Under uvicorn (what ``serve`` runs) the
app reaches the connection's transport through the ``send`` callable: ``reset``
aborts it with an RST, ``cut_after`` closes it without the final chunk, so clients
see exactly what a failing provider would show them. Under another server it
raises instead, and that server drops the connection (or answers 500 when no
header was sent yet). Extra routes: ``GET /healthz``, ``GET /_sim/requests``,
``POST /_sim/reset``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from .core import Simulator
from .result import SimCut, SimReset

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_DISCONNECT_GRACE_S = 1.0


def create_app(sim: Simulator) -> ASGIApp:
    """An ASGI app answering with ``sim`` (all state stays on the simulator)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = await _read_body(receive)
        method: str = scope["method"]
        path: str = scope["path"]
        if path == "/healthz":
            await _json(send, 200, {"status": "ok"})
            return
        if path == "/_sim/requests":
            await _json(send, 200, sim.requests)
            return
        if path == "/_sim/reset" and method == "POST":
            sim.reset()
            await _json(send, 200, {"reset": True})
            return
        query = scope.get("query_string", b"")
        if query:
            path += "?" + query.decode("latin-1")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        work = asyncio.ensure_future(_answer(sim, method, path, headers, body, send))
        watch = asyncio.ensure_future(_until_disconnect(receive))
        try:
            await asyncio.wait((work, watch), return_when=asyncio.FIRST_COMPLETED)
            if work.done() and work.result():
                # The connection was dropped on purpose: let the server see it gone first.
                await asyncio.wait((watch,), timeout=_DISCONNECT_GRACE_S)
        finally:
            for task in (work, watch):
                task.cancel()
            await asyncio.gather(work, watch, return_exceptions=True)

    return app


async def _answer(
    sim: Simulator, method: str, path: str, headers: dict[str, str], body: bytes, send: Send
) -> bool:
    """Send the simulator's answer; True when the connection was dropped on purpose."""
    try:
        result = await sim.handle(method, path, headers, body)
    except SimReset:
        if await _drop(send, hard=True):
            return True
        raise
    start = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in result.headers.items()]
    await send({"type": "http.response.start", "status": result.status, "headers": start})
    try:
        async for chunk in result.body:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except SimCut:
        if await _drop(send, hard=False):
            return True
        raise
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    return False


async def _drop(send: Send, *, hard: bool) -> bool:
    """Close (or with ``hard``, reset) the connection under uvicorn; False if unreachable."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None or not hasattr(transport, "abort"):
        return False
    if hard:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError, TypeError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    else:
        transport.close()
    return True


async def _until_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _read_body(receive: Receive) -> bytes:
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(parts)


async def _json(send: Send, status: int, payload: Any) -> None:
    data = orjson.dumps(payload)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data, "more_body": False})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def server_config(sim: Simulator, host: str = "127.0.0.1", port: int = 8790) -> Any:
    """The uvicorn config ``serve`` uses (uvloop, httptools, no access log, 1 s drain)."""
    import uvicorn

    return uvicorn.Config(
        create_app(sim),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
        # silence and stall_after hold their connections forever, by design: without a bound,
        # a SIGTERM would wait for them forever too (uvicorn's default)
        timeout_graceful_shutdown=1,
    )


def serve(host: str = "127.0.0.1", port: int = 8790, **options: Any) -> None:
    """Run a simulator over HTTP until interrupted; ``options`` go to ``Simulator``."""
    import uvicorn

    uvicorn.Server(server_config(Simulator(**options), host, port)).run()

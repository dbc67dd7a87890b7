"""A pass-through HTTP/1.1 proxy on a raw asyncio Protocol: the floor of Python on this box.

No ASGI server and no framework: one ``asyncio.Protocol`` per client connection on a uvloop
loop, requests parsed by httptools (the parser uvicorn uses), answered in order on each
keep-alive connection. Two upstream clients (``--client``):

- ``aiohttp``: one pooled ``aiohttp.ClientSession``, as ``bare_proxy.py`` and Bastion use, so
  the difference from the uvicorn proxy is the server loop alone;
- ``raw``: a minimal keep-alive HTTP/1.1 client, a pool of ``asyncio.Protocol`` connections
  whose responses httptools parses; a body chunk the upstream sends is written to the client's
  transport from the parser callback, with no task, queue or copy in between.

Each request goes to ``--upstream`` with its method, path, query, headers (minus hop-by-hop
ones) and body. A reply with a ``content-length`` is read whole and sent with its length; any
other (an SSE stream, a chunked reply) is relayed chunk by chunk as it arrives, chunked. The
body bytes are the upstream's, unchanged; so are its headers, minus hop-by-hop ones. A client
that reads slowly pauses the upstream connection (``pause_writing`` -> ``pause_reading``).
An upstream that cannot be reached is a 502; one that fails mid-reply closes the client's
connection, so a cut reply never reads as complete. No limits on header size or time (what
``src/bastion/server/protocol.py`` adds to uvicorn): a measurement, not a server to expose.

    .venv/bin/python bench/raw_proxy.py --port 9200 --upstream http://127.0.0.1:9100 [--client raw]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import aiohttp
import httptools

# Not forwarded in either direction: connection-level headers and the framing we set ourselves.
HOP_BY_HOP = frozenset(
    {
        b"host",
        b"connection",
        b"keep-alive",
        b"content-length",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
        b"proxy-connection",
    }
)
IDLE_S = 4.0  # an idle upstream connection older than this is closed, not reused
ERROR_BODY = {400: b'{"error": "bad request"}', 502: b'{"error": "upstream unreachable"}'}

__all__ = [
    "HOP_BY_HOP",
    "Request",
    "chunk",
    "main",
    "request_head",
    "response_head",
]


@dataclass(slots=True)
class Request:
    method: bytes
    target: bytes  # path and query, as received
    headers: list[tuple[bytes, bytes]]  # hop-by-hop ones already dropped
    body: bytes
    keep_alive: bool


def request_head(req: Request, host: bytes) -> bytes:
    """The request line and headers the raw client sends upstream (always with a length)."""
    lines = [b"%s %s HTTP/1.1\r\nhost: %s\r\n" % (req.method, req.target, host)]
    lines += [k + b": " + v + b"\r\n" for k, v in req.headers]
    lines.append(b"content-length: %d\r\n\r\n" % len(req.body))
    return b"".join(lines)


def response_head(
    status: int,
    reason: bytes,
    headers: list[tuple[bytes, bytes]],
    length: int | None,
    keep_alive: bool,
) -> bytes:
    """The status line and headers sent to the client: ``length`` None means chunked."""
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason or b"-")]
    lines += [k + b": " + v + b"\r\n" for k, v in headers]
    lines.append(
        b"transfer-encoding: chunked\r\n" if length is None else b"content-length: %d\r\n" % length
    )
    if not keep_alive:
        lines.append(b"connection: close\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (an empty ``data`` would end the body, so callers skip it)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def relayed(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in headers if k.lower() not in HOP_BY_HOP]


# -- the server side -------------------------------------------------------------------------


class Downstream(asyncio.Protocol):
    """One client connection: parse requests, hand them to the relay one at a time, in order."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.pending: deque[Request] = deque()
        self.busy = False
        self.closed = False
        self.paused: asyncio.Transport | None = None  # the upstream we stopped reading
        self.writable: asyncio.Future[None] | None = None
        self.on_lost: Callable[[], None] | None = None
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.fail(400)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pending.clear()
        if self.on_lost is not None:
            self.on_lost()
        self.resume_writing()

    def pause_writing(self) -> None:
        loop = asyncio.get_running_loop()
        self.writable = loop.create_future()

    def resume_writing(self) -> None:
        if self.paused is not None:
            self.paused.resume_reading()
            self.paused = None
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)
        self.writable = None

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._body = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self.pending.append(
            Request(
                self.parser.get_method(),
                self._url,
                relayed(self._headers),
                b"".join(self._body),
                self.parser.should_keep_alive(),
            )
        )
        if not self.busy:
            self.next()

    # what a relay calls
    def next(self) -> None:
        """Start the next request waiting on this connection, if any."""
        self.on_lost = None
        if self.closed or not self.pending:
            self.busy = False
            return
        self.busy = True
        self.relay.start(self, self.pending.popleft())

    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def finished(self, keep_alive: bool) -> None:
        if not keep_alive:
            self.close()
        else:
            self.next()

    def fail(self, status: int) -> None:
        """Answer ``status`` with a short JSON body, then close the connection."""
        body = ERROR_BODY[status]
        json = [(b"content-type", b"application/json")]
        self.write(response_head(status, b"Error", json, len(body), False) + body)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """A reply cut mid-way: drop the connection, so the client never reads it as complete."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def hold(self, upstream: asyncio.Transport) -> None:
        """Stop reading ``upstream`` until this client's transport drains."""
        if self.writable is not None and self.paused is None:
            upstream.pause_reading()
            self.paused = upstream


class Relay:
    """Forwards one request to the upstream and its reply to the client; ``start`` per request."""

    def start(self, down: Downstream, req: Request) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


# -- aiohttp client ---------------------------------------------------------------------------


class AiohttpRelay(Relay):
    def __init__(self, upstream: str) -> None:
        self.base = upstream.rstrip("/")
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=IDLE_S),
            timeout=aiohttp.ClientTimeout(total=None, connect=5.0),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        )

    def start(self, down: Downstream, req: Request) -> None:
        task = asyncio.get_running_loop().create_task(self._run(down, req))
        down.on_lost = task.cancel

    async def _run(self, down: Downstream, req: Request) -> None:
        url = self.base + req.target.decode("latin-1")
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in req.headers]
        try:
            resp = await self.session.request(
                req.method.decode("latin-1"), url, data=req.body, headers=headers
            )
        except (aiohttp.ClientError, OSError):
            down.fail(502)
            return
        try:
            async with resp:
                out = relayed(list(resp.raw_headers))
                reason = (resp.reason or "").encode("latin-1")
                if resp.headers.get("content-length") is None:
                    down.write(response_head(resp.status, reason, out, None, req.keep_alive))
                    async for data in resp.content.iter_any():
                        down.write(chunk(data))
                        if down.writable is not None:
                            await down.writable
                    down.write(b"0\r\n\r\n")
                else:
                    body = await resp.read()
                    head = response_head(resp.status, reason, out, len(body), req.keep_alive)
                    down.write(head + body)
        except (aiohttp.ClientError, OSError):
            down.abort()
            return
        down.finished(req.keep_alive)

    async def aclose(self) -> None:
        await self.session.close()


# -- raw client --------------------------------------------------------------------------------


class Upstream(asyncio.Protocol):
    """One keep-alive connection to the upstream, carrying one request at a time."""

    def __init__(self, relay: RawRelay) -> None:
        self.relay = relay
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.down: Downstream | None = None
        self.req: Request | None = None
        self.closed = False
        self.idle_since = 0.0
        self.reused = False
        self.got = False  # any byte of the current reply received
        self._reason = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._streaming = False

    def send(self, down: Downstream, req: Request) -> None:
        assert self.transport is not None
        self.down, self.req, self.got = down, req, False
        down.on_lost = self.cancel
        self.transport.write(request_head(req, self.relay.host) + req.body)

    def cancel(self) -> None:
        """The client went away mid-reply: this connection's state is unknown, so close it."""
        self.down = None
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.got = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        down, req, self.down = self.down, self.req, None
        if down is None or req is None:
            return
        if self.reused and not self.got:  # the upstream closed an idle connection as we used it
            self.relay.start(down, req, retry=False)
        elif self._streaming:
            down.abort()
        else:
            down.fail(502)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._reason = b""
        self._headers = []
        self._body = []
        self._streaming = False

    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._streaming = not any(k.lower() == b"content-length" for k, _ in self._headers)
        if self._streaming and self.down is not None and self.req is not None:
            self.down.write(
                response_head(
                    self.parser.get_status_code(),
                    self._reason,
                    relayed(self._headers),
                    None,
                    self.req.keep_alive,
                )
            )

    def on_body(self, body: bytes) -> None:
        down = self.down
        if not self._streaming:
            self._body.append(body)
        elif down is not None:
            down.write(chunk(body))
            if self.transport is not None:
                down.hold(self.transport)

    def on_message_complete(self) -> None:
        down, req, self.down = self.down, self.req, None
        if down is None or req is None:
            return
        if self._streaming:
            down.write(b"0\r\n\r\n")
        else:
            body = b"".join(self._body)
            down.write(
                response_head(
                    self.parser.get_status_code(),
                    self._reason,
                    relayed(self._headers),
                    len(body),
                    req.keep_alive,
                )
                + body
            )
        if self.parser.should_keep_alive() and not self.closed:
            self.relay.release(self)
        else:
            self.close()
        down.finished(req.keep_alive)


class RawRelay(Relay):
    def __init__(self, upstream: str) -> None:
        u = urlsplit(upstream)
        if u.scheme != "http" or u.hostname is None:
            raise ValueError(f"--upstream must be http://HOST:PORT, got {upstream!r}")
        self.addr = (u.hostname, u.port or 80)
        self.host = u.netloc.encode("latin-1")
        self.idle: list[Upstream] = []

    def start(self, down: Downstream, req: Request, *, retry: bool = True) -> None:
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed and now - conn.idle_since < IDLE_S:
                conn.reused = retry
                conn.send(down, req)
                return
            conn.close()
        task = asyncio.get_running_loop().create_task(self._connect(down, req))
        down.on_lost = task.cancel

    async def _connect(self, down: Downstream, req: Request) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(lambda: Upstream(self), *self.addr)
        except OSError:
            down.fail(502)
            return
        conn.send(down, req)

    def release(self, conn: Upstream) -> None:
        conn.idle_since = time.monotonic()
        conn.reused = False
        self.idle.append(conn)

    async def aclose(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()


RELAYS: dict[str, Callable[[str], Relay]] = {"aiohttp": AiohttpRelay, "raw": RawRelay}


async def serve(host: str, port: int, upstream: str, client: str, stop: Awaitable[Any]) -> None:
    relay = RELAYS[client](upstream)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Downstream(relay), host, port, backlog=1024)
    try:
        await stop
    finally:
        server.close()
        await relay.aclose()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:9100")
    p.add_argument("--client", choices=sorted(RELAYS), default="aiohttp")
    args = p.parse_args(argv)

    async def run() -> None:
        import signal

        loop = asyncio.get_running_loop()
        stop: asyncio.Future[None] = loop.create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
        await serve(args.host, args.port, args.upstream, args.client, stop)

    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner, contextlib.suppress(KeyboardInterrupt):
        runner.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())

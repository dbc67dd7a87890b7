"""A small asyncio RESP2 client: the counter store's scripts on one plain ``redis://`` Redis.

Why: through redis-py's asyncio client one command costs ~300 us of client CPU on a 2-vCPU
box, ~5x a raw asyncio protocol; the cost guards' two scripts per call paid that twice. This
client does only what the store's scripts need: one TCP connection (``TCP_NODELAY``) that
every caller shares, requests written as they come (pipelined) and replies matched to
callers in order (FIFO), ``EVALSHA`` with one ``EVAL`` on ``NOSCRIPT``, ``AUTH`` and
``SELECT`` from the URL. TLS, unix sockets, a Cluster and URL options are redis-py's
(``resp_params`` says which URLs this client takes).

Failure semantics are redis-py's as the store maps them (``redis._outage``): a refused
connect, a reset, EOF, a protocol error or a reply later than ``timeout`` raise redis-py's
``ConnectionError`` / ``TimeoutError``; the connection is then dropped and *every* caller in
flight on it fails (a reply can never reach another caller), and the next call reconnects.
Nothing is retried but ``NOSCRIPT`` (the script did not run). Error replies are redis-py's
own exception classes (``BaseParser.parse_error``): a Lua ``error_reply`` is a
``ResponseError``, ``READONLY`` a ``ReadOnlyError`` and so on, as through redis-py.
"""

from __future__ import annotations

import asyncio
import builtins
import socket
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Final, cast

from redis._parsers.base import BaseParser
from redis.asyncio.connection import parse_url
from redis.exceptions import ConnectionError, NoScriptError, TimeoutError

__all__ = ["ProtocolError", "ReplyParser", "RespClient", "encode_command", "resp_params"]

_CRLF: Final = b"\r\n"
# what a plain redis:// URL may carry for this client; any other option is redis-py's
_PARAMS: Final = frozenset({"host", "port", "db", "username", "password"})


def resp_params(url: str) -> dict[str, Any] | None:
    """Connection parameters for a plain ``redis://`` URL (host, port, db, credentials,
    parsed by redis-py's own ``parse_url``), or None when redis-py must serve it (``rediss``,
    ``unix``, a Cluster, any query option). A malformed URL raises ``ValueError`` as
    redis-py does."""
    if url.partition("://")[0].lower() != "redis":
        return None
    params = parse_url(url)
    if not set(params) <= _PARAMS:
        return None
    return {
        "host": params.get("host") or "localhost",
        "port": int(params.get("port") or 6379),
        "db": int(params.get("db") or 0),
        "username": params.get("username"),
        "password": params.get("password"),
    }


def _arg(value: Any) -> bytes:
    """One argument as redis-py's encoder writes it (bytes, str as UTF-8, int/float repr)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"cannot send {type(value).__name__} to Redis")
    return repr(value).encode()


def encode_command(args: Sequence[Any]) -> bytes:
    """One command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        b = _arg(a)
        parts.append(b"$%d\r\n%b\r\n" % (len(b), b))
    return b"".join(parts)


class _Incomplete(Exception):
    """The buffer ends inside a reply: wait for more bytes."""


class ProtocolError(ConnectionError):
    """The server sent something that is not RESP2; the connection cannot be trusted."""


def _line(buf: bytes, pos: int) -> tuple[bytes, int]:
    end = buf.find(_CRLF, pos)
    if end < 0:
        raise _Incomplete
    return buf[pos:end], end + 2


def _int(raw: bytes) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ProtocolError(f"bad RESP number {raw[:40]!r}") from None


def _parse(buf: bytes, pos: int) -> tuple[Any, int]:
    """The reply starting at ``pos`` and where the next begins; ``_Incomplete`` if cut."""
    if pos >= len(buf):
        raise _Incomplete
    kind = buf[pos]
    raw, nxt = _line(buf, pos + 1)
    if kind == 0x24:  # $ bulk string
        n = _int(raw)
        if n < 0:
            return None, nxt
        end = nxt + n
        if len(buf) < end + 2:
            raise _Incomplete
        if buf[end : end + 2] != _CRLF:
            raise ProtocolError("bulk string not followed by CRLF")
        return buf[nxt:end], end + 2
    if kind == 0x3A:  # : integer
        return _int(raw), nxt
    if kind == 0x2A:  # * array
        n = _int(raw)
        if n < 0:
            return None, nxt
        items = []
        for _ in range(n):
            item, nxt = _parse(buf, nxt)
            items.append(item)
        return items, nxt
    if kind == 0x2B:  # + simple string (bytes, as redis-py returns it)
        return raw, nxt
    if kind == 0x2D:  # - error: redis-py's exception for it, raised only at the top level
        error = BaseParser.parse_error(raw.decode(errors="replace"))  # type: ignore[no-untyped-call]
        return error, nxt
    raise ProtocolError(f"unknown RESP type byte {bytes([kind])!r}")


class ReplyParser:
    """Replies from a byte stream cut anywhere: ``feed`` returns those now complete."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[Any]:
        buf = self._buf + data if self._buf else data
        out: list[Any] = []
        pos = 0
        try:
            while pos < len(buf):
                value, pos = _parse(buf, pos)
                out.append(value)
        except _Incomplete:
            pass
        self._buf = buf[pos:]
        return out


class _Conn(asyncio.Protocol):
    """One connection; callers' futures in the order their requests were written."""

    def __init__(self, where: str, timeout: float) -> None:
        self._where = where
        self._timeout = timeout
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._parser = ReplyParser()
        self._pending: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self.failed = False
        self.lost: asyncio.Future[None] = self._loop.create_future()

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is a transport by duck type, not an asyncio.Transport subclass
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        try:
            replies = self._parser.feed(data)
        except ProtocolError as exc:
            self.fail(ProtocolError, f"protocol error from {self._where}: {exc}")
            return
        pending = self._pending
        for reply in replies:
            if not pending:
                self.fail(ProtocolError, f"a reply nobody asked for from {self._where}")
                return
            fut = pending.popleft()[0]
            if fut.done():  # its caller was cancelled; the reply is still its own
                continue
            if isinstance(reply, Exception):  # an error reply, as redis-py's exception
                fut.set_exception(reply)
            else:
                fut.set_result(reply)

    def eof_received(self) -> bool | None:
        self.fail(ConnectionError, f"Connection closed by server ({self._where}).")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(ConnectionError, f"Connection to {self._where} lost: {exc or 'closed'}", exc)
        if not self.lost.done():
            self.lost.set_result(None)

    # -- requests ------------------------------------------------------------------------------

    def request(self, payload: bytes) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = self._loop.create_future()
        if self.failed or self._transport is None:
            fut.set_exception(ConnectionError(f"Connection to {self._where} is closed."))
            return fut
        self._pending.append((fut, self._loop.time() + self._timeout))
        if self._timer is None:
            self._timer = self._loop.call_at(self._pending[0][1], self._check)
        try:
            self._transport.write(payload)
        except (OSError, RuntimeError) as exc:  # a transport closed under us (uvloop raises)
            self.fail(ConnectionError, f"Error writing to {self._where}: {exc}", exc)
        return fut

    def _check(self) -> None:
        """The one timer: fail the connection if its oldest request is overdue, else re-arm
        for it (so a steady stream of requests arms a timer once per ``timeout``, not each)."""
        self._timer = None
        if not self._pending or self.failed:
            return
        deadline = self._pending[0][1]
        if deadline <= self._loop.time():
            self.fail(TimeoutError, f"Timeout reading from {self._where}")
        else:
            self._timer = self._loop.call_at(deadline, self._check)

    def fail(self, kind: type[Exception], message: str, cause: BaseException | None = None) -> None:
        """Drop the connection: every caller in flight gets its own ``kind`` error."""
        if self.failed:
            return
        self.failed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            self._transport.abort()
        pending, self._pending = self._pending, deque()
        for fut, _ in pending:
            if not fut.done():
                err = kind(message)
                err.__cause__ = cause
                fut.set_exception(err)


class RespClient:
    """Scripts and commands over one shared, lazily (re)connected RESP2 connection."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 2.0,
    ) -> None:
        self._host, self._port, self._timeout = host, port, timeout
        self._where = f"{host}:{port}"
        self._hello: list[list[Any]] = []
        if password is not None:
            self._hello.append(
                ["AUTH", password] if username is None else ["AUTH", username, password]
            )
        if db:
            self._hello.append(["SELECT", db])
        self._conn: _Conn | None = None
        self._connecting = asyncio.Lock()
        self._generation = 0  # bumped by close(): a connect racing it is dropped

    @classmethod
    def from_params(cls, params: Mapping[str, Any], timeout: float) -> RespClient:
        return cls(**params, timeout=timeout)

    async def _connect(self) -> _Conn:
        async with self._connecting:
            conn = self._conn
            if conn is not None and not conn.failed:
                return conn
            generation = self._generation
            made: list[_Conn] = []
            try:
                conn = await self._open(made)
            except BaseException:  # an error or a cancelled caller: no half-open socket left
                for c in made:
                    c.fail(ConnectionError, "connect failed")
                raise
            if generation != self._generation:  # closed while connecting
                conn.fail(ConnectionError, "client closed")
                raise ConnectionError(f"Connection to {self._where} closed by the client.")
            self._conn = conn
            return conn

    async def _open(self, made: list[_Conn]) -> _Conn:
        """Connect, then AUTH and SELECT (pipelined), within ``timeout``; ``made`` gets the
        connection as soon as it exists, for the caller to drop it if this fails."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._timeout):
                _, conn = await loop.create_connection(
                    lambda: _Conn(self._where, self._timeout), self._host, self._port
                )
                made.append(conn)
                futs = [conn.request(encode_command(c)) for c in self._hello]
                replies = await asyncio.gather(*futs, return_exceptions=True)
        except builtins.TimeoutError as exc:
            raise TimeoutError(f"Timeout connecting to {self._where}") from exc
        except OSError as exc:
            raise ConnectionError(f"Error connecting to {self._where}: {exc}") from exc
        for reply in replies:
            if isinstance(reply, ConnectionError):  # redis-py's AuthenticationError is one
                raise reply
            if isinstance(reply, BaseException):  # e.g. SELECT refused: an outage too
                raise ConnectionError(f"{self._where} refused the connection: {reply}") from reply
        return conn

    async def execute(self, *args: Any) -> Any:
        """One command; its reply (bytes, int, None, lists) or its error raised."""
        conn = self._conn
        if conn is None or conn.failed:
            conn = await self._connect()
        return await conn.request(encode_command(args))

    async def evalsha(
        self, sha: str, script: bytes | str | memoryview, keys: Sequence[Any], args: Sequence[Any]
    ) -> Any:
        """Run a script by its SHA1; if the server does not have it (first use, a restart,
        ``SCRIPT FLUSH``), ``EVAL`` it once, which also caches it."""
        try:
            return await self.execute("EVALSHA", sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self.execute("EVAL", script, len(keys), *keys, *args)

    async def close(self) -> None:
        """Drop the connection and wait until its socket is closed; a later call reconnects."""
        self._generation += 1
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.fail(ConnectionError, f"Connection to {self._where} closed by the client.")
            await conn.lost

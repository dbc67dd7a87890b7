"""The HTTP transport to real providers: pooled keep-alive connections through aiohttp.

aiohttp over httpx because it spends less CPU per request and per stream chunk
on the hot path (see bench/); either fits behind ``Transport``.

Errors say what failed, never where: aiohttp's messages carry the upstream host and
port (its ``ConnectionKey``), and an error's message can reach a client. The
details go to the server log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping

import aiohttp
from aiohttp.streams import EofStream

from ..errors import UpstreamConnectError, UpstreamTimeout
from .base import UpstreamRequest, UpstreamResponse

log = logging.getLogger("bastion.providers.http")

_WHAT: tuple[tuple[type[BaseException], str], ...] = (
    (aiohttp.ClientConnectorCertificateError, "TLS certificate rejected"),
    (aiohttp.ClientSSLError, "TLS handshake failed"),
    (aiohttp.ClientConnectorDNSError, "name resolution failed"),
    (aiohttp.ClientConnectorError, "connection refused or unreachable"),
    (aiohttp.ServerDisconnectedError, "the provider closed the connection"),
    (aiohttp.ClientPayloadError, "the response body was cut"),
    (ConnectionResetError, "connection reset"),
)


def _what(exc: BaseException, stage: str) -> str:
    """A client-safe description of a transport failure: no address, no library repr."""
    log.warning("upstream %s failed: %r", stage, exc)
    for cls, text in _WHAT:
        if isinstance(exc, cls):
            return f"upstream provider {stage} failed: {text}"
    return f"upstream provider {stage} failed ({type(exc).__name__})"


class _Chunks:
    """The body as it arrives, one read per step: an iterator of its own rather than an async
    generator over aiohttp's, since every layer costs on each chunk of a stream."""

    __slots__ = ("_content",)

    def __init__(self, content: aiohttp.StreamReader) -> None:
        self._content = content

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = await self._content.readany()
        except EofStream:
            raise StopAsyncIteration from None
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise UpstreamConnectError(_what(exc, "stream")) from exc
        if not chunk:
            raise StopAsyncIteration
        return chunk


class _AiohttpResponse:
    __slots__ = ("_resp", "headers", "status")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status
        self.headers: Mapping[str, str] = {k.lower(): v for k, v in resp.headers.items()}

    async def read(self) -> bytes:
        try:
            return await self._resp.read()
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise UpstreamConnectError(_what(exc, "response body")) from exc
        finally:
            self._resp.release()

    def iter_chunks(self) -> AsyncIterator[bytes]:
        return _Chunks(self._resp.content)

    async def aclose(self) -> None:
        # release, not close: aiohttp keeps the connection for the next call only when the
        # body was read to its end (a stream cut short, or bytes left unread, close it), and
        # a new connection per stream costs a connect (and a TLS handshake) on the hot path
        self._resp.release()


def _unsent(exc: aiohttp.ClientOSError) -> bool:
    """aiohttp could not write the request body: the provider never had a whole request."""
    return "Can not write request body" in str(exc)


class HttpTransport:
    """One pooled session per provider; connections are reused across calls."""

    __slots__ = ("_connect_timeout", "_limit", "_session")

    def __init__(self, *, max_connections: int = 256, connect_timeout: float = 5.0) -> None:
        self._limit = max_connections
        self._connect_timeout = connect_timeout
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._limit, keepalive_timeout=60, ttl_dns_cache=300
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None, connect=self._connect_timeout),
                auto_decompress=True,
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def send(self, request: UpstreamRequest, *, timeout: float | None) -> UpstreamResponse:
        session = self._get_session()
        try:
            async with asyncio.timeout(timeout):
                resend = True
                while True:  # at most two passes: the one resend below
                    try:
                        resp = await session.request(
                            request.method, request.url, data=request.body, headers=request.headers
                        )
                        break
                    except aiohttp.ClientOSError as exc:
                        if not (resend and _unsent(exc)):
                            raise
                        # a pooled connection the provider closed while it idled (its
                        # keep-alive ran out): the request never left, so it is sent once
                        # more on another connection instead of failing the attempt (five
                        # such in a row opened the breaker after an idle spell)
                        resend = False
        except TimeoutError as exc:
            raise UpstreamTimeout(
                f"no response headers from upstream within {timeout:.3g}s"
            ) from exc
        except aiohttp.ClientConnectorError as exc:
            err = UpstreamConnectError(_what(exc, "connection"))
            err.reached = False  # no connection: the provider never saw the request
            raise err from exc
        except (aiohttp.ClientError, ConnectionError, OSError) as exc:
            err = UpstreamConnectError(_what(exc, "connection"))
            if isinstance(exc, aiohttp.ClientOSError) and _unsent(exc):
                err.reached = False  # the body was never written: the provider saw no request
            raise err from exc
        return _AiohttpResponse(resp)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

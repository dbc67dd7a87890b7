"""The in-process ``Transport`` for ``sim://`` URLs: the simulator without a socket.

Behaves like the HTTP transport as far as a caller can tell: ``send`` returns when
headers exist (bounded by ``timeout``, so ``silence`` becomes ``UpstreamTimeout``),
a ``reset`` is an ``UpstreamConnectError``, and the body keeps the simulator's
pacing. A cut stream simply ends early; the caller notices the missing final event.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlsplit

from ...errors import UpstreamConnectError, UpstreamTimeout
from ..base import UpstreamRequest
from .core import Simulator
from .result import SimCut, SimReset, SimResult


class SimResponse:
    """An ``UpstreamResponse`` over a ``SimResult``."""

    __slots__ = ("_body", "headers", "status")

    def __init__(self, result: SimResult) -> None:
        self.status = result.status
        self.headers: Mapping[str, str] = result.headers
        self._body = result.body

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.iter_chunks()])

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._body:
                yield chunk
        except SimCut:
            return

    async def aclose(self) -> None:
        closer = getattr(self._body, "aclose", None)
        if closer is not None:
            await closer()


class SimTransport:
    """Sends ``sim://host/path`` requests straight to a ``Simulator`` instance."""

    __slots__ = ("sim",)

    def __init__(self, sim: Simulator | None = None) -> None:
        self.sim = sim if sim is not None else Simulator()

    async def send(self, request: UpstreamRequest, *, timeout: float | None) -> SimResponse:
        """Return once the simulator has produced headers, or fail like a network would."""
        parts = urlsplit(request.url)
        if parts.scheme != "sim":
            raise UpstreamConnectError(f"the simulator transport cannot reach {request.url!r}")
        path = parts.path + ("?" + parts.query if parts.query else "")
        try:
            async with asyncio.timeout(timeout):
                result = await self.sim.handle(request.method, path, request.headers, request.body)
        except TimeoutError:
            raise UpstreamTimeout(
                f"no response headers from the simulator within {timeout}s"
            ) from None
        except SimReset as exc:
            raise UpstreamConnectError(f"simulated connection reset: {exc}") from None
        return SimResponse(result)

    async def aclose(self) -> None:
        return None

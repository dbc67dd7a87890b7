"""The seam between Bastion and a provider: wire-level requests, responses and transports.

Adapters build an ``UpstreamRequest`` (bytes, not objects) and a ``Transport``
sends it. The HTTP transport talks to real providers; the simulator's in-process
transport answers without a socket. Swapping transports is how tests and the
embedded default avoid the network without mocking the adapters.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..usage import Usage


class Format(StrEnum):
    """An API wire format, for both what a client speaks and what a provider speaks."""

    ANTHROPIC = "anthropic"
    OPENAI = "openai"
    BEDROCK = "bedrock"  # AWS Bedrock Converse; spoken by the bedrock transport, never by a client
    GEMINI = "gemini"  # provider side only: no client speaks it (providers/foreign.py)


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    """One HTTP request to a provider: ``url`` is absolute (``sim://`` for the in-process simulator)."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes
    stream: bool = False


class UpstreamResponse(Protocol):
    """A provider's answer; headers are available at once, the body as it arrives."""

    status: int
    headers: Mapping[str, str]  # lower-case names

    async def read(self) -> bytes: ...

    def iter_chunks(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class Transport(Protocol):
    """Sends an ``UpstreamRequest``; raises ``UpstreamConnectError``/``UpstreamTimeout`` on failure."""

    async def send(self, request: UpstreamRequest, *, timeout: float | None) -> UpstreamResponse:
        """Return once the status line and headers are in; ``timeout`` bounds that wait."""
        ...

    async def aclose(self) -> None: ...


@dataclass(slots=True)
class BufferedResponse:
    """An ``UpstreamResponse`` whose body is already in memory (errors, in-process answers)."""

    status: int
    headers: Mapping[str, str]
    body: bytes = b""
    chunks: list[bytes] = field(default_factory=list)
    # an error answer the provider billed all the same, and what it billed (a Gemini answer
    # that stopped on a failure, with its usageMetadata): the attempt is charged for it
    billed: Usage | None = None

    async def read(self) -> bytes:
        return self.body or b"".join(self.chunks)

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        if self.body:
            yield self.body
        for c in self.chunks:
            yield c

    async def aclose(self) -> None:
        return None

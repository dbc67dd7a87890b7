"""What ``Simulator.handle`` returns, and the two transport-level failures it can signal."""

from __future__ import annotations

import random
import string
from collections.abc import AsyncIterator
from dataclasses import dataclass

_ALNUM = string.ascii_letters + string.digits


class SimReset(ConnectionResetError):
    """The simulated peer reset the connection before sending any header."""


class SimCut(ConnectionError):
    """Raised by a body iterator where the simulated connection drops mid-body."""


@dataclass(slots=True)
class SimResult:
    """Status and headers (lower-case names) at once; the body as paced chunks."""

    status: int
    headers: dict[str, str]
    body: AsyncIterator[bytes]

    async def read(self) -> bytes:
        """The whole body (raises ``SimCut`` if the simulated connection drops)."""
        return b"".join([chunk async for chunk in self.body])


async def once(data: bytes) -> AsyncIterator[bytes]:
    """A body of one chunk."""
    yield data


class Ids:
    """Provider-shaped identifiers; seeded per simulator so a run can be reproduced."""

    __slots__ = ("_rng",)

    def __init__(self, seed: int | None) -> None:
        self._rng = random.Random(seed)

    def _alnum(self, n: int) -> str:
        return "".join(self._rng.choices(_ALNUM, k=n))

    def anthropic_message(self) -> str:
        return "msg_01" + self._alnum(22)

    def anthropic_tool(self) -> str:
        return "toolu_01" + self._alnum(22)

    def anthropic_request(self) -> str:
        return "req_011C" + self._alnum(20)

    def openai_completion(self) -> str:
        return "chatcmpl-" + self._alnum(29)

    def openai_tool(self) -> str:
        return "call_" + self._alnum(24)

    def openai_request(self) -> str:
        return "req_" + f"{self._rng.getrandbits(128):032x}"


class WireError(ValueError):
    """A request the provider would refuse with a 4xx; rendered in the provider's error shape."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        param: str | None = None,
        code: str | None = None,
        etype: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param
        self.code = code
        self.etype = etype


@dataclass(frozen=True, slots=True)
class Frame:
    """One body chunk; ``content`` frames carry a token piece and are paced by the chunk gap.

    ``final`` marks the terminating event (``message_stop`` / ``[DONE]``) that
    ``no_final`` withholds.
    """

    data: bytes
    content: bool = False
    final: bool = False

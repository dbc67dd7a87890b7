"""Mid-stream recovery: how a stream cut after the client got text is carried on elsewhere.

Two ways, tried at each fallback deployment in order:

- *prefill*: the partial answer goes to the fallback as the start of the assistant's turn
  and the model continues it. Only where the deployment takes that: its ``prefill``
  setting says so, or ``auto`` (the default) and it speaks Anthropic and has not refused
  a prefill before. A 400 to a prefill request under ``auto`` is remembered in
  ``PrefillMemory`` for the gateway's life, and that fallback is restarted instead.
- *restart*: the original request again. The client keeps its stream only if the new
  answer reproduces the text it already has (then it gets the remainder), else the
  stream ends with an in-band error: never a clean end of a truncated answer.

Whatever goes wrong, the in-band error names the class of failure (``STALLED``,
``RESET`` …) in fixed words, never a transport library's text.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from .call import Attempt, Call
from .config import PrefillMode
from .dialects import Wire, find_wire
from .errors import (
    BastionError,
    UpstreamConnectError,
    UpstreamError,
    UpstreamTimeout,
)
from .providers.base import UpstreamResponse

__all__ = [
    "CUT",
    "DEADLINE",
    "DIVERGED",
    "FAILED",
    "RESET",
    "STALLED",
    "Continuation",
    "PrefillMemory",
    "Recovery",
    "Resumed",
    "is_prefill_refusal",
    "stream_failure",
    "with_prefill",
]

Recovery = Literal["prefill", "restart"]

STALLED = "upstream stream stalled"
DEADLINE = "call deadline reached mid-stream"
RESET = "upstream connection reset"
CUT = "upstream stream cut before completion"
DIVERGED = "fallback answer diverged from the text already sent"
FAILED = "upstream stream failed"
_OWN = frozenset({STALLED, DEADLINE, RESET, CUT, DIVERGED, FAILED})


@dataclass(frozen=True, slots=True)
class Resumed:
    """A fallback's stream, opened, that carries a cut answer on."""

    resp: UpstreamResponse
    fmt: str | Wire  # the format of the fallback's answer
    mode: Recovery
    attempt: Attempt  # the fallback's own attempt: settled with its own usage
    idle_timeout: float  # the fallback deployment's, not the cut one's


# given the call the relay writes into and the text its client has, open a fallback's stream
# (None: no fallback would)
Continuation = Callable[[Call, str], Awaitable[Resumed | None]]


class PrefillMemory:
    """Deployments that refused a prefill under ``auto``: learned once, kept for the gateway's life.

    Built with the engine at start-up; bounded, since deployment names from a glob alias
    carry the model name a client sent.
    """

    __slots__ = ("_limit", "_refused")

    def __init__(self, limit: int = 4096) -> None:
        self._refused: set[str] = set()
        self._limit = limit

    def wants_prefill(self, deployment: str, mode: PrefillMode, fmt: str | Wire) -> bool:
        """Whether to continue the answer at this deployment by prefill (else restart it)."""
        if mode == "prefill":
            return True
        if mode == "none":
            return False
        # in some formats (OpenAI's chat) a trailing assistant turn is history, not a prefill
        wire = find_wire(fmt)
        return wire is not None and wire.prefill and deployment not in self._refused

    def refused(self, deployment: str) -> None:
        """This deployment answered a prefill request with a 400: restart there from now on."""
        if len(self._refused) < self._limit:
            self._refused.add(deployment)

    def __contains__(self, deployment: str) -> bool:
        return deployment in self._refused


def is_prefill_refusal(err: UpstreamError) -> bool:
    """A 400 to a prefill request: the model does not take one (a too-long prompt is not that)."""
    body = (err.upstream_body or b"").lower()
    return err.upstream_status == 400 and b"context" not in body and b"too long" not in body


def with_prefill(body: dict[str, Any], partial: str, used_tokens: int) -> dict[str, Any] | None:
    """The request continuing ``partial`` as the assistant's turn, or None when it cannot.

    None when there is nothing to continue, or when the request does not end with a user
    turn (the client's own prefill, or a tool result in OpenAI's format): merging those is
    guesswork, and a restart needs none. The token limit is lowered by what was generated.
    """
    prefill = partial.rstrip()  # Anthropic refuses a final assistant turn ending in white space
    msgs = body.get("messages")
    if not prefill or not isinstance(msgs, list) or not msgs:
        return None
    last = msgs[-1]
    if not isinstance(last, dict) or last.get("role") != "user":
        return None
    out = {**body, "messages": [*msgs, {"role": "assistant", "content": prefill}]}
    for key in ("max_tokens", "max_completion_tokens"):
        limit = out.get(key)
        if isinstance(limit, int) and not isinstance(limit, bool):
            out[key] = max(1, limit - used_tokens)
    return out


def stream_failure(exc: BastionError) -> str:
    """The message of the in-band error event: a failure class in fixed words.

    The relay raises its own failures with these words already; anything else from
    upstream is reduced to its class, so no library's message reaches the client.
    Bastion's own refusals (an output guard withholding the rest) keep their message.
    """
    if not isinstance(exc, UpstreamError) or exc.message in _OWN:
        return exc.message
    if isinstance(exc, UpstreamTimeout):
        return STALLED
    if isinstance(exc, UpstreamConnectError):
        return RESET
    return FAILED

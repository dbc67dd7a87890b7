"""What to do after an upstream failure: a small pure object, no I/O, every decision bounded.

Each failure is first put in one class, then the policy decides one of three things:

| class                          | decision                                            | time bound            |
|--------------------------------|-----------------------------------------------------|-----------------------|
| connect (never reached)        | next deployment                                     | connect timeout       |
| no headers / first token       | next deployment: a silent provider stays silent     | its timeout (capped   |
|                                |                                                     | to a share of the     |
|                                |                                                     | deadline, see below)  |
| stall (idle mid-stream)        | next deployment                                     | idle timeout          |
| reset, malformed answer        | same deployment after backoff, then next            | backoff ≤ backoff_max |
| 5xx (500/502/503/504)          | same deployment after backoff, then next            | backoff ≤ backoff_max |
| 429 with a short Retry-After   | same deployment after Retry-After                   | ≤ max_retry_after     |
| 429 with a long Retry-After    | next deployment (it is cooled down meanwhile)       | immediate             |
| 529 overloaded                 | next deployment; the only one: same after backoff   | backoff ≤ backoff_max |
| 429 without Retry-After        | same deployment after backoff, then next            | backoff ≤ backoff_max |
| 429/529 on the last deployment | same deployment, up to ``max_attempts`` tries       | each wait as above    |
| context length                 | next deployment (a larger window may take it)       | immediate             |
| auth (401/403: our key)        | next deployment                                     | immediate             |
| content policy, other 4xx      | return to the caller as the provider said           | immediate             |

No wait is ever longer than what is left of the call's deadline. So that a silent first
deployment cannot spend the whole deadline, one attempt may use at most the deadline left
divided among the deployments not yet tried (``attempt_budget``). Rate limiting is not an
outage: a 429 never counts against a breaker; it cools the deployment until its Retry-After.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

from ..config import RetryConfig
from ..errors import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)

__all__ = ["Action", "Decision", "Failure", "RetryPolicy", "classify"]


class Failure(StrEnum):
    CONNECT = "connect"
    NO_HEADERS = "no_headers"
    FIRST_TOKEN = "first_token"
    STALL = "stall"
    RESET = "reset"
    MALFORMED = "malformed"
    SERVER = "server_error"
    RATE_LIMITED = "rate_limited"
    OVERLOADED = "overloaded"
    CONTEXT_LENGTH = "context_length"
    CONTENT_POLICY = "content_policy"
    AUTH = "auth"
    CLIENT = "client_error"


class Action(StrEnum):
    SAME = "same"  # the same deployment, after ``delay``
    NEXT = "next"  # the next deployment, now
    RETURN = "return"  # give the caller this error


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    delay: float = 0.0


_CONTEXT_MARKERS = (b"context_length_exceeded", b"prompt is too long", b"context window")
_POLICY_MARKERS = (b"content_policy", b"content_filter", b"content filtering", b"safety system")


def classify(err: UpstreamError) -> Failure:
    """The failure class of one upstream error (status, body, or how the transport failed)."""
    status = err.upstream_status
    if status is None:
        if isinstance(err, UpstreamTimeout):
            text = err.message
            if "silent" in text:
                return Failure.STALL
            if "first" in text or "before any output" in text:
                return Failure.FIRST_TOKEN
            return Failure.NO_HEADERS
        if isinstance(err, UpstreamConnectError):
            return Failure.RESET if err.reached else Failure.CONNECT
        if isinstance(err, UpstreamProtocolError):
            return Failure.MALFORMED
        return Failure.RESET
    body = (err.upstream_body or b"").lower()
    if status == 429:
        return Failure.RATE_LIMITED
    if status == 529 or (status == 503 and b"overloaded" in body):
        return Failure.OVERLOADED
    if status in (401, 403):
        return Failure.AUTH
    if status in (400, 413) and any(m in body for m in _CONTEXT_MARKERS):
        return Failure.CONTEXT_LENGTH
    if status == 408:
        return Failure.NO_HEADERS
    if status >= 500:
        return Failure.SERVER
    if any(m in body for m in _POLICY_MARKERS):
        return Failure.CONTENT_POLICY
    return Failure.CLIENT


_NEXT_NOW = frozenset(
    {
        Failure.CONNECT,
        Failure.NO_HEADERS,
        Failure.FIRST_TOKEN,
        Failure.STALL,
        Failure.CONTEXT_LENGTH,
        Failure.AUTH,
    }
)
_RETRY_SAME = frozenset(
    {Failure.RESET, Failure.MALFORMED, Failure.SERVER, Failure.RATE_LIMITED, Failure.OVERLOADED}
)
_RETURN = frozenset({Failure.CONTENT_POLICY, Failure.CLIENT})


class RetryPolicy:
    """Decides after each failed attempt; pure, so it is tested with numbers, not servers."""

    __slots__ = ("_cfg", "_rng")

    def __init__(self, cfg: RetryConfig, rng: random.Random | None = None) -> None:
        self._cfg = cfg
        self._rng = rng or random.Random()

    def decide(
        self,
        failure: Failure,
        *,
        tries_here: int,
        retry_after: float | None,
        remaining: float,
        has_next: bool,
    ) -> Decision:
        """After ``tries_here`` attempts at this deployment failed with ``failure``."""
        cfg = self._cfg
        if failure in _RETURN:
            return Decision(Action.RETURN)
        if failure in _NEXT_NOW:
            return Decision(Action.NEXT if has_next else Action.RETURN)
        assert failure in _RETRY_SAME
        if failure is Failure.OVERLOADED and has_next:
            return Decision(Action.NEXT)  # another provider is not overloaded
        # "not now" from the only deployment left is worth more patience than "broken"
        limited = failure in (Failure.RATE_LIMITED, Failure.OVERLOADED)
        tries = cfg.max_attempts if limited and not has_next else cfg.attempts_per_deployment
        if failure is Failure.RATE_LIMITED and retry_after is not None:
            fits = retry_after <= cfg.max_retry_after and retry_after < remaining
            if fits and tries_here < tries:
                return Decision(Action.SAME, retry_after)
            return Decision(Action.NEXT if has_next else Action.RETURN)
        if tries_here < tries:
            delay = self._rng.uniform(0.0, min(cfg.backoff_max, cfg.backoff_base * 2**tries_here))
            if delay < remaining:
                return Decision(Action.SAME, delay)
        return Decision(Action.NEXT if has_next else Action.RETURN)

    @staticmethod
    def attempt_budget(remaining: float, untried: int) -> float:
        """The longest one attempt may take so the deployments after it still get a share."""
        return remaining / max(untried, 1)

    @staticmethod
    def counts_against_breaker(failure: Failure) -> bool:
        """Outages open breakers; rate limits, overload and the caller's own errors do not."""
        return failure not in (
            Failure.RATE_LIMITED,
            Failure.OVERLOADED,
            Failure.CONTEXT_LENGTH,
            Failure.CONTENT_POLICY,
            Failure.CLIENT,
        )

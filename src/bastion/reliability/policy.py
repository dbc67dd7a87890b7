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
| 429 without Retry-After        | same deployment after backoff (at least until the   | backoff ≤ backoff_max |
|                                | reset its rate-limit headers give), then next       | (or that reset)       |
| 429/529 on the last deployment | same deployment, up to ``max_attempts`` tries       | each wait as above    |
| context length                 | next deployment (a larger window may take it)       | immediate             |
| auth (401/403: our key)        | next deployment                                     | immediate             |
| content policy, other 4xx      | return to the caller as the provider said           | immediate             |

No wait is ever longer than what is left of the call's deadline. So that a silent first
deployment cannot spend the whole deadline, one attempt may use at most the deadline left
divided among the deployments not yet tried (``attempt_budget``). Rate limiting is not an
outage: a 429 never counts against a breaker; it cools the deployment until its Retry-After.
Better still, no request is sent that the provider would refuse: ``RateWindow`` keeps what each
answer's rate-limit headers said, and an attempt waits for the window (``cooling.Cooling``).
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

__all__ = ["Action", "Decision", "Failure", "RateWindow", "RetryPolicy", "classify"]


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


@dataclass(slots=True)
class RateWindow:
    """One deployment's request limit as its provider reported it; pure, the clock is passed in.

    A request that would be refused is not sent: it waits. Two sources say how long:

    - a 429's Retry-After rests the deployment until then (``refused``);
    - every answer's rate-limit headers (requests left, when the window resets, the limit)
      are applied by ``observe``: ``left`` is what the answer said, less the requests sent
      after the one it answers (the provider had not counted those yet). At ``reset_at`` a new
      window starts with the whole ``limit``; until an answer in it tells when it ends, a
      request beyond the limit waits for that answer (``wait`` returns None). An answer whose
      window is already over counts every request sent after it against the next window.

    Sending is ``take``: it counts the request and returns its ticket, which its answer brings
    back to ``observe``, so an answer older than the newest one applied (or from before the
    window rolled) changes nothing. With no headers at all only ``refused`` applies.
    """

    seq: int = 0  # requests sent (the last ticket)
    until: float = 0.0  # resting after a 429 until here
    left: int | None = None  # requests left in this window; None: not known, not gated
    reset_at: float | None = None  # when this window ends, if an answer said
    limit: int | None = None  # requests per window, if an answer said
    seen: int = 0  # ticket of the newest answer applied
    rolled: int = 0  # the last ticket sent in the previous window

    def wait(self, now: float) -> float | None:
        """0.0: a request may go now; else seconds until one may (None: until an answer)."""
        self._roll(now)
        if now < self.until:
            return self.until - now
        if self.left is None or self.left > 0:
            return 0.0
        return None if self.reset_at is None else self.reset_at - now

    def take(self, now: float) -> int:
        """Count one request sent (even one sent without waiting its turn); its ticket."""
        self._roll(now)
        if self.left is not None:
            self.left -= 1
        self.seq += 1
        return self.seq

    def observe(
        self,
        now: float,
        ticket: int,
        remaining: int | None,
        reset_in: float | None,
        limit: int | None = None,
    ) -> None:
        """The answer to request ``ticket`` said ``remaining`` left, resetting in ``reset_in``."""
        if limit is not None and limit > 0:
            self.limit = limit
        if remaining is None or reset_in is None or ticket <= max(self.seen, self.rolled):
            return
        self.seen = ticket
        later = self.seq - ticket  # sent after it: not yet counted when it was
        if reset_in > 0:
            self.left = remaining - later
            self.reset_at = now + reset_in
        elif self.limit is not None:  # its window is over, and all sent since may be in the next
            self.left = self.limit - later
            self.reset_at = None

    def refused(self, now: float, retry_after: float) -> None:
        """A 429 (or 529): no request before ``retry_after`` from now."""
        self.until = max(self.until, now + max(retry_after, 0.0))

    def _roll(self, now: float) -> None:
        """Past the window's end a new one starts, with the whole limit (if known) left."""
        if self.reset_at is not None and now >= self.reset_at:
            self.reset_at = None
            self.left = self.limit
            self.rolled = self.seq

"""What the failed attempts of one call add up to: the error the caller gets when none answered.

Every deployment rate-limited or overloaded: a 429 ``rate_limit_error`` (529 ``overloaded_error``)
with the soonest Retry-After any of them gave. Otherwise the last failure class decides: 504
for timeouts or a spent deadline, the provider's own 502/503/504 for server errors, 502 for the
rest; 503 when every breaker was open and nothing was tried.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..call import Call
from ..errors import UpstreamError, UpstreamExhausted
from .policy import Failure

__all__ = ["Outcome"]

_TIMEOUTS = frozenset({Failure.NO_HEADERS, Failure.FIRST_TOKEN, Failure.STALL})
_LIMITED = frozenset({Failure.RATE_LIMITED, Failure.OVERLOADED})


@dataclass(slots=True)
class Outcome:
    """What the failed attempts of one call add up to, for the error the caller gets."""

    last: UpstreamError | None = None
    failure: Failure | None = None
    failures: list[Failure] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    soonest: float | None = None  # the soonest Retry-After of a rate-limited deployment

    def fail(self, exc: UpstreamError, failure: Failure) -> None:
        self.last, self.failure = exc, failure
        self.failures.append(failure)
        if failure in _LIMITED and exc.retry_after is not None:
            self.cooled(exc.retry_after)

    def cooled(self, seconds: float) -> None:
        self.soonest = seconds if self.soonest is None else min(self.soonest, seconds)
        self.failures.append(Failure.RATE_LIMITED)

    def exhausted(self, call: Call) -> UpstreamExhausted:
        """The status of the last failure class, or a 429/529 when every deployment was limited."""
        if self.skipped:
            call.flags["breaker_open"] = self.skipped
        call.flags["degraded"] = True
        last = self.last
        if self.failures and all(f in _LIMITED for f in self.failures):
            overloaded = self.failure is Failure.OVERLOADED
            return UpstreamExhausted(
                "every deployment is "
                + ("overloaded" if overloaded else "rate limited")
                + "; retry after the time given",
                reason="rate_limited",
                status=529 if overloaded else 429,
                retry_after=self.soonest,
                failure=(self.failure or Failure.RATE_LIMITED).value,
            )
        if self.failure is None:
            reason = "deadline" if call.remaining() <= 0 else "breaker_open"
            return UpstreamExhausted(
                "no deployment could answer ("
                + ("the deadline passed" if reason == "deadline" else "every breaker is open")
                + ")",
                reason=reason,
                status=504 if reason == "deadline" else 503,
            )
        status = 504 if self.failure in _TIMEOUTS or call.remaining() <= 0 else 502
        if self.failure is Failure.SERVER and last is not None:
            status = last.upstream_status if last.upstream_status in (502, 503, 504) else 502
        code = f", HTTP {last.upstream_status}" if last and last.upstream_status else ""
        return UpstreamExhausted(
            f"no deployment could answer (last failure: {self.failure.value}{code})",
            reason="deadline" if call.remaining() <= 0 else "all_failed",
            status=status,
            retry_after=last.retry_after if last is not None else None,
            failure=self.failure.value,
        )

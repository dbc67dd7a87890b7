"""The one counter-state interface, so every guard works the same on one process or many replicas.

Everything a guarantee depends on across calls lives behind ``CounterStore``: budget
reservations, token buckets, windowed counters, flags (the kill switch), circuit breakers and
idempotency keys. Each multi-step operation is atomic in every backend (no interleaving in
process, one Lua script on Redis), so callers never compose reads and writes themselves.

Backends raise ``StateUnavailable`` when the store cannot be reached; argument mistakes
(negative amounts, duplicate caps) raise ``ValueError`` because they are bugs, not outages.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # the plan types build on this module's
    from bastion.state.plan import AdmitOp, AdmitResult, FinishAnswer, FinishOp

__all__ = [
    "BreakerDecision",
    "BreakerPolicy",
    "BreakerState",
    "Cap",
    "CounterStore",
    "IdemBegin",
    "IdemOutcome",
    "IncrResult",
    "ReserveResult",
    "TakeResult",
    "Usage",
    "check_reserve",
]


def _positive(name: str, value: float) -> None:
    """Reject zero, negative and NaN durations and rates early, where the bug is."""
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def _non_negative(name: str, value: float) -> None:
    """Reject negative and NaN amounts, which would silently widen a cap."""
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a non-negative finite number, got {value!r}")


@dataclass(frozen=True, slots=True)
class Cap:
    """One spending limit; the caller puts the day in ``key`` so each day starts at zero."""

    key: str
    limit: float
    ttl_seconds: float

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("cap key must not be empty")
        _non_negative("cap limit", self.limit)
        _positive("cap ttl_seconds", self.ttl_seconds)


@dataclass(frozen=True, slots=True)
class Usage:
    """What counts against a cap: spend already settled plus live (unexpired) reservations."""

    settled: float
    reserved: float

    @property
    def total(self) -> float:
        return self.settled + self.reserved


@dataclass(frozen=True, slots=True)
class ReserveResult:
    """Whether a reservation fits; on refusal, the first cap that refused and its usage then."""

    ok: bool
    refused_cap: str | None = None
    limit: float = 0.0
    settled: float = 0.0
    reserved: float = 0.0


@dataclass(frozen=True, slots=True)
class TakeResult:
    """A token-bucket answer; ``retry_after_seconds`` is exact from the refill rate (inf: never)."""

    allowed: bool
    retry_after_seconds: float
    remaining: float


@dataclass(frozen=True, slots=True)
class IncrResult:
    """Whether a bounded increment fitted, and the counter's value afterwards."""

    ok: bool
    value: float


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When a breaker opens: N consecutive failures, or an error rate over a sliding window.

    ``failure_threshold=0`` disables the consecutive rule; the rate rule needs ``min_calls``
    calls in the window so one early failure cannot open it.
    """

    failure_threshold: int = 5
    error_rate: float = 0.5
    window_seconds: float = 60.0
    min_calls: int = 20
    cooldown_seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.failure_threshold < 0:
            raise ValueError("failure_threshold must be >= 0 (0 disables it)")
        if not 0 < self.error_rate <= 1:
            raise ValueError("error_rate must be in (0, 1]")
        if self.min_calls < 1:
            raise ValueError("min_calls must be >= 1")
        _positive("window_seconds", self.window_seconds)
        _positive("cooldown_seconds", self.cooldown_seconds)


@dataclass(frozen=True, slots=True)
class BreakerDecision:
    """May this call go to the deployment; ``probe`` marks the single half-open trial call."""

    allowed: bool
    state: BreakerState
    probe: bool = False
    retry_after_seconds: float = 0.0


class IdemOutcome(StrEnum):
    NEW = "new"
    IN_PROGRESS = "in_progress"
    DONE = "done"
    MISMATCH = "mismatch"


@dataclass(frozen=True, slots=True)
class IdemBegin:
    """What to do with an idempotent request: run it, wait, replay ``response``, or refuse."""

    outcome: IdemOutcome
    response: bytes | None = None
    retry_after_seconds: float = 0.0


def check_reserve(caps: Sequence[Cap], amount: float, lease_seconds: float) -> None:
    """Validate a reservation before it reaches a backend, identically for all backends."""
    _non_negative("amount", amount)
    _positive("lease_seconds", lease_seconds)
    if not caps:
        raise ValueError("reserve needs at least one cap")
    keys = [cap.key for cap in caps]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate cap keys in one reservation: {keys}")


@runtime_checkable
class CounterStore(Protocol):
    """Atomic counters behind every cross-call guarantee; outages raise ``StateUnavailable``."""

    # -- budgets: reserve worst case, settle actual ------------------------------------------

    async def reserve(
        self, reservation_id: str, caps: Sequence[Cap], amount: float, lease_seconds: float
    ) -> ReserveResult:
        """Hold ``amount`` on every cap iff each keeps ``settled + reserved + amount <= limit``.

        All caps or none; caps are checked in order and the first refusing one is named.
        Repeating a known ``reservation_id`` is a no-op success, so a retried call is safe.
        """
        ...

    async def settle(self, reservation_id: str, actual: float) -> bool:
        """Replace the reservation by ``actual`` (even above it, even after the lease ended).

        False if the id is unknown (already settled or released), and nothing is recorded.
        """
        ...

    async def release(self, reservation_id: str) -> bool:
        """Drop the reservation without spending; False if the id is unknown."""
        ...

    async def usage(self, cap_key: str) -> Usage:
        """Settled spend and live reservations of one cap, for headers and dashboards."""
        ...

    # -- token buckets -----------------------------------------------------------------------

    async def take(
        self, key: str, rate_per_second: float, burst: float, cost: float = 1.0
    ) -> TakeResult:
        """Take ``cost`` tokens if the bucket (refilling continuously) holds them."""
        ...

    async def charge(self, key: str, rate_per_second: float, burst: float, amount: float) -> float:
        """Debit real usage after the fact (may go negative); a negative amount refunds."""
        ...

    # -- windowed counters -------------------------------------------------------------------

    async def incr(self, key: str, amount: float, ttl_seconds: float) -> float:
        """Add to a counter whose window ends ``ttl_seconds`` after its first write."""
        ...

    async def incr_if_below(
        self, key: str, amount: float, limit: float, ttl_seconds: float
    ) -> IncrResult:
        """Add only if the result stays ``<= limit``; otherwise change nothing."""
        ...

    async def get(self, key: str) -> float:
        """A counter's value; 0.0 when absent or expired."""
        ...

    # -- flags (kill switch) -----------------------------------------------------------------

    async def set_flag(
        self, key: str, value: str | None, meta: Mapping[str, Any] | None = None
    ) -> None:
        """Set (or clear with None) a flag; ``meta`` (who, why, when) is kept for audit."""
        ...

    async def get_flags(self, prefix: str = "") -> dict[str, str]:
        """All set flags whose key starts with ``prefix``, in one round trip."""
        ...

    async def flag_meta(self, key: str) -> dict[str, Any] | None:
        """The meta of the last change to a flag, set or cleared."""
        ...

    # -- circuit breakers --------------------------------------------------------------------

    async def breaker_allow(self, key: str, policy: BreakerPolicy) -> BreakerDecision:
        """Closed allows; open denies until cooldown, then lets exactly one probe through."""
        ...

    async def breaker_record(self, key: str, ok: bool, policy: BreakerPolicy) -> BreakerState:
        """Count an outcome; may open the breaker, or close/re-open it after a probe."""
        ...

    async def breaker_peek(self, key: str) -> BreakerDecision:
        """The breaker's state as stored, changing nothing: no probe is handed out.

        ``allowed`` says the cooldown (or a probe's lease) is over, ``retry_after_seconds`` how
        long is left of it; for dashboards, which must never take the half-open probe.
        """
        ...

    # -- idempotency -------------------------------------------------------------------------

    async def idem_begin(
        self, key: str, fingerprint: str, ttl_seconds: float, lock_seconds: float, owner: str = ""
    ) -> IdemBegin:
        """Claim a key: NEW (run it), IN_PROGRESS, DONE (replay) or MISMATCH (other body).

        ``owner`` (the claimer's own token) is kept with a NEW claim, for ``idem_abandon``."""
        ...

    async def idem_complete(
        self, key: str, fingerprint: str, response: bytes, ttl_seconds: float
    ) -> bool:
        """Store the response for replays; False if the key holds another body or a result."""
        ...

    async def idem_abandon(self, key: str, owner: str | None = None) -> bool:
        """Drop an unfinished claim so a retry may run; a finished result is kept.

        With ``owner``, only a claim made with that token is dropped: a claimer that lost
        track of its claim (a store timeout) can take back its own, never a later caller's."""
        ...

    # -- batches: one call's phase in one atomic step (one round trip on Redis) ---------------

    async def admit(self, ops: Sequence[AdmitOp]) -> AdmitResult:
        """Run ``take``/``incr_if_below``/``breaker_allow``/``reserve`` operations all or none.

        Equivalent to running them in order and stopping at the first refusal, except that a
        refusal leaves everything unchanged (see ``bastion.state.plan``).
        """
        ...

    async def finish(self, ops: Sequence[FinishOp]) -> tuple[FinishAnswer, ...]:
        """Run ``settle``/``release``/``charge``/``incr``/``breaker_record`` operations at once."""
        ...

    # -- lifecycle ---------------------------------------------------------------------------

    async def ping(self) -> None:
        """Prove the backend answers, for readiness checks."""
        ...

    async def close(self) -> None:
        """Persist what must survive and release connections."""
        ...

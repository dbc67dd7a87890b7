"""Batched counter-store operations: one call's admission, or its settle, in one atomic step.

A call's guards each need the store once per phase (rate limits, the breaker, the spend caps,
the conversation's token cap when it is admitted; the settle, the tokens-per-minute charge,
the conversation's give-back and the breaker's outcome when it ends). On Redis each separate
operation is a network round trip, so ``CounterStore.admit`` and ``CounterStore.finish``
take the whole list and run it as one Lua script (one round trip), and the memory store
runs the same logic without an ``await`` in between.

``admit`` is all-or-nothing and equivalent to running its operations one by one in order and
stopping at the first refusal, except that nothing is written when any refuses: the result
then names the refusing operation (``refused``) and holds the answers up to and including
it, exactly as the one-by-one calls would have given them. ``finish`` never refuses; it
applies every operation and returns each one's answer.

Two operations of one admission must not touch the same key (a bucket, counter, breaker,
cap or reservation), so checking them all before writing any is the same as running them in
order. A settle's operations run in order, so several may touch one cap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bastion.state.base import (
    BreakerDecision,
    BreakerPolicy,
    BreakerState,
    Cap,
    IncrResult,
    ReserveResult,
    TakeResult,
    _non_negative,
    _positive,
    check_reserve,
)

__all__ = [
    "AdmitAnswer",
    "AdmitOp",
    "AdmitResult",
    "AllowBreaker",
    "Charge",
    "FinishAnswer",
    "FinishOp",
    "Incr",
    "RecordBreaker",
    "Reserve",
    "Settle",
    "Take",
    "check_admit",
    "check_finish",
]


@dataclass(frozen=True, slots=True)
class Take:
    """``take(key, rate_per_second, burst, cost)``: refuses when the bucket lacks ``cost``."""

    key: str
    rate_per_second: float
    burst: float
    cost: float = 1.0


@dataclass(frozen=True, slots=True)
class Incr:
    """``incr_if_below`` with a ``limit`` (refuses above it), else ``incr`` (never refuses)."""

    key: str
    amount: float
    ttl_seconds: float
    limit: float | None = None


@dataclass(frozen=True, slots=True)
class AllowBreaker:
    """``breaker_allow(key, policy)``: refuses while the breaker is open."""

    key: str
    policy: BreakerPolicy


@dataclass(frozen=True, slots=True)
class Reserve:
    """``reserve(reservation_id, caps, amount, lease_seconds)``: refuses over a cap."""

    reservation_id: str
    caps: tuple[Cap, ...]
    amount: float
    lease_seconds: float


@dataclass(frozen=True, slots=True)
class Settle:
    """``settle(reservation_id, actual)``, or ``release`` when ``actual`` is None.

    ``caps`` are the caps it was reserved on, so the Redis script is given every key it
    touches (a Cluster routes a script by its keys).
    """

    reservation_id: str
    caps: tuple[Cap, ...]
    actual: float | None


@dataclass(frozen=True, slots=True)
class Charge:
    """``charge(key, rate_per_second, burst, amount)``."""

    key: str
    rate_per_second: float
    burst: float
    amount: float


@dataclass(frozen=True, slots=True)
class RecordBreaker:
    """``breaker_record(key, ok, policy)``."""

    key: str
    ok: bool
    policy: BreakerPolicy


AdmitOp = Take | Incr | AllowBreaker | Reserve
FinishOp = Settle | Charge | Incr | RecordBreaker
AdmitAnswer = TakeResult | IncrResult | BreakerDecision | ReserveResult
FinishAnswer = bool | float | BreakerState


@dataclass(frozen=True, slots=True)
class AdmitResult:
    """``refused`` is the index of the first refusing operation (None: all were applied).

    ``results`` holds one answer per operation up to the refusing one included: a
    ``TakeResult``, ``IncrResult``, ``BreakerDecision`` or ``ReserveResult``.
    """

    refused: int | None
    results: tuple[AdmitAnswer, ...]

    @property
    def ok(self) -> bool:
        return self.refused is None


def _touched(op: AdmitOp | FinishOp) -> list[str]:
    """The keys an operation touches, namespaced by kind."""
    if isinstance(op, Take | Charge):
        return [f"tb:{op.key}"]
    if isinstance(op, Incr):
        return [f"ctr:{op.key}"]
    if isinstance(op, AllowBreaker | RecordBreaker):
        return [f"br:{op.key}"]
    return [f"res:{op.reservation_id}", *(f"cap:{c.key}" for c in op.caps)]


def _distinct(ops: Sequence[AdmitOp | FinishOp]) -> None:
    seen: set[str] = set()
    for op in ops:
        for key in _touched(op):
            if key in seen:
                raise ValueError(f"two operations of one plan touch the same key {key!r}")
            seen.add(key)


def check_admit(ops: Sequence[AdmitOp]) -> None:
    """Validate an admission plan identically for all backends (bugs raise ``ValueError``)."""
    for op in ops:
        if isinstance(op, Take):
            _positive("rate_per_second", op.rate_per_second)
            _non_negative("burst", op.burst)
            _non_negative("cost", op.cost)
        elif isinstance(op, Incr):
            _positive("ttl_seconds", op.ttl_seconds)
        elif isinstance(op, Reserve):
            check_reserve(op.caps, op.amount, op.lease_seconds)
        elif not isinstance(op, AllowBreaker):
            raise ValueError(f"not an admission operation: {op!r}")
    _distinct(ops)


def check_finish(ops: Sequence[FinishOp]) -> None:
    """Validate a settle plan identically for all backends (bugs raise ``ValueError``)."""
    for op in ops:
        if isinstance(op, Settle):
            if op.actual is not None:
                _non_negative("actual", op.actual)
            if not op.caps:
                raise ValueError("a settle needs the caps it was reserved on")
        elif isinstance(op, Charge):
            _positive("rate_per_second", op.rate_per_second)
            _non_negative("burst", op.burst)
        elif isinstance(op, Incr):
            _positive("ttl_seconds", op.ttl_seconds)
            if op.limit is not None:
                raise ValueError("a settle's counter change takes no limit")
        elif not isinstance(op, RecordBreaker):
            raise ValueError(f"not a settle operation: {op!r}")

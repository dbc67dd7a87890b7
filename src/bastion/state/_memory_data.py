"""The in-process records behind ``MemoryCounterStore``, one small class per kind of counter."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Bucket", "CapState", "Counter", "Idem", "Reservation"]


@dataclass(slots=True)
class CapState:
    """One cap: ``reserved`` is kept equal to the sum of ``leases`` so a check costs O(1).

    ``heap`` orders leases by end time (lazily: settled ones are skipped when popped), so
    dropping expired leases costs only the expired ones.
    """

    settled: float
    expires_at: float
    reserved: float = 0.0
    leases: dict[str, tuple[float, float]] = field(default_factory=dict)  # id -> (amount, until)
    heap: list[tuple[float, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Reservation:
    """Which caps a reservation touched, kept past its lease so a late settle still counts."""

    caps: tuple[tuple[str, float], ...]  # (cap key, cap ttl seconds)
    expires_at: float


@dataclass(slots=True)
class Counter:
    value: float
    expires_at: float


@dataclass(slots=True)
class Bucket:
    """Tokens at ``ts``; after ``full_at`` the bucket is full and the entry can go."""

    tokens: float
    ts: float
    full_at: float


@dataclass(slots=True)
class Idem:
    fingerprint: str
    done: bool
    lock_until: float
    response: bytes | None
    expires_at: float

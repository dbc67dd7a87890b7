"""The in-process records behind ``MemoryCounterStore``, one small class per kind of counter."""

from __future__ import annotations

import heapq
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

    def hold(self, reservation_id: str, amount: float, until: float) -> None:
        self.leases[reservation_id] = (amount, until)
        heapq.heappush(self.heap, (until, reservation_id))
        self.reserved += amount

    def drop(self, reservation_id: str) -> None:
        lease = self.leases.pop(reservation_id, None)
        if lease is not None:
            self.reserved = (self.reserved - lease[0]) if self.leases else 0.0

    def prune(self, now: float) -> None:
        """Forget leases that ended: their calls crashed or outlived their deadline."""
        heap = self.heap
        while heap and heap[0][0] <= now:
            until, rid = heapq.heappop(heap)
            lease = self.leases.get(rid)
            if lease is not None and lease[1] == until:
                del self.leases[rid]
                self.reserved -= lease[0]
        if not self.leases:
            self.reserved = 0.0  # no float residue once nothing is reserved
            heap.clear()
        elif len(heap) > 2 * len(self.leases) + 64:  # mostly settled entries: rebuild
            self.heap = [(until, rid) for rid, (_, until) in self.leases.items()]
            heapq.heapify(self.heap)


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
    owner: str = ""  # the claimer's token: only it may abandon the claim (not persisted)

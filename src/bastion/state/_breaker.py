"""The in-process circuit breaker; ``_lua.BREAKER`` is the same state machine, line for line.

The error-rate window is a ring of ``BUCKETS`` buckets (each ``window / BUCKETS`` wide), so the
rate covers the last window to within one bucket at constant memory, in Python and in Redis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

from bastion.state.base import BreakerDecision, BreakerPolicy, BreakerState

__all__ = ["BUCKETS", "Breaker", "retention"]

BUCKETS: Final = 10


def retention(policy: BreakerPolicy) -> float:
    """How long an untouched breaker is kept: past its window and cooldown, it is just closed."""
    return 2 * max(policy.window_seconds, policy.cooldown_seconds) + 60.0


def _ring() -> list[list[float]]:
    return [[-1.0, 0.0, 0.0] for _ in range(BUCKETS)]


@dataclass(slots=True)
class Breaker:
    """One breaker's state; ``open_until`` ends the cooldown, ``probe_until`` a probe's lease.

    The caller drops it after ``keep_until``, as Redis expires the key.
    """

    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    open_until: float = 0.0
    probe_until: float = 0.0
    ring: list[list[float]] = field(default_factory=_ring)  # [epoch, calls, failures]
    keep_until: float = 0.0

    def allow(self, now: float, policy: BreakerPolicy) -> BreakerDecision:
        if self.state is BreakerState.CLOSED:
            return BreakerDecision(True, BreakerState.CLOSED)
        until = self.open_until if self.state is BreakerState.OPEN else self.probe_until
        if now < until:
            return BreakerDecision(False, self.state, retry_after_seconds=until - now)
        # Cooldown over (or the last probe never reported): one caller gets the probe.
        self.state = BreakerState.HALF_OPEN
        self.probe_until = now + policy.cooldown_seconds
        self.keep_until = now + retention(policy)
        return BreakerDecision(True, BreakerState.HALF_OPEN, probe=True)

    def record(self, ok: bool, now: float, policy: BreakerPolicy) -> BreakerState:
        self.keep_until = now + retention(policy)
        if self.state is BreakerState.HALF_OPEN:
            if ok:
                self._reset(BreakerState.CLOSED)
            else:
                self._open(now, policy)
            return self.state
        if self.state is BreakerState.OPEN:
            return self.state  # a late answer from before the breaker opened
        width = policy.window_seconds / BUCKETS
        epoch = float(math.floor(now / width))
        calls = fails = 0.0
        for i, bucket in enumerate(self.ring):
            if i == int(epoch) % BUCKETS:
                if bucket[0] != epoch:
                    bucket[:] = [epoch, 0.0, 0.0]
                bucket[1] += 1
                bucket[2] += 0 if ok else 1
            if bucket[0] > epoch - BUCKETS:
                calls += bucket[1]
                fails += bucket[2]
        self.failures = 0 if ok else self.failures + 1
        if not ok and (
            (policy.failure_threshold > 0 and self.failures >= policy.failure_threshold)
            or (calls >= policy.min_calls and fails / calls >= policy.error_rate)
        ):
            self._open(now, policy)
        return self.state

    def _open(self, now: float, policy: BreakerPolicy) -> None:
        self._reset(BreakerState.OPEN)
        self.open_until = now + policy.cooldown_seconds

    def _reset(self, state: BreakerState) -> None:
        self.state = state
        self.failures = 0
        self.open_until = self.probe_until = 0.0
        self.ring = _ring()

"""Retention: prompt and answer text ages out first, call metadata later, the spend ledger never.

Bodies carry the risk (PII that slipped past the scrubber, customer data) and are the bulk of
the bytes, so they go first (``bodies_days``); tokens, cost, latency and flags stay for
dashboards and incident reconstruction until ``metadata_days``. The ledger is what was spent
and is kept, which the stores guarantee by never touching it in either delete.

Call metadata goes by whole UTC days: a call is deleted once its day has ended before the
``metadata_days`` cut-off. On PostgreSQL a day is one partition of the call table, so each pass
drops partitions instead of deleting rows; SQLite deletes the same rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..store import RecordStore

__all__ = ["RetentionResult", "RetentionTask", "run_retention"]

log = logging.getLogger("bastion.retention")

DAY: float = 86400.0


@dataclass(frozen=True, slots=True)
class RetentionResult:
    """What one pass did; ``None`` cut-offs mean that kind of data is kept forever."""

    bodies_cleared: int
    calls_deleted: int
    bodies_before: float | None
    metadata_before: float | None  # calls go when their whole UTC day is before this


def _day_floor(ts: float) -> float:
    """Midnight UTC at or before ``ts``: where a day partition of the call table starts."""
    return math.floor(ts / DAY) * DAY


def _cutoff(name: str, days: float | None, now: float) -> float | None:
    if days is None:
        return None
    if not (days >= 0 and math.isfinite(days)):
        raise ValueError(f"{name} must be a non-negative number of days or None, got {days!r}")
    return now - days * DAY


async def run_retention(
    store: RecordStore,
    *,
    bodies_days: float | None,
    metadata_days: float | None,
    now: float | None = None,
) -> RetentionResult:
    """Delete calls older than ``metadata_days``, then clear text of calls older than ``bodies_days``.

    Metadata goes first so the body pass does not rewrite rows about to be deleted.
    """
    t = time.time() if now is None else now
    bodies_before = _cutoff("bodies_days", bodies_days, t)
    metadata_before = _cutoff("metadata_days", metadata_days, t)
    deleted = (
        await store.delete_calls_before(_day_floor(metadata_before))
        if metadata_before is not None
        else 0
    )
    cleared = (
        await store.delete_call_bodies_before(bodies_before) if bodies_before is not None else 0
    )
    return RetentionResult(cleared, deleted, bodies_before, metadata_before)


class RetentionTask:
    """Runs ``run_retention`` at start and then every ``interval_seconds``; a failed pass is logged
    and retried at the next interval, never fatal to the gateway."""

    def __init__(
        self,
        store: RecordStore,
        *,
        bodies_days: float | None,
        metadata_days: float | None,
        interval_seconds: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not interval_seconds > 0:
            raise ValueError("interval_seconds must be > 0")
        _cutoff("bodies_days", bodies_days, 0.0)  # validate now, not at the first pass
        _cutoff("metadata_days", metadata_days, 0.0)
        self._store = store
        self._bodies = bodies_days
        self._metadata = metadata_days
        self._interval = interval_seconds
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.runs = 0
        self.failures = 0
        self.last_result: RetentionResult | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def run_once(self) -> RetentionResult:
        result = await run_retention(
            self._store,
            bodies_days=self._bodies,
            metadata_days=self._metadata,
            now=self._clock(),
        )
        self.runs += 1
        self.last_result = result
        if result.bodies_cleared or result.calls_deleted:
            log.info(
                "retention: cleared bodies of %d calls, deleted %d calls",
                result.bodies_cleared,
                result.calls_deleted,
            )
        return result

    def start(self) -> None:
        """Start the periodic loop on the running event loop (idempotent)."""
        if self.running:
            return
        self._stop = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="bastion-retention")

    async def stop(self) -> None:
        """Stop the loop after the pass in progress (cancelled only if it hangs)."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stop.set()
        # let a pass in progress finish: cancelling mid-transaction would leave the store
        # connection inside BEGIN for whoever writes next (the recorder's final flush)
        done, _ = await asyncio.wait({task}, timeout=10.0)
        if not done:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                await self.run_once()
            except Exception as exc:  # store down, lock timeout: try again next interval
                self.failures += 1
                log.warning("retention pass failed: %s: %s", type(exc).__name__, exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._stop.wait()

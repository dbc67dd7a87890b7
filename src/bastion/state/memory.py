"""The embedded counter store: plain dicts in one process, optionally persisted to SQLite.

Atomicity comes from asyncio itself: every operation runs its read-check-write without an
``await`` in between, so no other coroutine can interleave. That only holds inside one
process: two processes (or two gateways) must share Redis, never this store or its file.
The one exception is flags (the kill switch): they are written through to the file at once
and re-read when another process has written to it (see ``_flag_file``), so ``bastion kill``
from another process, or another gateway on the same file, is obeyed within a poll.

Persistence (``path`` given) is write-behind: operations mark keys dirty, and a background
task writes them every ``flush_interval`` seconds (0.5 by default) and on ``close()``; the
file is read once at start. Kept across a restart: settled spend per cap, windowed counters,
flags with their meta, and idempotency entries. Not kept: live reservations (their calls died
with the process, as an expired lease would say), token buckets and breakers (they refill or
re-learn within seconds).

Crash window: a hard crash (SIGKILL, power loss) loses at most the last ``flush_interval`` of
changes, so after it a cap may be overshot by the spend settled in that window, a day counter
may undercount by as much, and a just-finished idempotent request may run once more (a flag
flip is already on disk). ``close()`` on shutdown loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from bastion.errors import StateUnavailable
from bastion.state._breaker import Breaker
from bastion.state._flag_file import FlagFile
from bastion.state._memory_data import Bucket, CapState, Counter, Idem, Reservation
from bastion.state._snapshot import TABLES, Row, SnapshotFile
from bastion.state.base import (
    BreakerDecision,
    BreakerPolicy,
    BreakerState,
    Cap,
    IdemBegin,
    IdemOutcome,
    IncrResult,
    ReserveResult,
    TakeResult,
    Usage,
    check_reserve,
)
from bastion.state.plan import (
    AdmitOp,
    AdmitResult,
    AllowBreaker,
    Charge,
    FinishAnswer,
    FinishOp,
    Incr,
    RecordBreaker,
    Settle,
    Take,
    check_admit,
    check_finish,
)

__all__ = ["MemoryCounterStore"]

log = logging.getLogger(__name__)


class MemoryCounterStore:
    """Counters for one process; pass ``path`` to survive restarts (see the module docstring)."""

    def __init__(
        self,
        path: str | None = None,
        *,
        flush_interval: float = 0.5,
        sweep_interval: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._file = SnapshotFile(path) if path else None
        self._flag_file = FlagFile(path) if path else None
        self._flush_interval = flush_interval
        self._sweep_interval = sweep_interval
        self._clock = clock
        self._caps: dict[str, CapState] = {}
        self._reservations: dict[str, Reservation] = {}
        self._buckets: dict[str, Bucket] = {}
        self._counters: dict[str, Counter] = {}
        self._flags: dict[str, str] = {}
        self._flag_meta: dict[str, dict[str, Any]] = {}
        self._breakers: dict[str, Breaker] = {}
        self._idem: dict[str, Idem] = {}
        self._dirty: dict[str, set[str]] = {table: set() for table in TABLES}
        self._start_lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False
        self._next_sweep = 0.0

    # -- budgets -------------------------------------------------------------------------------

    async def reserve(
        self, reservation_id: str, caps: Sequence[Cap], amount: float, lease_seconds: float
    ) -> ReserveResult:
        check_reserve(caps, amount, lease_seconds)
        return self._reserve(reservation_id, caps, amount, lease_seconds, await self._now())

    def _reserve(
        self,
        reservation_id: str,
        caps: Sequence[Cap],
        amount: float,
        lease_seconds: float,
        now: float,
        apply: bool = True,
    ) -> ReserveResult:
        """Check (and with ``apply``, hold) a reservation; no ``await``, so it is atomic."""
        if reservation_id in self._reservations:
            return ReserveResult(True)
        for cap in caps:
            state = self._cap(cap.key, now)
            settled, reserved = (0.0, 0.0) if state is None else (state.settled, state.reserved)
            if settled + reserved + amount > cap.limit:
                return ReserveResult(False, cap.key, cap.limit, settled, reserved)
        if not apply:
            return ReserveResult(True)
        until = now + lease_seconds
        for cap in caps:
            state = self._cap(cap.key, now) or self._new_cap(cap.key, now + cap.ttl_seconds)
            state.hold(reservation_id, amount, until)
        ttls = tuple((cap.key, cap.ttl_seconds) for cap in caps)
        self._reservations[reservation_id] = Reservation(ttls, now + max(t for _, t in ttls))
        return ReserveResult(True)

    async def settle(self, reservation_id: str, actual: float) -> bool:
        if not (actual >= 0 and math.isfinite(actual)):
            raise ValueError(f"actual must be a non-negative finite number, got {actual!r}")
        return await self._finish(reservation_id, actual)

    async def release(self, reservation_id: str) -> bool:
        return await self._finish(reservation_id, None)

    async def _finish(self, reservation_id: str, actual: float | None) -> bool:
        return self._settle(reservation_id, actual, await self._now())

    def _settle(self, reservation_id: str, actual: float | None, now: float) -> bool:
        reservation = self._reservations.pop(reservation_id, None)
        if reservation is None or reservation.expires_at <= now:
            return False
        for key, ttl in reservation.caps:
            state = self._cap(key, now)
            if state is not None:
                state.drop(reservation_id)
            if actual is not None:
                state = state or self._new_cap(key, now + ttl)
                state.settled += actual
                self._dirty["caps"].add(key)
        return True

    async def usage(self, cap_key: str) -> Usage:
        state = self._cap(cap_key, await self._now())
        return Usage(0.0, 0.0) if state is None else Usage(state.settled, state.reserved)

    def _cap(self, key: str, now: float) -> CapState | None:
        """The cap's live state with expired leases dropped; None once the cap's day is over."""
        state = self._caps.get(key)
        if state is None:
            return None
        if state.expires_at <= now:
            del self._caps[key]
            self._dirty["caps"].add(key)
            return None
        state.prune(now)
        return state

    def _new_cap(self, key: str, expires_at: float) -> CapState:
        state = self._caps[key] = CapState(0.0, expires_at)
        return state

    # -- token buckets -------------------------------------------------------------------------

    async def take(
        self, key: str, rate_per_second: float, burst: float, cost: float = 1.0
    ) -> TakeResult:
        return self._take(key, rate_per_second, burst, cost, await self._now())

    def _take(
        self,
        key: str,
        rate_per_second: float,
        burst: float,
        cost: float,
        now: float,
        apply: bool = True,
    ) -> TakeResult:
        tokens = self._tokens(key, rate_per_second, burst, now)
        if tokens >= cost:
            if apply:
                self._put_tokens(key, tokens - cost, rate_per_second, burst, now)
            return TakeResult(True, 0.0, tokens - cost)
        wait = math.inf if cost > burst else (cost - tokens) / rate_per_second
        return TakeResult(False, wait, tokens)

    async def charge(self, key: str, rate_per_second: float, burst: float, amount: float) -> float:
        return self._charge(key, rate_per_second, burst, amount, await self._now())

    def _charge(
        self, key: str, rate_per_second: float, burst: float, amount: float, now: float
    ) -> float:
        tokens = min(burst, self._tokens(key, rate_per_second, burst, now) - amount)
        self._put_tokens(key, tokens, rate_per_second, burst, now)
        return tokens

    def _tokens(self, key: str, rate: float, burst: float, now: float) -> float:
        bucket = self._buckets.get(key)
        if bucket is None:
            return burst
        return min(burst, bucket.tokens + max(0.0, now - bucket.ts) * rate)

    def _put_tokens(self, key: str, tokens: float, rate: float, burst: float, now: float) -> None:
        self._buckets[key] = Bucket(tokens, now, now + (burst - tokens) / rate)

    # -- windowed counters ---------------------------------------------------------------------

    async def incr(self, key: str, amount: float, ttl_seconds: float) -> float:
        return (await self.incr_if_below(key, amount, math.inf, ttl_seconds)).value

    async def incr_if_below(
        self, key: str, amount: float, limit: float, ttl_seconds: float
    ) -> IncrResult:
        return self._incr(key, amount, limit, ttl_seconds, await self._now())

    def _incr(
        self,
        key: str,
        amount: float,
        limit: float,
        ttl_seconds: float,
        now: float,
        apply: bool = True,
    ) -> IncrResult:
        counter = self._counter(key, now)
        value = 0.0 if counter is None else counter.value
        if value + amount > limit:
            return IncrResult(False, value)
        if not apply:
            return IncrResult(True, value + amount)
        if counter is None:
            counter = self._counters[key] = Counter(0.0, now + ttl_seconds)
        counter.value = value + amount
        self._dirty["counters"].add(key)
        return IncrResult(True, counter.value)

    async def get(self, key: str) -> float:
        counter = self._counter(key, await self._now())
        return 0.0 if counter is None else counter.value

    def _counter(self, key: str, now: float) -> Counter | None:
        counter = self._counters.get(key)
        if counter is not None and counter.expires_at <= now:
            del self._counters[key]
            self._dirty["counters"].add(key)
            return None
        return counter

    # -- flags ---------------------------------------------------------------------------------

    async def set_flag(
        self, key: str, value: str | None, meta: Mapping[str, Any] | None = None
    ) -> None:
        """Written through to the file at once (not behind): other processes obey it next poll."""
        await self._now()
        raw = orjson.dumps(dict(meta or {}))  # JSON, as in Redis
        if self._flag_file is not None:
            await self._flag_file.write(key, value, raw)
        self._put_flag(key, value, raw)

    async def get_flags(self, prefix: str = "") -> dict[str, str]:
        await self._sync_flags()
        return {k: v for k, v in self._flags.items() if k.startswith(prefix)}

    async def flag_meta(self, key: str) -> dict[str, Any] | None:
        await self._sync_flags()
        meta = self._flag_meta.get(key)
        return None if meta is None else dict(meta)

    async def _sync_flags(self) -> None:
        """Take the file's flags when another process (CLI, replica) has written to the file."""
        await self._now()
        rows = None if self._flag_file is None else await self._flag_file.changed()
        if rows is not None:
            self._flags.clear()
            self._flag_meta.clear()
            for key, value, raw in rows:
                self._put_flag(key, value, raw)

    def _put_flag(self, key: str, value: str | None, raw: bytes) -> None:
        if value is None:
            self._flags.pop(key, None)
        else:
            self._flags[key] = value
        self._flag_meta[key] = orjson.loads(raw)

    # -- circuit breakers ----------------------------------------------------------------------

    async def breaker_allow(self, key: str, policy: BreakerPolicy) -> BreakerDecision:
        return self._allow(key, policy, await self._now())

    def _allow(
        self, key: str, policy: BreakerPolicy, now: float, apply: bool = True
    ) -> BreakerDecision:
        breaker = self._breakers.get(key)
        if breaker is None or breaker.keep_until <= now:
            return BreakerDecision(True, BreakerState.CLOSED)
        if apply or breaker.state is BreakerState.CLOSED:
            return breaker.allow(now, policy)
        until = breaker.open_until if breaker.state is BreakerState.OPEN else breaker.probe_until
        if now < until:
            return BreakerDecision(False, breaker.state, retry_after_seconds=until - now)
        return BreakerDecision(True, BreakerState.HALF_OPEN, probe=True)

    async def breaker_peek(self, key: str) -> BreakerDecision:
        now = await self._now()
        breaker = self._breakers.get(key)
        if breaker is None or breaker.keep_until <= now or breaker.state is BreakerState.CLOSED:
            return BreakerDecision(True, BreakerState.CLOSED)
        until = breaker.open_until if breaker.state is BreakerState.OPEN else breaker.probe_until
        return BreakerDecision(
            now >= until, breaker.state, retry_after_seconds=max(0.0, until - now)
        )

    async def breaker_record(self, key: str, ok: bool, policy: BreakerPolicy) -> BreakerState:
        return self._record(key, ok, policy, await self._now())

    def _record(self, key: str, ok: bool, policy: BreakerPolicy, now: float) -> BreakerState:
        breaker = self._breakers.get(key)
        if breaker is None or breaker.keep_until <= now:
            breaker = self._breakers[key] = Breaker()
        return breaker.record(ok, now, policy)

    # -- batches -------------------------------------------------------------------------------

    async def admit(self, ops: Sequence[AdmitOp]) -> AdmitResult:
        """Check every operation, then apply them all; no ``await`` in between (atomic)."""
        check_admit(ops)
        now = await self._now()
        answers = []
        for i, op in enumerate(ops):
            answer = self._admit_one(op, now, apply=False)
            answers.append(answer)
            if not _allowed(answer):
                return AdmitResult(i, tuple(answers))
        return AdmitResult(None, tuple(self._admit_one(op, now, apply=True) for op in ops))

    def _admit_one(
        self, op: AdmitOp, now: float, *, apply: bool
    ) -> TakeResult | IncrResult | BreakerDecision | ReserveResult:
        if isinstance(op, Take):
            return self._take(op.key, op.rate_per_second, op.burst, op.cost, now, apply)
        if isinstance(op, Incr):
            limit = math.inf if op.limit is None else op.limit
            return self._incr(op.key, op.amount, limit, op.ttl_seconds, now, apply)
        if isinstance(op, AllowBreaker):
            return self._allow(op.key, op.policy, now, apply)
        return self._reserve(op.reservation_id, op.caps, op.amount, op.lease_seconds, now, apply)

    async def finish(self, ops: Sequence[FinishOp]) -> tuple[FinishAnswer, ...]:
        check_finish(ops)
        now = await self._now()
        return tuple(self._finish_one(op, now) for op in ops)

    def _finish_one(self, op: FinishOp, now: float) -> FinishAnswer:
        if isinstance(op, Settle):
            return self._settle(op.reservation_id, op.actual, now)
        if isinstance(op, Charge):
            return self._charge(op.key, op.rate_per_second, op.burst, op.amount, now)
        if isinstance(op, Incr):
            return self._incr(op.key, op.amount, math.inf, op.ttl_seconds, now).value
        assert isinstance(op, RecordBreaker)
        return self._record(op.key, op.ok, op.policy, now)

    # -- idempotency ---------------------------------------------------------------------------

    async def idem_begin(
        self, key: str, fingerprint: str, ttl_seconds: float, lock_seconds: float, owner: str = ""
    ) -> IdemBegin:
        now = await self._now()
        entry = self._idem_entry(key, now)
        if entry is None:
            lock_until, expires_at = now + lock_seconds, now + ttl_seconds
            self._idem[key] = Idem(fingerprint, False, lock_until, None, expires_at, owner)
        elif entry.fingerprint != fingerprint:
            return IdemBegin(IdemOutcome.MISMATCH)
        elif entry.done:
            return IdemBegin(IdemOutcome.DONE, entry.response)
        elif entry.lock_until > now:
            return IdemBegin(IdemOutcome.IN_PROGRESS, retry_after_seconds=entry.lock_until - now)
        else:  # the holder's lock ran out: it crashed or hung, so this caller takes over
            entry.lock_until = now + lock_seconds
            entry.expires_at = now + ttl_seconds
            entry.owner = owner
        self._dirty["idem"].add(key)
        return IdemBegin(IdemOutcome.NEW)

    async def idem_complete(
        self, key: str, fingerprint: str, response: bytes, ttl_seconds: float
    ) -> bool:
        now = await self._now()
        entry = self._idem_entry(key, now)
        if entry is not None and (entry.fingerprint != fingerprint or entry.done):
            return False
        self._idem[key] = Idem(fingerprint, True, 0.0, bytes(response), now + ttl_seconds)
        self._dirty["idem"].add(key)
        return True

    async def idem_abandon(self, key: str, owner: str | None = None) -> bool:
        entry = self._idem_entry(key, await self._now())
        if entry is None or entry.done or (owner is not None and entry.owner != owner):
            return False
        del self._idem[key]
        self._dirty["idem"].add(key)
        return True

    def _idem_entry(self, key: str, now: float) -> Idem | None:
        entry = self._idem.get(key)
        if entry is not None and entry.expires_at <= now:
            del self._idem[key]
            self._dirty["idem"].add(key)
            return None
        return entry

    # -- lifecycle and persistence -------------------------------------------------------------

    async def ping(self) -> None:
        await self._now()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        if self._task is not None:
            await self._task
        try:
            await self._flush()
        finally:
            if self._file is not None:
                await self._file.close()
            if self._flag_file is not None:
                await self._flag_file.close()

    async def _now(self) -> float:
        """Start on first use (load the file, start the writer), then read the clock."""
        if not self._started or self._closed:
            await self._start()  # raises once closed
        return self._clock()

    async def _start(self) -> None:
        async with self._start_lock:
            if self._closed:
                raise StateUnavailable("counter store is closed")
            if self._started:
                return
            if self._file is not None:
                self._load((await self._file.open(self._clock())).rows)
            if self._flag_file is not None:  # after the snapshot: it creates the flags table
                for key, value, raw in await self._flag_file.open():
                    self._put_flag(key, value, raw)
            self._task = asyncio.create_task(self._run(), name="bastion-state-writer")
            self._started = True

    def _load(self, rows: Mapping[str, Sequence[Row]]) -> None:
        for key, settled, expires_at in rows["caps"]:
            self._caps[key] = CapState(settled, expires_at)
        for key, value, expires_at in rows["counters"]:
            self._counters[key] = Counter(value, expires_at)
        for key, fingerprint, done, lock_until, response, expires_at in rows["idem"]:
            self._idem[key] = Idem(fingerprint, bool(done), lock_until, response, expires_at)

    async def _run(self) -> None:
        """Write dirty keys every interval and drop expired entries, until ``close()``."""
        interval = self._flush_interval if self._file is not None else self._sweep_interval
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), interval)
            try:
                self._sweep(self._clock())
                await self._flush()
            except Exception:
                log.exception("counter state write-behind failed; will retry")

    def _sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._sweep_interval
        for key in [k for k, s in self._caps.items() if s.expires_at <= now]:
            self._cap(key, now)
        for key in [k for k, c in self._counters.items() if c.expires_at <= now]:
            self._counter(key, now)
        for key in [k for k, e in self._idem.items() if e.expires_at <= now]:
            self._idem_entry(key, now)
        for rid in [r for r, v in self._reservations.items() if v.expires_at <= now]:
            del self._reservations[rid]
        for key in [k for k, b in self._buckets.items() if b.full_at <= now]:
            del self._buckets[key]
        for key in [k for k, b in self._breakers.items() if b.keep_until <= now]:
            del self._breakers[key]

    async def _flush(self) -> None:
        """Write the dirty keys' current rows in one transaction; on failure keep them dirty."""
        if self._file is None or not any(self._dirty.values()):
            return
        dirty, self._dirty = self._dirty, {table: set() for table in TABLES}
        upserts: dict[str, list[Row]] = {table: [] for table in TABLES}
        deletes: dict[str, list[str]] = {table: [] for table in TABLES}
        for table, keys in dirty.items():
            for key in keys:
                row = self._row(table, key)
                if row is None:
                    deletes[table].append(key)
                else:
                    upserts[table].append(row)
        try:
            await self._file.write(upserts, deletes)
        except BaseException:
            for table, keys in dirty.items():
                self._dirty[table] |= keys
            raise

    def _row(self, table: str, key: str) -> Row | None:
        if table == "caps":
            cap = self._caps.get(key)
            return None if cap is None else (key, cap.settled, cap.expires_at)
        if table == "counters":
            counter = self._counters.get(key)
            return None if counter is None else (key, counter.value, counter.expires_at)
        entry = self._idem.get(key)
        if entry is None:
            return None
        return (key, entry.fingerprint, int(entry.done), entry.lock_until, entry.response,
                entry.expires_at)  # fmt: skip


def _allowed(answer: TakeResult | IncrResult | BreakerDecision | ReserveResult) -> bool:
    """Whether one admission answer lets the plan go on."""
    if isinstance(answer, TakeResult):
        return answer.allowed
    if isinstance(answer, BreakerDecision):
        return answer.allowed
    return answer.ok

"""The budget's invariant, model-checked: reserve, settle, release, lease expiry, store outages
and the settle journal, in any order, on the embedded store (in memory and on SQLite) and Redis.

The machine plays what ``BudgetGuard`` does with a ``CounterStore`` and a ``SettleJournal``
(journal a settle the store cannot take; drain the journal before reserving) and keeps an exact
model of every reservation. After every step, for every cap:

* the store's settled spend and live holds are exactly the model's;
* settled + live holds + journaled-but-not-landed spend >= every actual spent on the cap;
* once the journal is empty, settled == the exact sum of actuals (nothing lost, nothing twice);
* settled + held <= limit, plus only what settles that landed after their own lease ended
  added (each can add at most its own actual; nothing else can push a cap over its limit).

Amounts are multiples of 1/64 and limits are dyadic, so every sum is exact in binary floating
point and in Redis (which stores ``%.17g``): the comparisons need no tolerance to be right, and
a double count is off by at least 1/64.
"""

from __future__ import annotations

import asyncio
import glob
import itertools
import math
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from _cost_support import SHARED_REDIS, delete_prefix, unique_prefix
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from bastion.cost.journal import SettleJournal
from bastion.errors import StateUnavailable
from bastion.state import Cap, CounterStore, MemoryCounterStore, ReserveResult, Usage, open_state

T = TypeVar("T")

DAY_TTL = 2 * 86400.0  # as BudgetGuard: caps outlive every lease and every clock jump below
LIMITS = {"global": 1.0, "feature:default": 0.75, "user:alice": 1.25}
CAP_NAMES = tuple(LIMITS)
LONG_LEASE = 3600.0  # never ends within one example, on any backend
EPS = 1e-9

AMOUNTS = st.integers(min_value=1, max_value=24).map(lambda k: k / 64)
# a cap subset of two or three caps, in any order (order decides which cap is named on refusal)
CAP_SETS = st.sampled_from([p for r in (2, 3) for p in itertools.permutations(CAP_NAMES, r)])
FRACTIONS = st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0])
PICK = st.integers(min_value=0, max_value=10_000)


class FakeClock:
    """The embedded store's injected clock: leases end only when the machine moves time."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class OutageStore:
    """A counter store that can be 'down' (every call raises ``StateUnavailable`` before it runs),
    or lose the reply of its next call (the call runs, then ``StateUnavailable`` is raised)."""

    def __init__(self, inner: CounterStore) -> None:
        self.inner = inner
        self.down = False
        self.lose_next_reply = False

    async def _call(self, op: Callable[[], Awaitable[T]]) -> T:
        if self.down:
            raise StateUnavailable("counter store down (test outage)")
        result = await op()
        if self.lose_next_reply:
            self.lose_next_reply = False
            raise StateUnavailable("reply lost (test outage)")
        return result

    async def reserve(
        self, reservation_id: str, caps: Sequence[Cap], amount: float, lease_seconds: float
    ) -> ReserveResult:
        return await self._call(
            lambda: self.inner.reserve(reservation_id, caps, amount, lease_seconds)
        )

    async def settle(self, reservation_id: str, actual: float) -> bool:
        return await self._call(lambda: self.inner.settle(reservation_id, actual))

    async def release(self, reservation_id: str) -> bool:
        return await self._call(lambda: self.inner.release(reservation_id))

    async def usage(self, cap_key: str) -> Usage:
        return await self._call(lambda: self.inner.usage(cap_key))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@dataclass
class Res:
    """The model of one reservation."""

    rid: str
    amount: float
    caps: tuple[str, ...]
    until: float  # lease end on the model's clock (Redis: +inf, or -inf once surely expired)
    orphan: bool = False  # the reserve landed but its caller never heard: nobody settles it
    actual: float | None = None  # the outcome the caller decided (None: release)
    decided: bool = False  # settled or released by the caller (landed or journaled)
    landed: bool = False  # the store has taken the settle or release
    journaled: bool = False  # waiting in the journal


class BudgetMachine(RuleBasedStateMachine):
    backend = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = tempfile.mkdtemp(prefix="budget-sm-")
        self.clock = FakeClock()
        self.prefix: str | None = None
        inner: CounterStore
        if self.backend == "memory":
            inner = MemoryCounterStore(clock=self.clock)
        elif self.backend == "sqlite":
            inner = MemoryCounterStore(path=os.path.join(self.tmp, "state.db"), clock=self.clock)
        else:
            self.prefix = unique_prefix()
            inner = open_state(SHARED_REDIS, prefix=self.prefix)
        self.inner = inner
        self.store = OutageStore(inner)
        self.journal_base = os.path.join(self.tmp, "settle-journal")
        # the background retry never fires within an example: `retry_tick` plays it instead,
        # so the model knows exactly when a journaled settle lands
        self.journal = SettleJournal(self.journal_base, retry_seconds=3600.0)
        self.journal.open()
        self.caps = {
            name: Cap(f"spend:2031-01-01:{name}", LIMITS[name], DAY_TTL) for name in LIMITS
        }
        self.res: list[Res] = []
        self.n = 0
        self.waits = 0
        self.late = dict.fromkeys(CAP_NAMES, 0.0)  # actuals that landed after their lease ended

    # -- plumbing ------------------------------------------------------------------------------

    def run(self, aw: Awaitable[T]) -> T:
        async def wrapped() -> T:
            return await aw

        return self.loop.run_until_complete(wrapped())

    def now(self) -> float:
        return self.clock.now if self.backend != "redis" else 0.0

    def live(self, r: Res) -> bool:
        return not r.landed and r.until > self.now()

    def settled_model(self, cap: str) -> float:
        return sum(
            r.actual for r in self.res if r.landed and r.actual is not None and cap in r.caps
        )

    def held_model(self, cap: str) -> float:
        return sum(r.amount for r in self.res if self.live(r) and cap in r.caps)

    def land(self, r: Res) -> None:
        """The store takes r's settle or release now (the first landing is the only one)."""
        if r.landed:
            return
        if r.actual is not None and r.until <= self.now():
            for cap in r.caps:
                self.late[cap] += r.actual
        r.landed = True

    def new_rid(self) -> str:
        self.n += 1
        return f"req_{self.n:04d}.{os.urandom(3).hex()}"

    async def guard_reserve(
        self, rid: str, caps: Sequence[Cap], amount: float, lease: float
    ) -> ReserveResult:
        """As ``BudgetGuard.reserve_attempt``: drain this process's journal, then reserve."""
        if len(self.journal):
            await self.journal.drain(self.store)
        return await self.store.reserve(rid, caps, amount, lease)

    async def guard_finish(self, rid: str, actual: float | None) -> None:
        """As ``BudgetGuard.after``: settle (or release), and journal what cannot land."""
        try:
            if actual is None:
                await self.store.release(rid)
            else:
                await self.store.settle(rid, actual)
        except StateUnavailable:
            self.journal.add(self.store, rid, actual)

    def expect_reserve(self, names: Sequence[str], amount: float) -> tuple[bool, str | None]:
        for name in names:
            used = self.settled_model(name) + self.held_model(name)
            if used + amount > LIMITS[name]:
                return False, name
        return True, None

    def do_reserve(
        self, amount: float, names: Sequence[str], lease: float, until: float
    ) -> Res | None:
        rid = self.new_rid()
        caps = [self.caps[n] for n in names]
        pending = [r for r in self.res if r.journaled]
        if self.store.down:
            try:
                self.run(self.guard_reserve(rid, caps, amount, lease))
            except StateUnavailable:
                return None  # fail closed: nothing held, nothing sent
            raise AssertionError("a reserve went through a store that is down")
        for r in pending:  # the drain lands them before the reservation is checked
            self.land(r)
            r.journaled = False
        ok, refused = self.expect_reserve(names, amount)
        res = self.run(self.guard_reserve(rid, caps, amount, lease))
        assert len(self.journal) == 0
        assert res.ok == ok, (res, names, amount)
        if not ok:
            assert refused is not None
            assert res.refused_cap == self.caps[refused].key
            assert math.isclose(res.settled, self.settled_model(refused), abs_tol=EPS)
            assert math.isclose(res.reserved, self.held_model(refused), abs_tol=EPS)
            return None
        r = Res(rid, amount, tuple(names), until)
        self.res.append(r)
        return r

    def finish(self, r: Res, actual: float | None) -> None:
        r.decided = True
        r.actual = actual
        if self.store.down:
            self.run(self.guard_finish(r.rid, actual))
            r.journaled = True
            return
        lose = self.store.lose_next_reply
        self.run(self.guard_finish(r.rid, actual))
        self.land(r)
        if lose:  # it landed, but the caller could not know: journaled too
            r.journaled = True

    def open_res(self) -> list[Res]:
        return [r for r in self.res if not r.decided and not r.orphan]

    # -- rules ---------------------------------------------------------------------------------

    @initialize(
        first=st.lists(st.tuples(AMOUNTS, CAP_SETS), min_size=1, max_size=3),
    )
    def some_calls_in_flight(self, first: list[tuple[float, tuple[str, ...]]]) -> None:
        for amount, names in first:
            self.do_reserve(amount, names, LONG_LEASE, self.now() + LONG_LEASE)

    @rule(amount=AMOUNTS, names=CAP_SETS)
    def reserve(self, amount: float, names: tuple[str, ...]) -> None:
        self.do_reserve(amount, names, LONG_LEASE, self.now() + LONG_LEASE)

    @precondition(lambda self: not self.store.down)
    @rule(amount=AMOUNTS, names=CAP_SETS)
    def reserve_reply_lost(self, amount: float, names: tuple[str, ...]) -> None:
        """The reserve lands but its reply is lost: the call is refused, and its hold stays
        until its lease ends (counted all along, never settled)."""
        if self.res_pending():  # as guard_reserve: the journal is drained first
            self.run(self.journal.drain(self.store))
            for r in self.res:
                if r.journaled:
                    self.land(r)
                    r.journaled = False
        rid = self.new_rid()
        ok, _ = self.expect_reserve(names, amount)
        self.store.lose_next_reply = True
        try:
            self.run(self.store.reserve(rid, [self.caps[n] for n in names], amount, LONG_LEASE))
        except StateUnavailable:
            pass
        else:
            raise AssertionError("the lost reply was not reported")
        if ok:
            self.res.append(Res(rid, amount, names, self.now() + LONG_LEASE, orphan=True))

    def res_pending(self) -> bool:
        return any(r.journaled for r in self.res)

    @precondition(lambda self: self.backend != "redis" or self.waits < 2)  # real sleeps: few
    @rule(amount=AMOUNTS, names=CAP_SETS)
    def reserve_and_let_the_lease_end(self, amount: float, names: tuple[str, ...]) -> None:
        """A reservation whose call outlives its lease (memory: time jumps; Redis: a real wait)."""
        if self.backend == "redis":
            r = self.do_reserve(amount, names, 0.03, math.inf)
            self.waits += 1
            time.sleep(0.07)  # Redis ends leases on its own clock: surely over now
            if r is not None:
                r.until = -math.inf
        else:
            self.do_reserve(amount, names, 0.5, self.now() + 0.5)
            self.clock.now += 0.5  # this lease ends now; so does any other ending by then

    @precondition(lambda self: bool(self.open_res()))
    @rule(pick=PICK, fraction=FRACTIONS, unknown=st.booleans())
    def settle(self, pick: int, fraction: float, unknown: bool) -> None:
        """Settle at an actual <= the reservation; an unknown outcome costs its reservation.
        A zero actual is a release, as BudgetGuard does."""
        opened = self.open_res()
        r = opened[pick % len(opened)]
        actual = r.amount if unknown else r.amount * fraction
        self.finish(r, actual if actual > 0 else None)

    @precondition(lambda self: bool(self.open_res()) and self.store.down)
    @rule(pick=PICK, fraction=FRACTIONS)
    def settle_during_outage(self, pick: int, fraction: float) -> None:
        """(As ``settle``, weighted towards outages: the journal's own path.)"""
        opened = self.open_res()
        r = opened[pick % len(opened)]
        self.finish(r, r.amount * fraction or None)

    @precondition(lambda self: bool(self.open_res()))
    @rule(pick=PICK)
    def release(self, pick: int) -> None:
        opened = self.open_res()
        self.finish(opened[pick % len(opened)], None)

    @precondition(lambda self: bool(self.open_res()) and not self.store.down)
    @rule(pick=PICK, fraction=FRACTIONS)
    def settle_reply_lost(self, pick: int, fraction: float) -> None:
        """The settle lands but the reply is lost: journaled, and replayed later, it must
        still count once."""
        opened = self.open_res()
        r = opened[pick % len(opened)]
        self.store.lose_next_reply = True
        self.finish(r, r.amount * fraction or r.amount)
        assert r.journaled and r.landed

    @precondition(lambda self: any(r.decided for r in self.res) and not self.store.down)
    @rule(pick=PICK)
    def duplicate_settle(self, pick: int) -> None:
        """The same settle again, straight to the store: counts once."""
        done = [r for r in self.res if r.decided]
        r = done[pick % len(done)]
        if r.actual is None:
            took = self.run(self.store.release(r.rid))
        else:
            took = self.run(self.store.settle(r.rid, r.actual))
        assert took == (not r.landed), (r, took)
        self.land(r)  # if only journaled so far, this lands it; the journal's replay is a no-op

    @precondition(lambda self: self.backend != "redis")
    @rule(seconds=st.sampled_from([0.25, 1.0, 30.0, 120.0, 4000.0]))
    def time_passes(self, seconds: float) -> None:
        """Leases end on the embedded stores' injected clock (4000 s: even the long ones)."""
        self.clock.now += seconds

    @precondition(lambda self: not self.store.down)
    @rule()
    def outage_starts(self) -> None:
        self.store.down = True

    @precondition(lambda self: self.store.down)
    @rule()
    def outage_ends(self) -> None:
        self.store.down = False

    @precondition(lambda self: self.res_pending())
    @rule()
    def retry_tick(self) -> None:
        """The journal's background retry: drain, or stay pending while the store is down."""
        try:
            self.run(self.journal.drain(self.store))
        except StateUnavailable:
            assert self.store.down
            return
        assert not self.store.down
        for r in self.res:
            if r.journaled:
                self.land(r)
                r.journaled = False

    # -- invariants ----------------------------------------------------------------------------

    def inner_usage(self, cap: str) -> Usage:
        return self.run(self.inner.usage(self.caps[cap].key))

    @invariant()
    def journal_holds_exactly_the_pending_settles(self) -> None:
        pending = {r.rid for r in self.res if r.journaled}
        assert len(self.journal) == len(pending)
        on_disk: set[str] = set()
        for path in glob.glob(glob.escape(self.journal_base) + ".*.jsonl"):
            with open(path, "rb") as fh:
                on_disk |= {orjson.loads(line)["id"] for line in fh.read().splitlines()}
        assert pending <= on_disk, "a journaled settle is not on disk"

    @invariant()
    def store_matches_the_model(self) -> None:
        for cap in CAP_NAMES:
            u = self.inner_usage(cap)
            assert math.isclose(u.settled, self.settled_model(cap), abs_tol=EPS), (cap, u)
            assert math.isclose(u.reserved, self.held_model(cap), abs_tol=EPS), (cap, u)

    @invariant()
    def spend_is_never_lost_never_doubled_never_over_the_cap(self) -> None:
        for cap in CAP_NAMES:
            u = self.inner_usage(cap)
            spent = sum(r.actual for r in self.res if r.decided and r.actual and cap in r.caps)
            pending = sum(
                r.actual
                for r in self.res
                if r.journaled and not r.landed and r.actual and cap in r.caps
            )
            assert u.settled + u.reserved + pending >= spent - EPS, (cap, u, pending, spent)
            assert math.isclose(u.settled + pending, spent, abs_tol=EPS), (cap, u, pending, spent)
            if not self.res_pending():
                assert math.isclose(u.settled, spent, abs_tol=EPS), (cap, u, spent)
            assert u.settled + u.reserved <= LIMITS[cap] + self.late[cap] + EPS, (
                cap,
                u,
                self.late[cap],
            )

    def teardown(self) -> None:
        try:
            self.store.down = False
            self.store.lose_next_reply = False
            self.run(self.journal.aclose(self.store))
            self.run(self.inner.close())
        finally:
            self.loop.close()
            if self.prefix is not None:
                delete_prefix(self.prefix)
            shutil.rmtree(self.tmp, ignore_errors=True)


def _machine(backend: str, examples: int) -> Any:
    cls: Any = type(f"Budget{backend.title()}Machine", (BudgetMachine,), {"backend": backend})
    case = cls.TestCase
    case.settings = settings(
        max_examples=examples,
        stateful_step_count=30,
        deadline=None,
        database=None,
        report_multiple_bugs=False,
        suppress_health_check=[HealthCheck.too_slow],
    )
    return case


TestBudgetInvariantMemory = _machine("memory", 50)
TestBudgetInvariantSqlite = _machine("sqlite", 30)
TestBudgetInvariantRedis = _machine("redis", 15)

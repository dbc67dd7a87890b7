"""The state host's remote store answers exactly as the embedded store it forwards to.

A hypothesis state machine drives random sequences of every ``CounterStore`` operation (budgets,
buckets, counters, flags, breakers, idempotency, batched admissions and settles, argument
mistakes) through ``RemoteCounterStore`` -> the state host -> a ``MemoryCounterStore``, and the
same sequence straight into a second ``MemoryCounterStore`` on the same fake clock. Every
answer, and every raised error type, must be equal. Also: several calls in flight on one
connection each get their own answer, and a host that goes away fails calls with
``StateUnavailable`` (and the client reconnects to a new one).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from bastion.errors import StateUnavailable
from bastion.state import BreakerPolicy, Cap, CounterStore, MemoryCounterStore, Usage
from bastion.state.host import StateHost
from bastion.state.plan import AllowBreaker, Charge, Incr, RecordBreaker, Reserve, Settle, Take
from bastion.state.remote import RemoteCounterStore

KEYS = st.sampled_from(["a", "b", "c"])
RIDS = st.sampled_from(["r1", "r2", "r3"])
AMOUNT = st.sampled_from([0.0, 0.25, 1.0, 2.5, 7.0, -1.0])
TTL = st.sampled_from([1.0, 5.0, 60.0])
CAPS = st.lists(
    st.builds(Cap, st.sampled_from(["c1", "c2", "c3"]), st.sampled_from([0.0, 3.0, 10.0]), TTL),
    min_size=0,
    max_size=3,
)
POLICY = st.builds(
    BreakerPolicy,
    failure_threshold=st.sampled_from([0, 1, 2]),
    error_rate=st.sampled_from([0.5, 1.0]),
    window_seconds=st.just(10.0),
    min_calls=st.sampled_from([1, 3]),
    cooldown_seconds=st.sampled_from([1.0, 4.0]),
)
ADMIT_OP = st.one_of(
    st.builds(Take, KEYS, st.just(1.0), st.just(2.0), AMOUNT),
    st.builds(Incr, KEYS, AMOUNT, TTL, st.none() | st.just(3.0)),
    st.builds(AllowBreaker, KEYS, POLICY),
    st.builds(Reserve, RIDS, CAPS.map(tuple), AMOUNT, TTL),
)
FINISH_OP = st.one_of(
    st.builds(Settle, RIDS, CAPS.map(tuple), st.none() | AMOUNT),
    st.builds(Charge, KEYS, st.just(1.0), st.just(2.0), AMOUNT),
    st.builds(Incr, KEYS, AMOUNT, TTL),
    st.builds(RecordBreaker, KEYS, st.booleans(), POLICY),
)


class RemoteEqualsLocal(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 1_000_000.0
        self.loop = asyncio.new_event_loop()
        self.dir = tempfile.mkdtemp(prefix="sh-")
        self.local = MemoryCounterStore(clock=lambda: self.now)
        self.host = StateHost(
            MemoryCounterStore(clock=lambda: self.now), os.path.join(self.dir, "s.sock")
        )
        self.loop.run_until_complete(self.host.start())
        self.remote = RemoteCounterStore(self.host.path)

    def both(self, call: Callable[[CounterStore], Awaitable[Any]]) -> None:
        async def run(store: CounterStore) -> tuple[str, Any]:
            try:
                return ("ok", await call(store))
            except Exception as exc:  # the type must match; messages may differ
                return ("err", type(exc))

        want = self.loop.run_until_complete(run(self.local))
        got = self.loop.run_until_complete(run(self.remote))
        assert got == want
        if want[0] == "ok":
            assert type(got[1]) is type(want[1])

    @rule(seconds=st.sampled_from([0.0, 0.5, 2.0, 30.0]))
    def advance(self, seconds: float) -> None:
        self.now += seconds

    @rule(rid=RIDS, caps=CAPS, amount=AMOUNT, lease=TTL)
    def reserve(self, rid: str, caps: list[Cap], amount: float, lease: float) -> None:
        self.both(lambda s: s.reserve(rid, caps, amount, lease))

    @rule(rid=RIDS, actual=AMOUNT)
    def settle(self, rid: str, actual: float) -> None:
        self.both(lambda s: s.settle(rid, actual))

    @rule(rid=RIDS)
    def release(self, rid: str) -> None:
        self.both(lambda s: s.release(rid))

    @rule(key=st.sampled_from(["c1", "c2", "c3"]))
    def usage(self, key: str) -> None:
        self.both(lambda s: s.usage(key))

    @rule(key=KEYS, cost=AMOUNT)
    def take(self, key: str, cost: float) -> None:
        self.both(lambda s: s.take(key, 1.0, 2.0, cost))

    @rule(key=KEYS, amount=AMOUNT)
    def charge(self, key: str, amount: float) -> None:
        self.both(lambda s: s.charge(key, 1.0, 2.0, amount))

    @rule(key=KEYS, amount=AMOUNT, ttl=TTL, limit=st.sampled_from([None, 3.0, float("inf")]))
    def incr(self, key: str, amount: float, ttl: float, limit: float | None) -> None:
        if limit is None:
            self.both(lambda s: s.incr(key, amount, ttl))
        else:
            self.both(lambda s: s.incr_if_below(key, amount, limit, ttl))

    @rule(key=KEYS)
    def get(self, key: str) -> None:
        self.both(lambda s: s.get(key))

    @rule(key=KEYS, value=st.none() | st.sampled_from(["on", "off"]), who=st.text(max_size=5))
    def set_flag(self, key: str, value: str | None, who: str) -> None:
        self.both(lambda s: s.set_flag("kill:" + key, value, {"who": who, "n": [1, 2.5]}))

    @rule(prefix=st.sampled_from(["", "kill:", "kill:a", "x"]), key=KEYS)
    def read_flags(self, prefix: str, key: str) -> None:
        self.both(lambda s: s.get_flags(prefix))
        self.both(lambda s: s.flag_meta("kill:" + key))

    @rule(key=KEYS, policy=POLICY, ok=st.booleans())
    def breaker(self, key: str, policy: BreakerPolicy, ok: bool) -> None:
        self.both(lambda s: s.breaker_allow(key, policy))
        self.both(lambda s: s.breaker_record(key, ok, policy))
        self.both(lambda s: s.breaker_peek(key))

    @rule(key=KEYS, fp=st.sampled_from(["f1", "f2"]), owner=st.sampled_from(["", "o1", "o2"]))
    def idem_begin(self, key: str, fp: str, owner: str) -> None:
        self.both(lambda s: s.idem_begin(key, fp, 60.0, 5.0, owner))

    @rule(key=KEYS, fp=st.sampled_from(["f1", "f2"]), body=st.binary(max_size=20))
    def idem_complete(self, key: str, fp: str, body: bytes) -> None:
        self.both(lambda s: s.idem_complete(key, fp, body, 60.0))

    @rule(key=KEYS, owner=st.none() | st.sampled_from(["", "o1"]))
    def idem_abandon(self, key: str, owner: str | None) -> None:
        self.both(lambda s: s.idem_abandon(key, owner))

    @rule(ops=st.lists(ADMIT_OP, max_size=4))
    def admit(self, ops: list[Any]) -> None:
        self.both(lambda s: s.admit(ops))

    @rule(ops=st.lists(FINISH_OP, max_size=4))
    def finish(self, ops: list[Any]) -> None:
        self.both(lambda s: s.finish(ops))

    @invariant()
    def pings(self) -> None:
        self.loop.run_until_complete(self.remote.ping())

    def teardown(self) -> None:
        async def close() -> None:
            await self.remote.close()
            await self.host.stop()
            await self.local.close()

        self.loop.run_until_complete(close())
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)


RemoteEqualsLocal.TestCase.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None
)
test_remote_store_equals_the_local_one = RemoteEqualsLocal.TestCase


async def _host(path: str) -> StateHost:
    host = StateHost(MemoryCounterStore(), path)
    await host.start()
    return host


async def test_many_calls_in_flight_on_one_connection_each_get_their_own_answer() -> None:
    d = tempfile.mkdtemp(prefix="sh-")
    try:
        host = await _host(os.path.join(d, "s.sock"))
        remote = RemoteCounterStore(host.path)
        got = await asyncio.gather(*(remote.incr(f"k{i % 7}", float(i), 60.0) for i in range(300)))
        assert sorted(await asyncio.gather(*(remote.get(f"k{j}") for j in range(7)))) == sorted(
            float(sum(i for i in range(300) if i % 7 == j)) for j in range(7)
        )
        # every answer was its own call's: the last value of each key is its total
        for j in range(7):
            mine = [g for i, g in enumerate(got) if i % 7 == j]
            assert max(mine) == sum(i for i in range(300) if i % 7 == j)
        await remote.close()
        await host.stop()
    finally:
        shutil.rmtree(d, ignore_errors=True)


async def test_a_host_that_goes_away_fails_calls_closed_and_the_client_reconnects() -> None:
    d = tempfile.mkdtemp(prefix="sh-")
    path = os.path.join(d, "s.sock")
    try:
        remote = RemoteCounterStore(path, timeout_seconds=1.0)
        with pytest.raises(StateUnavailable):
            await remote.ping()  # no host yet
        host = await _host(path)
        assert (await remote.reserve("r", [Cap("c", 1.0, 60.0)], 1.0, 60.0)).ok
        # a call in flight when the host stops: its connection breaks, it fails closed
        slow = asyncio.get_running_loop().create_future()

        async def hang(*args: Any) -> None:
            await slow

        host.store.ping = hang  # type: ignore[method-assign]
        pending = asyncio.ensure_future(remote.ping())
        await asyncio.sleep(0.05)
        await host.stop()
        with pytest.raises(StateUnavailable):
            await pending
        with pytest.raises(StateUnavailable):
            await remote.usage("c")  # down: no answer from a stale connection
        host2 = await _host(path)
        usage = await remote.usage("c")  # reconnected, to a host that starts empty...
        assert usage == Usage(0.0, 1.0)  # ...and got this worker's live hold back
        await remote.close()
        with pytest.raises(StateUnavailable):
            await remote.ping()  # closed stays closed
        await host2.stop()
    finally:
        shutil.rmtree(d, ignore_errors=True)


async def test_a_wedged_host_times_out_as_an_outage() -> None:
    d = tempfile.mkdtemp(prefix="sh-")
    try:
        host = await _host(os.path.join(d, "s.sock"))
        never = asyncio.get_running_loop().create_future()

        async def hang(*args: Any) -> None:
            await never

        host.store.get = hang  # type: ignore[method-assign]
        remote = RemoteCounterStore(host.path, timeout_seconds=0.2)
        with pytest.raises(StateUnavailable, match="did not answer get"):
            await remote.get("k")
        assert await remote.incr("k", 2.0, 60.0) == 2.0  # the connection still serves
        await remote.close()
        never.cancel()
        await host.stop()
    finally:
        shutil.rmtree(d, ignore_errors=True)

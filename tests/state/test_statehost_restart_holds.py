"""A state host that dies and is restarted does not forget the reservations still running.

The host keeps live reservations in memory only (as the embedded store does), yet under
``--workers N`` the calls holding them outlive it: they run in the workers. Before, a restarted
host admitted new calls into their room (a cap overshot by every call in flight at the crash)
and dropped their settles (their spend never counted). Now each worker gives a new host its
live holds back on reconnecting, at once (not at its next call), and a connection that merely
broke to the same host restores nothing (a settle whose answer was lost must not count twice).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.errors import StateUnavailable
from bastion.state import Cap, MemoryCounterStore
from bastion.state.host import StateHost
from bastion.state.plan import Reserve, Settle
from bastion.state.remote import RemoteCounterStore

CAP = Cap("day:team", 1.0, 3600.0)


async def _host(path: str) -> StateHost:
    host = StateHost(MemoryCounterStore(), path)
    await host.start()
    return host


@pytest.fixture
async def sock() -> AsyncIterator[str]:
    d = tempfile.mkdtemp(prefix="shr-")
    try:
        yield os.path.join(d, "s.sock")
    finally:
        shutil.rmtree(d, ignore_errors=True)


async def _until(check: Any, seconds: float = 3.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("not within the time")


async def test_a_restarted_host_gets_the_live_holds_back_and_counts_their_settles(
    sock: str,
) -> None:
    host = await _host(sock)
    worker_a = RemoteCounterStore(sock, timeout_seconds=1.0)
    worker_b = RemoteCounterStore(sock, timeout_seconds=1.0)
    assert (await worker_a.reserve("a1", [CAP], 0.8, 60.0)).ok  # a call under way on worker A
    await host.stop()  # the host dies: its reservations with it
    host2 = await _host(sock)  # the supervisor restarts it
    try:
        # worker A reconnects by itself and restores its hold before anyone spends the room
        async def restored() -> bool:
            try:
                return (await worker_b.usage(CAP.key)).reserved == pytest.approx(0.8)
            except StateUnavailable:
                return False

        await _until(restored)
        refused = await worker_b.reserve("b1", [CAP], 0.5, 60.0)
        assert not refused.ok  # 0.8 held + 0.5 > 1.0, exactly as before the crash
        # A's call ends: its spend counts on the new host
        assert await worker_a.settle("a1", 0.7) is True
        usage = await worker_b.usage(CAP.key)
        assert usage.settled == pytest.approx(0.7)
        assert usage.reserved == 0.0  # nothing left stuck
        assert (await worker_b.reserve("b2", [CAP], 0.3, 60.0)).ok
        assert not (await worker_b.reserve("b3", [CAP], 0.1, 60.0)).ok
    finally:
        await worker_a.close()
        await worker_b.close()
        await host2.stop()


async def test_holds_from_batched_admissions_are_restored_and_batched_settles_end_them(
    sock: str,
) -> None:
    host = await _host(sock)
    worker = RemoteCounterStore(sock, timeout_seconds=1.0)
    assert (await worker.admit([Reserve("r1", (CAP,), 0.6, 60.0)])).ok
    await host.stop()
    host2 = await _host(sock)
    try:
        await _until(lambda: _answers(worker))
        assert (await worker.usage(CAP.key)).reserved == pytest.approx(0.6)
        assert await worker.finish([Settle("r1", (CAP,), 0.5)]) == (True,)
        assert await worker.usage(CAP.key) == await host2.store.usage(CAP.key)
        assert (await worker.usage(CAP.key)).settled == pytest.approx(0.5)
        await host2.stop()
        host3 = await _host(sock)  # nothing is held any more: a third host starts empty
        await _until(lambda: _answers(worker))
        assert (await worker.usage(CAP.key)).total == 0.0
        await host3.stop()
    finally:
        await worker.close()


async def _answers(worker: RemoteCounterStore) -> bool:
    try:
        await worker.ping()
    except StateUnavailable:
        return False
    return True


async def test_a_broken_connection_to_the_same_host_restores_nothing(sock: str) -> None:
    host = await _host(sock)
    worker = RemoteCounterStore(sock, timeout_seconds=1.0)
    try:
        assert (await worker.reserve("r1", [CAP], 0.8, 60.0)).ok
        settle = host.store.settle

        async def settle_then_drop(*args: Any) -> bool:
            done = await settle(*args)
            for w in list(host._writers):
                w.close()  # the answer is lost after the settle was applied
            return done

        host.store.settle = settle_then_drop  # type: ignore[method-assign]
        with pytest.raises(StateUnavailable):
            await worker.settle("r1", 0.7)
        host.store.settle = settle  # type: ignore[method-assign]
        await _until(lambda: _answers(worker))
        usage = await worker.usage(CAP.key)
        assert usage.settled == pytest.approx(0.7)
        assert usage.reserved == 0.0  # not held again: a journaled retry must not count twice
        assert await worker.settle("r1", 0.7) is False
        assert (await worker.usage(CAP.key)).settled == pytest.approx(0.7)
    finally:
        await worker.close()
        await host.stop()


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("reserve"), st.floats(0.0, 0.3)),
            st.tuples(st.just("settle"), st.floats(0.0, 0.3)),
            st.tuples(st.just("release"), st.just(0.0)),
            st.tuples(st.just("restart"), st.just(0.0)),
        ),
        max_size=12,
    )
)
def test_after_any_restarts_the_host_holds_exactly_the_open_reservations(
    steps: list[tuple[str, float]],
) -> None:
    async def run() -> None:
        d = tempfile.mkdtemp(prefix="shp-")
        path = os.path.join(d, "s.sock")
        host = await _host(path)
        worker = RemoteCounterStore(path, timeout_seconds=1.0)
        cap = Cap("c", 1e9, 3600.0)
        open_: dict[str, float] = {}
        settled = 0.0  # since the last restart (the in-memory host keeps no spend)
        n = 0
        try:
            for op, x in steps:
                if op == "reserve":
                    n += 1
                    assert (await worker.reserve(f"r{n}", [cap], x, 60.0)).ok
                    open_[f"r{n}"] = x
                elif op in ("settle", "release") and open_:
                    rid = sorted(open_)[0]
                    del open_[rid]
                    if op == "settle":
                        assert await worker.settle(rid, x) is True
                        settled += x
                    else:
                        assert await worker.release(rid) is True
                elif op == "restart":
                    await host.stop()
                    host = await _host(path)
                    settled = 0.0
                    await _until(lambda: _answers(worker))
            usage = await worker.usage(cap.key)
            assert usage.reserved == pytest.approx(sum(open_.values()))
            assert usage.settled == pytest.approx(settled)
        finally:
            await worker.close()
            await host.stop()
            shutil.rmtree(d, ignore_errors=True)

    asyncio.run(run())


async def test_a_restarted_host_holds_new_reservations_back_while_the_holds_come_back(
    sock: str,
) -> None:
    host = await _host(sock)
    worker_a = RemoteCounterStore(sock, timeout_seconds=1.0)
    worker_b = RemoteCounterStore(sock, timeout_seconds=1.0)
    try:
        assert (await worker_a.reserve("a1", [CAP], 0.8, 60.0)).ok
        await host.stop()
        await worker_a.close()  # A cannot reconnect yet: B reaches the new host first
        worker_a = RemoteCounterStore(sock, timeout_seconds=1.0)
        worker_a._held = {"a1": _held(0.8)}
        worker_a._host_id = "the dead host"
        host = StateHost(MemoryCounterStore(), sock, hold_new_seconds=5.0, workers=2)
        await host.start()
        # worker B must not spend A's room: a new reservation (alone or in a batch) fails
        # closed until every worker said it is ready (reads are answered)
        with pytest.raises(StateUnavailable, match="restoring"):
            await worker_b.reserve("b1", [CAP], 0.5, 60.0)
        with pytest.raises(StateUnavailable, match="restoring"):
            await worker_b.admit([Reserve("b1", (CAP,), 0.5, 60.0)])
        assert (await worker_b.usage(CAP.key)).reserved == 0.0
        assert host.holding()
        await worker_b.close()  # B reconnects during the hold: still one worker, not two
        worker_b._conn = None
        worker_b._closed = False
        await worker_b.ping()
        assert host.holding()
        await worker_a.ping()  # A reconnects: its hold back, then ready: the hold ends early
        assert not host.holding()
        assert (await worker_b.usage(CAP.key)).reserved == pytest.approx(0.8)
        assert not (await worker_b.reserve("b1", [CAP], 0.5, 60.0)).ok
        assert (await worker_b.reserve("b2", [CAP], 0.2, 60.0)).ok
    finally:
        await worker_a.close()
        await worker_b.close()
        await host.stop()


async def test_the_hold_ends_by_its_clock_when_a_worker_never_comes_back(sock: str) -> None:
    host = StateHost(MemoryCounterStore(), sock, hold_new_seconds=0.3, workers=2)
    await host.start()
    worker = RemoteCounterStore(sock, timeout_seconds=1.0)
    try:
        with pytest.raises(StateUnavailable, match="restoring"):
            await worker.reserve("r", [CAP], 0.5, 60.0)
        await asyncio.sleep(0.35)
        assert (await worker.reserve("r", [CAP], 0.5, 60.0)).ok
    finally:
        await worker.close()
        await host.stop()


def _held(amount: float) -> Any:
    from bastion.state.remote import _Held

    return _Held((CAP,), amount, time.monotonic(), 60.0)

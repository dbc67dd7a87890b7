"""A worker that dies gives its reservations back at once, not at the end of their lease.

One process that dies takes its reservations with it. Under ``--workers N`` the holds of a
killed worker stayed in the state host until their lease ran out (the call's deadline plus
``cost.lease_grace_seconds``), so a small cap stayed blocked for minutes by calls that no longer
existed. The supervisor now tells the host which worker died (``drop_worker``, by pid, named
by the worker on connecting); the host releases that worker's live holds once the worker's
connection is gone and its last calls were applied. Other workers' holds, and holds the worker
already settled, are untouched.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.state import Cap, MemoryCounterStore
from bastion.state.host import StateHost
from bastion.state.plan import Reserve, Settle
from bastion.state.remote import RemoteCounterStore, ask_sync

CAP = Cap("day:team", 10.0, 3600.0)


@pytest.fixture
async def host() -> AsyncIterator[StateHost]:
    d = tempfile.mkdtemp(prefix="shd-")
    h = StateHost(MemoryCounterStore(), os.path.join(d, "s.sock"))
    await h.start()
    try:
        yield h
    finally:
        await h.stop()
        shutil.rmtree(d, ignore_errors=True)


def _worker(host: StateHost, pid: int) -> RemoteCounterStore:
    w = RemoteCounterStore(host.path, timeout_seconds=1.0)
    w._pid = pid
    return w


async def _drop(host: StateHost, pid: int) -> None:
    answered, _ = await asyncio.to_thread(ask_sync, host.path, "drop_worker", 1.0, pid)
    assert answered


async def _reserved(host: StateHost) -> float:
    return (await host.store.usage(CAP.key)).reserved


@pytest.mark.parametrize("dies_first", [True, False])
async def test_a_dead_workers_holds_are_released_and_no_one_elses(
    host: StateHost, dies_first: bool
) -> None:
    dead, alive = _worker(host, 101), _worker(host, 102)
    try:
        assert (await dead.reserve("d1", [CAP], 1.0, 600.0)).ok
        assert (await dead.admit([Reserve("d2", (CAP,), 2.0, 600.0)])).ok
        assert (await dead.reserve("d3", [CAP], 4.0, 600.0)).ok
        assert await dead.finish([Settle("d3", (CAP,), 0.5)]) == (True,)  # ended: spent
        assert (await alive.reserve("a1", [CAP], 3.0, 600.0)).ok
        assert await _reserved(host) == pytest.approx(6.0)
        if dies_first:  # its connection goes, then the supervisor reaps it
            await dead.close()
            await asyncio.sleep(0.05)
            await _drop(host, 101)
        else:  # the supervisor's word comes before the host saw the connection close
            await _drop(host, 101)
            assert await _reserved(host) == pytest.approx(6.0)  # still connected: not yet
            await dead.close()
        for _ in range(50):
            if await _reserved(host) == pytest.approx(3.0):
                break
            await asyncio.sleep(0.02)
        usage = await host.store.usage(CAP.key)
        assert usage.reserved == pytest.approx(3.0)  # only the live worker's hold is left
        assert usage.settled == pytest.approx(0.5)
        assert await alive.settle("a1", 2.5) is True
    finally:
        await dead.close()
        await alive.close()


async def test_a_pid_reused_by_a_new_worker_is_not_dropped_for_the_old_one(
    host: StateHost,
) -> None:
    await _drop(host, 103)  # an old worker, no connection: nothing to release
    new = _worker(host, 103)
    try:
        assert (await new.reserve("n1", [CAP], 1.0, 600.0)).ok
        await asyncio.sleep(0.05)
        assert await _reserved(host) == pytest.approx(1.0)
    finally:
        await new.close()


@settings(max_examples=10, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from([201, 202, 203]), st.sampled_from(["reserve", "settle"])),
        max_size=12,
    ),
    victim=st.sampled_from([201, 202, 203]),
)
def test_after_a_death_the_host_holds_exactly_the_survivors_open_holds(
    ops: list[tuple[int, str]], victim: int
) -> None:
    async def run() -> None:
        d = tempfile.mkdtemp(prefix="she-")
        h = StateHost(MemoryCounterStore(), os.path.join(d, "s.sock"))
        await h.start()
        workers = {pid: _worker(h, pid) for pid in (201, 202, 203)}
        open_: dict[int, list[str]] = {pid: [] for pid in workers}
        try:
            for i, (pid, op) in enumerate(ops):
                if op == "reserve":
                    assert (await workers[pid].reserve(f"r{i}", [CAP], 0.1, 600.0)).ok
                    open_[pid].append(f"r{i}")
                elif open_[pid]:
                    assert await workers[pid].settle(open_[pid].pop(), 0.05)
            await workers[victim].close()
            await _drop(h, victim)
            expected = 0.1 * sum(len(v) for p, v in open_.items() if p != victim)
            for _ in range(50):
                if await _reserved(h) == pytest.approx(expected):
                    break
                await asyncio.sleep(0.02)
            assert await _reserved(h) == pytest.approx(expected)
        finally:
            for w in workers.values():
                await w.close()
            await h.stop()
            shutil.rmtree(d, ignore_errors=True)

    asyncio.run(run())


async def test_a_dead_workers_journaled_settle_replayed_by_another_still_counts(
    host: StateHost,
) -> None:
    dead, adopter = _worker(host, 301), _worker(host, 302)
    try:
        assert (await dead.reserve("d1", [CAP], 2.0, 600.0)).ok
        assert (await dead.reserve("d2", [CAP], 2.0, 600.0)).ok
        await dead.close()
        await asyncio.sleep(0.05)
        await _drop(host, 301)
        assert await _reserved(host) == 0.0  # its room is back at once
        # the worker that adopts its settle journal replays what it could not settle
        assert await adopter.settle("d1", 0.7) is True
        assert await adopter.finish([Settle("d2", (CAP,), 0.2)]) == (True,)
        usage = await host.store.usage(CAP.key)
        assert usage.settled == pytest.approx(0.9) and usage.reserved == 0.0
        assert await adopter.settle("d1", 0.7) is False  # once only
        assert (await host.store.usage(CAP.key)).settled == pytest.approx(0.9)
    finally:
        await dead.close()
        await adopter.close()

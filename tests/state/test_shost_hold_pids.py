"""A restarted state host holds new reservations until every live worker is back or dead.

The supervisor names the workers alive at the restart (their pids). A worker stopped (SIGSTOP)
through the restart cannot give its holds back until it runs again, and its calls are still
under way: the hold must not end while it is missing (before, a fixed 2 s and a count of
"ready" tokens, which a replacement worker could fill), only when it says "ready", or the
supervisor reports it dead (then its holds died with it) or running (its loop answers pings
well after the host listened, yet it did not come back: it had no connection, so no holds),
or by the clock, which the supervisor
sets past the window in which its pings kill a stopped worker.
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
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.errors import StateUnavailable
from bastion.state import Cap, MemoryCounterStore
from bastion.state.host import StateHost
from bastion.state.remote import RemoteCounterStore

CAP = Cap("day:team", 1.0, 3600.0)


@pytest.fixture
async def sock() -> AsyncIterator[str]:
    d = tempfile.mkdtemp(prefix="shp-")
    try:
        yield os.path.join(d, "s.sock")
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _worker(path: str, pid: int) -> RemoteCounterStore:
    store = RemoteCounterStore(path, timeout_seconds=1.0)
    store._pid = pid  # one process here plays several workers
    return store


async def test_the_hold_waits_for_a_stopped_worker_until_it_is_back_or_dead(sock: str) -> None:
    host = StateHost(MemoryCounterStore(), sock, hold_new_seconds=30.0, worker_pids=[101, 102])
    await host.start()
    b = _worker(sock, 102)
    new = _worker(sock, 103)  # a worker started after the restart (101's replacement, say)
    try:
        await b.ping()  # B is back (it said ready): A, stopped, is not
        await new.ping()  # two "ready" now, as many as there are workers: not enough
        assert host.holding()
        with pytest.raises(StateUnavailable, match="restoring"):
            await b.reserve("b1", [CAP], 0.5, 60.0)
        await asyncio.sleep(0.3)
        assert host.holding()  # no fixed short clock either
        assert await host._drop_worker(101) == 0  # the pings killed A: nothing of it comes back
        assert not host.holding()
        assert (await b.reserve("b1", [CAP], 0.5, 60.0)).ok
    finally:
        await b.close()
        await new.close()
        await host.stop()


async def test_the_hold_ends_when_the_stopped_worker_runs_again(sock: str) -> None:
    host = StateHost(MemoryCounterStore(), sock, hold_new_seconds=30.0, worker_pids=[101, 102])
    await host.start()
    a, b = _worker(sock, 101), _worker(sock, 102)
    try:
        await b.ping()
        assert host.holding()
        await a.ping()
        assert not host.holding()
    finally:
        await a.close()
        await b.close()
        await host.stop()


async def test_the_clock_still_bounds_the_hold(sock: str) -> None:
    host = StateHost(MemoryCounterStore(), sock, hold_new_seconds=0.3, worker_pids=[101, 102])
    await host.start()
    b = _worker(sock, 102)
    try:
        await b.ping()
        await asyncio.sleep(0.35)
        assert not host.holding()
        assert (await b.reserve("b1", [CAP], 0.5, 60.0)).ok
    finally:
        await b.close()
        await host.stop()


_EVENTS = st.lists(
    st.tuples(st.sampled_from(["ready", "drop", "hello", "running"]), st.integers(100, 106)),
    max_size=25,
)


@settings(max_examples=200, deadline=None)
@given(alive=st.sets(st.integers(100, 104), min_size=1, max_size=5), events=_EVENTS)
def test_the_hold_ends_exactly_when_every_awaited_worker_is_ready_or_dead(
    alive: set[int], events: list[tuple[str, int]]
) -> None:
    """Any order of greetings, "ready"s (also of workers not awaited, and repeated), deaths, and
    the supervisor's word that a worker runs (answers its pings) without having come back."""

    async def run() -> None:
        host = StateHost(
            MemoryCounterStore(), "/nonexistent", hold_new_seconds=60.0, worker_pids=alive
        )
        host._hold_until = time.monotonic() + 3600.0  # as start() sets it (no socket here)
        writers: dict[int, Any] = {}
        accounted: set[int] = set()
        for kind, pid in events:
            if kind == "hello":
                writers[pid] = object()
                host._own("hello", [pid], writers[pid])
            elif kind == "ready" and pid in writers:
                host._own("ready", [f"token-{pid}"], writers[pid])
                accounted.add(pid)
            elif kind == "drop":
                await host._drop_worker(pid)
                accounted.add(pid)
            elif kind == "running":  # the supervisor: it runs (answers pings) yet is not back
                host._own("running", [pid], object())
                accounted.add(pid)
            assert host.holding() == (not alive <= accounted), (kind, pid)

    asyncio.run(run())

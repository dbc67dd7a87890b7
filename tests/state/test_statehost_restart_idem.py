"""A state host restarted while an idempotent request runs does not let its retry run again.

The in-progress lock of an idempotency key lives in the host's memory until the next
write-behind (0.5 s) or for good on the memory:// state, yet under ``--workers N`` the request
holding it goes on running in its worker when the host dies. Before, the restarted host had no
lock, so a retry sent to either worker ran the upstream call a second time, next to the first.
Now the worker gives its locks back to the new host with its reservations (and the host holds
new idempotent begins back while they come), so the retry waits (in progress) as it would have.
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

from bastion.errors import StateUnavailable
from bastion.state import IdemOutcome, MemoryCounterStore
from bastion.state.host import StateHost
from bastion.state.remote import RemoteCounterStore


@pytest.fixture
async def sock() -> AsyncIterator[str]:
    d = tempfile.mkdtemp(prefix="shi-")
    try:
        yield os.path.join(d, "s.sock")
    finally:
        shutil.rmtree(d, ignore_errors=True)


async def _host(path: str, **kw: float) -> StateHost:
    host = StateHost(MemoryCounterStore(), path, **kw)  # type: ignore[arg-type]
    await host.start()
    return host


async def _answers(worker: RemoteCounterStore) -> bool:
    try:
        await worker.ping()
    except Exception:
        return False
    return True


async def _until_up(worker: RemoteCounterStore) -> None:
    for _ in range(150):
        if await _answers(worker):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("never reconnected")


async def test_a_running_idempotent_request_keeps_its_lock_across_a_restart(sock: str) -> None:
    host = await _host(sock)
    worker_a = RemoteCounterStore(sock, timeout_seconds=1.0)
    worker_b = RemoteCounterStore(sock, timeout_seconds=1.0)
    try:
        begun = await worker_a.idem_begin("k", "fp", 3600.0, 60.0, "a:1")
        assert begun.outcome is IdemOutcome.NEW  # worker A runs it
        await host.stop()  # the host dies with the lock (never flushed)
        host = await _host(sock)
        await _until_up(worker_a)  # A reconnects by itself
        retry = await worker_b.idem_begin("k", "fp", 3600.0, 60.0, "b:1")
        assert retry.outcome is IdemOutcome.IN_PROGRESS  # not run a second time
        assert await worker_a.idem_complete("k", "fp", b"answer", 3600.0)
        replay = await worker_b.idem_begin("k", "fp", 3600.0, 60.0, "b:2")
        assert replay.outcome is IdemOutcome.DONE and replay.response == b"answer"
        # a finished key is not given back again: a third host starts without it
        await host.stop()
        host = await _host(sock)
        await _until_up(worker_a)
        fresh = await worker_b.idem_begin("k", "fp", 3600.0, 60.0, "b:3")
        assert fresh.outcome is IdemOutcome.NEW
    finally:
        await worker_a.close()
        await worker_b.close()
        await host.stop()


async def test_an_abandoned_key_is_not_given_back(sock: str) -> None:
    host = await _host(sock)
    worker = RemoteCounterStore(sock, timeout_seconds=1.0)
    try:
        assert (await worker.idem_begin("k", "fp", 3600.0, 60.0, "a")).outcome is IdemOutcome.NEW
        assert await worker.idem_abandon("k", "a")
        await host.stop()
        host = await _host(sock)
        await _until_up(worker)
        assert (await worker.idem_begin("k", "fp", 3600.0, 60.0, "b")).outcome is IdemOutcome.NEW
    finally:
        await worker.close()
        await host.stop()


async def test_idempotent_begins_wait_for_the_workers_after_a_restart(sock: str) -> None:
    host = await _host(sock, hold_new_seconds=5.0, workers=2)
    worker = RemoteCounterStore(sock, timeout_seconds=1.0)
    try:
        with pytest.raises(StateUnavailable, match="restoring"):
            await worker.idem_begin("k", "fp", 3600.0, 60.0, "a")
    finally:
        await worker.close()
        await host.stop()


@settings(max_examples=12, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["begin", "complete", "abandon", "restart"]),
            st.sampled_from(["k1", "k2", "k3"]),
        ),
        max_size=10,
    )
)
def test_after_any_restarts_the_host_locks_exactly_the_keys_still_running(
    steps: list[tuple[str, str]],
) -> None:
    async def run() -> None:
        d = tempfile.mkdtemp(prefix="shj-")
        path = os.path.join(d, "s.sock")
        host = await _host(path)
        worker = RemoteCounterStore(path, timeout_seconds=1.0)
        running: set[str] = set()
        done: set[str] = set()  # completed since the last restart (memory:// keeps none)
        try:
            for op, key in steps:
                if op == "begin":
                    b = await worker.idem_begin(key, "fp", 3600.0, 60.0, "w")
                    if b.outcome is IdemOutcome.NEW:
                        running.add(key)
                elif op == "complete" and key in running:
                    assert await worker.idem_complete(key, "fp", b"r", 3600.0)
                    running.discard(key)
                    done.add(key)
                elif op == "abandon" and key in running:
                    assert await worker.idem_abandon(key, "w")
                    running.discard(key)
                elif op == "restart":
                    await host.stop()
                    host = await _host(path)
                    done.clear()
                    await _until_up(worker)
            for key in ("k1", "k2", "k3"):  # another worker's view of each key
                seen = await host.store.idem_begin(key, "fp", 3600.0, 60.0, "other")
                expected = (
                    IdemOutcome.IN_PROGRESS
                    if key in running
                    else IdemOutcome.DONE
                    if key in done
                    else IdemOutcome.NEW
                )
                assert seen.outcome is expected, (key, running, done)
        finally:
            await worker.close()
            await host.stop()
            shutil.rmtree(d, ignore_errors=True)

    asyncio.run(run())

"""A reservation whose caller gave up waiting for its answer is released, not left to its lease.

Over the state host a ``reserve`` (or an ``admit`` holding ``Reserve`` ops) can be applied on
the host after its caller stopped waiting: the answer came later than the timeout (a stalled or
busy host), or the caller was cancelled (its client went away) while the answer was on its way.
In one process that cannot happen (the embedded reserve never yields), and the caller treats
such a call as refused, so nobody would ever settle it: the room stayed held for the whole
lease (the call's deadline plus a minute), a small cap blocked for minutes. Now the late answer
is still read, and a granted hold is released at once.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.errors import StateUnavailable
from bastion.state import Cap, MemoryCounterStore
from bastion.state.host import StateHost
from bastion.state.plan import Reserve, Take
from bastion.state.remote import RemoteCounterStore

CAP = Cap("day:team", 1.0, 3600.0)


@pytest.fixture
async def host() -> AsyncIterator[StateHost]:
    d = tempfile.mkdtemp(prefix="sho-")
    h = StateHost(MemoryCounterStore(), os.path.join(d, "s.sock"))
    await h.start()
    try:
        yield h
    finally:
        await h.stop()
        shutil.rmtree(d, ignore_errors=True)


def _slow(host: StateHost, method: str, seconds: float) -> None:
    real = getattr(host.store, method)

    async def late(*args: Any) -> Any:
        await asyncio.sleep(seconds)
        return await real(*args)

    setattr(host.store, method, late)


async def _reserved(remote: RemoteCounterStore) -> float:
    return (await remote.usage(CAP.key)).reserved


async def test_a_reserve_answered_after_its_timeout_is_released(host: StateHost) -> None:
    remote = RemoteCounterStore(host.path, timeout_seconds=0.1)
    try:
        _slow(host, "reserve", 0.3)
        with pytest.raises(StateUnavailable, match="did not answer reserve"):
            await remote.reserve("r1", [CAP], 0.8, 600.0)
        await asyncio.sleep(0.5)  # the host applied it after all ...
        assert await _reserved(remote) == 0.0  # ... and it was given back at once
        del host.store.reserve  # type: ignore[attr-defined]  # answers in time again
        assert (await remote.reserve("r2", [CAP], 0.9, 600.0)).ok  # the room is free
    finally:
        await remote.close()


async def test_a_reserve_whose_caller_was_cancelled_is_released(host: StateHost) -> None:
    remote = RemoteCounterStore(host.path, timeout_seconds=2.0)
    try:
        _slow(host, "admit", 0.2)
        call = asyncio.ensure_future(
            remote.admit([Take("t", 1.0, 5.0, 1.0), Reserve("r1", (CAP,), 0.8, 600.0)])
        )
        await asyncio.sleep(0.05)
        call.cancel()  # the client went away while its admission was on the host
        with pytest.raises(asyncio.CancelledError):
            await call
        await asyncio.sleep(0.4)
        assert await _reserved(remote) == 0.0
    finally:
        await remote.close()


async def test_a_late_refusal_or_another_late_answer_releases_nothing(host: StateHost) -> None:
    remote = RemoteCounterStore(host.path, timeout_seconds=0.1)
    try:
        assert (await remote.reserve("held", [CAP], 0.6, 600.0)).ok
        _slow(host, "reserve", 0.3)
        with pytest.raises(StateUnavailable):
            await remote.reserve("held", [CAP], 0.6, 600.0)  # same id: granted as the same
        with pytest.raises(StateUnavailable):
            await remote.reserve("r2", [CAP], 0.9, 600.0)  # refused on the host: nothing held
        await asyncio.sleep(0.5)
        # "held" was the caller's own live hold before: a late duplicate must not drop it
        assert await _reserved(remote) == pytest.approx(0.6)
    finally:
        await remote.close()


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    calls=st.lists(
        st.tuples(st.floats(0.0, 0.2), st.booleans(), st.sampled_from(["reserve", "admit"])),
        min_size=1,
        max_size=6,
    )
)
def test_whatever_times_out_nothing_stays_held_but_what_was_answered(
    calls: list[tuple[float, bool, str]],
) -> None:
    async def run() -> None:
        d = tempfile.mkdtemp(prefix="shq-")
        h = StateHost(MemoryCounterStore(), os.path.join(d, "s.sock"))
        await h.start()
        remote = RemoteCounterStore(h.path, timeout_seconds=0.05)
        cap = Cap("c", 1e9, 3600.0)
        try:
            answered = 0.0
            for i, (amount, late, method) in enumerate(calls):
                store: Any = h.store
                real = getattr(type(store), method).__get__(store)
                if late:
                    _slow(h, method, 0.1)
                try:
                    if method == "reserve":
                        ok = (await remote.reserve(f"r{i}", [cap], amount, 600.0)).ok
                    else:
                        ok = (await remote.admit([Reserve(f"r{i}", (cap,), amount, 600.0)])).ok
                    assert ok and not late
                    answered += amount
                except StateUnavailable:
                    assert late
                setattr(h.store, method, real)
            await asyncio.sleep(0.2)
            assert (await remote.usage(cap.key)).reserved == pytest.approx(answered)
        finally:
            await remote.close()
            await h.stop()
            shutil.rmtree(d, ignore_errors=True)

    asyncio.run(run())

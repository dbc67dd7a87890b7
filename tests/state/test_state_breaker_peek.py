"""Reading a breaker without touching it: what a dashboard on any replica may call."""

from __future__ import annotations

import asyncio

import pytest
from _state_support import StateBackend
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.state import BreakerPolicy, BreakerState, CounterStore, MemoryCounterStore

FAST = BreakerPolicy(failure_threshold=1, cooldown_seconds=0.3)
STREAK = BreakerPolicy(failure_threshold=2, error_rate=1.0, min_calls=1000, cooldown_seconds=60)


async def test_peek_shows_closed_open_and_the_cooldown_left(store: CounterStore) -> None:
    unknown = await store.breaker_peek("dep:never-used")
    assert unknown.state is BreakerState.CLOSED and unknown.allowed
    await store.breaker_record("dep:a", False, STREAK)
    assert (await store.breaker_peek("dep:a")).state is BreakerState.CLOSED
    assert await store.breaker_record("dep:a", False, STREAK) is BreakerState.OPEN
    seen = await store.breaker_peek("dep:a")
    assert seen.state is BreakerState.OPEN and not seen.allowed
    assert seen.retry_after_seconds == pytest.approx(60, abs=1)


async def test_peek_after_the_cooldown_never_takes_the_half_open_probe(
    store: CounterStore,
) -> None:
    assert await store.breaker_record("dep:p", False, FAST) is BreakerState.OPEN
    await asyncio.sleep(0.4)
    for _ in range(3):
        seen = await store.breaker_peek("dep:p")
        assert seen.state is BreakerState.OPEN and seen.allowed and not seen.probe
        assert seen.retry_after_seconds == 0
    # the probe is still there for the first real call, and only for it
    first = await store.breaker_allow("dep:p", FAST)
    assert first.allowed and first.probe
    assert not (await store.breaker_allow("dep:p", FAST)).allowed
    probing = await store.breaker_peek("dep:p")
    assert probing.state is BreakerState.HALF_OPEN and not probing.allowed


async def test_a_breaker_opened_by_another_replica_shows_on_this_one(
    redis_backend: StateBackend,
) -> None:
    here, there = redis_backend.open(), redis_backend.open()
    try:
        assert (await here.breaker_peek("dep:shared")).state is BreakerState.CLOSED
        await there.breaker_record("dep:shared", False, FAST)
        assert (await here.breaker_peek("dep:shared")).state is BreakerState.OPEN
        assert not (await here.breaker_allow("dep:shared", FAST)).allowed
    finally:
        for s in redis_backend.opened:
            await s.close()


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(st.sampled_from(["ok", "fail", "peek", "allow"]), max_size=30))
async def test_peeking_changes_nothing_a_call_would_see(ops: list[str]) -> None:
    """Two stores fed the same outcomes, one also peeked at between them, answer alike."""
    policy = BreakerPolicy(failure_threshold=2, cooldown_seconds=60)
    plain, peeked = MemoryCounterStore(), MemoryCounterStore()
    last = BreakerState.CLOSED
    for op in ops:
        if op == "peek":
            assert (await peeked.breaker_peek("d")).state is last
            continue
        if op == "allow":
            a, b = await plain.breaker_allow("d", policy), await peeked.breaker_allow("d", policy)
            assert (a.allowed, a.state, a.probe) == (b.allowed, b.state, b.probe)
            last = b.state
            continue
        a_state = await plain.breaker_record("d", op == "ok", policy)
        assert await peeked.breaker_record("d", op == "ok", policy) is a_state
        last = a_state

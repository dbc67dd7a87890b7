"""Circuit breakers: open on streaks or error rate, one probe after cooldown, shared state."""

from __future__ import annotations

import asyncio

import pytest
from _state_support import StateBackend

from bastion.state import BreakerPolicy, BreakerState, CounterStore

STREAK = BreakerPolicy(failure_threshold=3, error_rate=1.0, min_calls=1000, cooldown_seconds=30)
FAST = BreakerPolicy(failure_threshold=1, cooldown_seconds=0.2)


async def test_consecutive_failures_open_and_a_success_resets_the_streak(
    store: CounterStore,
) -> None:
    for ok in (False, False, True, False, False):
        assert await store.breaker_record("dep:a", ok, STREAK) is BreakerState.CLOSED
    assert (await store.breaker_allow("dep:a", STREAK)).allowed
    assert await store.breaker_record("dep:a", False, STREAK) is BreakerState.OPEN
    denied = await store.breaker_allow("dep:a", STREAK)
    assert not denied.allowed
    assert denied.state is BreakerState.OPEN
    assert denied.retry_after_seconds == pytest.approx(30, abs=1)


async def test_error_rate_opens_only_after_min_calls(store: CounterStore) -> None:
    policy = BreakerPolicy(failure_threshold=0, error_rate=0.5, min_calls=10, window_seconds=60)
    for _ in range(5):
        await store.breaker_record("dep:b", True, policy)
    for _ in range(4):
        assert await store.breaker_record("dep:b", False, policy) is BreakerState.CLOSED
    # 10th call: 5 failures of 10 reaches the rate.
    assert await store.breaker_record("dep:b", False, policy) is BreakerState.OPEN


async def test_error_rate_forgets_calls_older_than_the_window(store: CounterStore) -> None:
    policy = BreakerPolicy(failure_threshold=0, error_rate=0.5, min_calls=4, window_seconds=0.5)
    for _ in range(3):
        assert await store.breaker_record("dep:c", False, policy) is BreakerState.CLOSED
    await asyncio.sleep(0.6)
    assert await store.breaker_record("dep:c", False, policy) is BreakerState.CLOSED


async def test_breakers_are_isolated_by_key(store: CounterStore) -> None:
    await store.breaker_record("dep:x", False, FAST)
    assert not (await store.breaker_allow("dep:x", FAST)).allowed
    assert (await store.breaker_allow("dep:y", FAST)).allowed


async def test_after_cooldown_exactly_one_concurrent_caller_probes(store: CounterStore) -> None:
    # a cooldown long enough that 50 concurrent round trips finish inside it on a loaded machine
    slow = BreakerPolicy(failure_threshold=1, cooldown_seconds=1.5)
    await store.breaker_record("dep:d", False, slow)
    early = await asyncio.gather(*(store.breaker_allow("dep:d", slow) for _ in range(50)))
    assert not any(d.allowed for d in early)
    await asyncio.sleep(1.6)
    decisions = await asyncio.gather(*(store.breaker_allow("dep:d", slow) for _ in range(50)))
    probes = [d for d in decisions if d.allowed]
    assert len(probes) == 1
    assert probes[0].probe and probes[0].state is BreakerState.HALF_OPEN
    assert all(d.state is BreakerState.HALF_OPEN for d in decisions if not d.allowed)
    assert await store.breaker_record("dep:d", True, slow) is BreakerState.CLOSED
    assert (await store.breaker_allow("dep:d", slow)).allowed


async def test_failed_probe_reopens_for_a_full_cooldown(store: CounterStore) -> None:
    await store.breaker_record("dep:e", False, FAST)
    await asyncio.sleep(0.25)
    assert (await store.breaker_allow("dep:e", FAST)).probe
    assert await store.breaker_record("dep:e", False, FAST) is BreakerState.OPEN
    denied = await store.breaker_allow("dep:e", FAST)
    assert not denied.allowed
    assert denied.retry_after_seconds > 0.1
    await asyncio.sleep(0.25)
    assert (await store.breaker_allow("dep:e", FAST)).probe


async def test_a_probe_that_never_reports_is_replaced_after_a_cooldown(
    store: CounterStore,
) -> None:
    await store.breaker_record("dep:f", False, FAST)
    await asyncio.sleep(0.25)
    assert (await store.breaker_allow("dep:f", FAST)).probe
    assert not (await store.breaker_allow("dep:f", FAST)).allowed
    await asyncio.sleep(0.25)
    assert (await store.breaker_allow("dep:f", FAST)).probe


async def test_breaker_state_is_shared_between_clients(
    redis_backend: StateBackend, redis_store: CounterStore
) -> None:
    other = redis_backend.open()
    await redis_store.breaker_record("dep:g", False, FAST)
    assert not (await other.breaker_allow("dep:g", FAST)).allowed

"""Token buckets, windowed counters and flags: exact refill, atomic bounds, one-read flags."""

from __future__ import annotations

import asyncio
import math

import pytest

from bastion.state import CounterStore, IncrResult

# -- token buckets -------------------------------------------------------------------------


async def test_bucket_refuses_when_empty_with_retry_after_from_refill_rate(
    store: CounterStore,
) -> None:
    assert (await store.take("rl:user:1", 10.0, 2.0)).allowed
    assert (await store.take("rl:user:1", 10.0, 2.0)).allowed
    refused = await store.take("rl:user:1", 10.0, 2.0)
    assert not refused.allowed
    # One token at 10/s takes 0.1 s, minus what trickled in since the last take.
    assert 0.05 < refused.retry_after_seconds <= 0.1
    assert refused.remaining == pytest.approx(1.0 - refused.retry_after_seconds * 10.0)
    await asyncio.sleep(refused.retry_after_seconds + 0.01)
    assert (await store.take("rl:user:1", 10.0, 2.0)).allowed


async def test_buckets_are_isolated_by_key(store: CounterStore) -> None:
    for _ in range(3):
        await store.take("rl:user:a", 1.0, 3.0)
    assert not (await store.take("rl:user:a", 1.0, 3.0)).allowed
    other = await store.take("rl:user:b", 1.0, 3.0)
    assert other.allowed
    assert other.remaining == pytest.approx(2.0, abs=0.01)


async def test_charge_goes_negative_so_the_next_call_waits(store: CounterStore) -> None:
    remaining = await store.charge("tpm:user:1", 10.0, 5.0, 10.0)
    assert remaining == pytest.approx(-5.0, abs=0.05)
    refused = await store.take("tpm:user:1", 10.0, 5.0)
    assert not refused.allowed
    assert refused.retry_after_seconds == pytest.approx(0.6, abs=0.05)


async def test_negative_charge_refunds_but_never_beyond_burst(store: CounterStore) -> None:
    await store.take("tpm:user:2", 1.0, 5.0, cost=4.0)
    assert await store.charge("tpm:user:2", 1.0, 5.0, -2.0) == pytest.approx(3.0, abs=0.01)
    assert await store.charge("tpm:user:2", 1.0, 5.0, -100.0) == 5.0


async def test_cost_above_burst_can_never_be_taken(store: CounterStore) -> None:
    refused = await store.take("rl:big", 1.0, 5.0, cost=6.0)
    assert not refused.allowed
    assert math.isinf(refused.retry_after_seconds)


async def test_concurrent_takes_never_exceed_burst(store: CounterStore) -> None:
    results = await asyncio.gather(*(store.take("rl:burst", 0.001, 20.0) for _ in range(200)))
    assert sum(r.allowed for r in results) == 20


# -- windowed counters ---------------------------------------------------------------------


async def test_counters_add_up_per_key_and_read_zero_when_absent(store: CounterStore) -> None:
    assert await store.get("conv:c1:tokens") == 0.0
    assert await store.incr("conv:c1:tokens", 120.0, 3600) == 120.0
    assert await store.incr("conv:c1:tokens", 30.5, 3600) == 150.5
    assert await store.get("conv:c1:tokens") == 150.5
    assert await store.get("conv:c2:tokens") == 0.0


async def test_counter_window_ends_ttl_after_first_write(store: CounterStore) -> None:
    await store.incr("calls:day", 1.0, 0.3)
    await asyncio.sleep(0.15)
    await store.incr("calls:day", 1.0, 0.3)  # does not extend the window
    assert await store.get("calls:day") == 2.0
    await asyncio.sleep(0.25)
    assert await store.get("calls:day") == 0.0


async def test_incr_if_below_changes_nothing_when_it_would_pass_the_limit(
    store: CounterStore,
) -> None:
    assert await store.incr_if_below("k", 7.0, 10.0, 60) == IncrResult(True, 7.0)
    assert await store.incr_if_below("k", 4.0, 10.0, 60) == IncrResult(False, 7.0)
    assert await store.incr_if_below("k", 3.0, 10.0, 60) == IncrResult(True, 10.0)
    assert await store.get("k") == 10.0


async def test_incr_if_below_is_atomic_under_concurrency(store: CounterStore) -> None:
    results = await asyncio.gather(
        *(store.incr_if_below("calls:user:1", 1.0, 37.0, 60) for _ in range(200))
    )
    assert sum(r.ok for r in results) == 37
    assert await store.get("calls:user:1") == 37.0
    assert sorted(r.value for r in results if r.ok) == [float(v) for v in range(1, 38)]


# -- flags ---------------------------------------------------------------------------------


async def test_flags_are_read_by_prefix_and_cleared_with_none(store: CounterStore) -> None:
    assert await store.get_flags("kill:") == {}
    await store.set_flag("kill:global", "on", {"by": "ops", "reason": "incident 42"})
    await store.set_flag("kill:feature:chat", "degraded")
    await store.set_flag("other:x", "1")
    assert await store.get_flags("kill:") == {"kill:global": "on", "kill:feature:chat": "degraded"}
    assert await store.get_flags() == {
        "kill:global": "on",
        "kill:feature:chat": "degraded",
        "other:x": "1",
    }
    await store.set_flag("kill:global", None, {"by": "ops", "reason": "resolved"})
    assert await store.get_flags("kill:") == {"kill:feature:chat": "degraded"}


async def test_flag_meta_records_the_last_change(store: CounterStore) -> None:
    assert await store.flag_meta("kill:global") is None
    await store.set_flag("kill:global", "on", {"by": "ops", "at": 1.5})
    assert await store.flag_meta("kill:global") == {"by": "ops", "at": 1.5}
    await store.set_flag("kill:global", None, {"by": "bob"})
    assert await store.flag_meta("kill:global") == {"by": "bob"}

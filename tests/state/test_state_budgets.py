"""Budgets: reserve-then-settle can never overshoot a cap, under any concurrency or crash."""

from __future__ import annotations

import asyncio
import multiprocessing
from multiprocessing.queues import Queue

import pytest
import redis
from _state_support import REDIS_URL, StateBackend, reserve_many
from redis.crc import key_slot

from bastion.state import Cap, CounterStore, Usage

# 0.25 and 12.5 are exact in binary, so "exactly 50 fit" is not at the mercy of rounding.
AMOUNT = 0.25
CAP = Cap("spend:2025-06-01:global", 12.5, 3600)
AFFORDABLE = 50


async def test_store_satisfies_the_protocol(store: CounterStore) -> None:
    assert isinstance(store, CounterStore)


async def test_500_concurrent_reserves_admit_exactly_what_the_cap_affords(
    store: CounterStore,
) -> None:
    results = await asyncio.gather(*(store.reserve(f"r{i}", [CAP], AMOUNT, 60) for i in range(500)))
    assert sum(r.ok for r in results) == AFFORDABLE
    assert await store.usage(CAP.key) == Usage(0.0, CAP.limit)
    refused = [r for r in results if not r.ok]
    assert all(r.refused_cap == CAP.key and r.limit == CAP.limit for r in refused)


async def test_usage_never_exceeds_cap_while_calls_reserve_and_settle(store: CounterStore) -> None:
    seen: list[float] = []

    async def call(i: int) -> bool:
        result = await store.reserve(f"r{i}", [CAP], AMOUNT, 60)
        if result.ok:
            await asyncio.sleep(0)
            seen.append((await store.usage(CAP.key)).total)
            assert await store.settle(f"r{i}", AMOUNT)
        return result.ok

    admitted = await asyncio.gather(*(call(i) for i in range(500)))
    assert sum(admitted) == AFFORDABLE
    assert seen and max(seen) <= CAP.limit
    assert await store.usage(CAP.key) == Usage(CAP.limit, 0.0)


async def test_reserves_over_three_redis_clients_never_overshoot(
    redis_backend: StateBackend, redis_store: CounterStore
) -> None:
    clients = [redis_store, redis_backend.open(), redis_backend.open()]
    results = await asyncio.gather(
        *(clients[i % 3].reserve(f"r{i}", [CAP], AMOUNT, 60) for i in range(500))
    )
    assert sum(r.ok for r in results) == AFFORDABLE
    assert await clients[1].usage(CAP.key) == Usage(0.0, CAP.limit)


async def test_reserves_from_three_processes_never_overshoot(
    redis_backend: StateBackend, redis_store: CounterStore
) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(3)
    out: Queue[int] = ctx.Queue()
    procs = [
        ctx.Process(
            target=reserve_many,
            args=(REDIS_URL, redis_backend.prefix, CAP, AMOUNT, 167, barrier, out),
        )
        for _ in range(3)
    ]
    for proc in procs:
        proc.start()
    try:
        admitted = [await asyncio.to_thread(out.get, True, 60) for _ in procs]
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    assert sum(admitted) == AFFORDABLE
    assert await redis_store.usage(CAP.key) == Usage(0.0, CAP.limit)


async def test_expired_lease_frees_a_dead_reservation_and_late_settle_still_counts(
    store: CounterStore,
) -> None:
    cap = Cap("spend:day:user:u1", 1.0, 3600)
    assert (await store.reserve("crashed", [cap], 1.0, lease_seconds=0.2)).ok
    refused = await store.reserve("next", [cap], 0.5, 60)
    assert not refused.ok
    assert (refused.settled, refused.reserved) == (0.0, 1.0)
    await asyncio.sleep(0.3)
    assert await store.usage(cap.key) == Usage(0.0, 0.0)
    assert (await store.reserve("next", [cap], 0.5, 60)).ok
    # The call was slow, not dead: its real cost is still spent and recorded.
    assert await store.settle("crashed", 0.375)
    assert await store.usage(cap.key) == Usage(0.375, 0.5)


async def test_settle_replaces_reservation_by_actual_even_above_it(store: CounterStore) -> None:
    cap = Cap("spend:day:feature:chat", 10.0, 3600)
    assert (await store.reserve("a", [cap], 5.0, 60)).ok
    assert await store.usage(cap.key) == Usage(0.0, 5.0)
    assert await store.settle("a", 7.0)
    assert await store.usage(cap.key) == Usage(7.0, 0.0)
    assert not await store.settle("a", 7.0)  # a second settle records nothing
    assert await store.usage(cap.key) == Usage(7.0, 0.0)
    refused = await store.reserve("b", [cap], 4.0, 60)
    assert not refused.ok
    assert (refused.settled, refused.reserved) == (7.0, 0.0)
    assert (await store.reserve("c", [cap], 3.0, 60)).ok


async def test_release_drops_the_reservation_without_spending(store: CounterStore) -> None:
    cap = Cap("spend:day:global", 10.0, 3600)
    assert (await store.reserve("a", [cap], 4.0, 60)).ok
    assert (await store.reserve("b", [cap], 2.0, 60)).ok
    assert await store.release("a")
    assert await store.usage(cap.key) == Usage(0.0, 2.0)
    assert not await store.release("a")
    assert not await store.settle("a", 1.0)
    assert await store.usage(cap.key) == Usage(0.0, 2.0)
    assert await store.release("b")
    assert await store.usage(cap.key) == Usage(0.0, 0.0)


async def test_repeated_reserve_with_the_same_id_holds_once(store: CounterStore) -> None:
    cap = Cap("spend:day:global", 10.0, 3600)
    assert (await store.reserve("a", [cap], 4.0, 60)).ok
    assert (await store.reserve("a", [cap], 4.0, 60)).ok
    assert await store.usage(cap.key) == Usage(0.0, 4.0)


async def test_one_refusing_cap_refuses_all_and_is_named(store: CounterStore) -> None:
    roomy = Cap("spend:day:global", 100.0, 3600)
    tight = Cap("spend:day:user:u1", 1.0, 3600)
    assert (await store.reserve("a", [roomy, tight], 0.75, 60)).ok
    refused = await store.reserve("b", [roomy, tight], 0.5, 60)
    assert not refused.ok
    assert refused.refused_cap == tight.key
    assert (refused.limit, refused.settled, refused.reserved) == (1.0, 0.0, 0.75)
    assert await store.usage(roomy.key) == Usage(0.0, 0.75)  # nothing held where it fitted
    assert await store.settle("a", 0.5)
    assert await store.usage(roomy.key) == Usage(0.5, 0.0)
    assert await store.usage(tight.key) == Usage(0.5, 0.0)


async def test_caps_are_checked_in_order_and_the_first_refusal_is_named(
    store: CounterStore,
) -> None:
    first, second = Cap("a", 1.0, 3600), Cap("b", 1.0, 3600)
    refused = await store.reserve("x", [first, second], 2.0, 60)
    assert refused.refused_cap == "a"


async def test_cap_resets_after_its_ttl(store: CounterStore) -> None:
    cap = Cap("spend:short:global", 1.0, 0.3)
    assert (await store.reserve("a", [cap], 1.0, 60)).ok
    assert await store.settle("a", 1.0)
    assert not (await store.reserve("b", [cap], 0.5, 60)).ok
    await asyncio.sleep(0.4)
    assert await store.usage(cap.key) == Usage(0.0, 0.0)
    assert (await store.reserve("b", [cap], 0.5, 60)).ok


async def test_bad_reservations_are_rejected_as_bugs(store: CounterStore) -> None:
    with pytest.raises(ValueError):
        await store.reserve("a", [CAP, CAP], 1.0, 60)
    with pytest.raises(ValueError):
        await store.reserve("a", [CAP], -1.0, 60)
    with pytest.raises(ValueError):
        await store.reserve("a", [], 1.0, 60)
    with pytest.raises(ValueError):
        Cap("k", 1.0, 0)


async def test_budget_keys_share_one_cluster_slot(
    redis_backend: StateBackend, redis_store: CounterStore
) -> None:
    caps = [Cap("g", 10, 60), Cap("f:chat", 10, 60), Cap("u:42", 10, 60)]
    assert (await redis_store.reserve("r1", caps, 1.0, 60)).ok
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{redis_backend.prefix}:*"))
    finally:
        client.close()
    assert len(keys) == 7  # hash + lease zset per cap, plus the reservation record
    assert len({key_slot(k) for k in keys}) == 1

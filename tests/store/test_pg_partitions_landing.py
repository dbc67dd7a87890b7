"""A call record always lands on partitioned PostgreSQL: its day's partition is made ahead or on
demand, and a day without one (too old, dropped under the store) falls into the default partition
and moves out of it when the day's partition is made."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import asyncpg

from bastion.store import CallRecord, open_store
from bastion.store.pg_partitions import (
    DAY_SECONDS,
    DEFAULT_PARTITION,
    attached_days,
    create_day,
    day_of,
    partition_name,
)
from bastion.store.postgres import PARTITION_DAYS_AHEAD

PgSchema = Callable[[], AbstractAsyncContextManager[str]]


def today() -> int:
    day = day_of(time.time())
    assert day is not None
    return day


def call(rid: str, ts: float, **kw: Any) -> CallRecord:
    return CallRecord(
        request_id=rid,
        trace_id="t-land",
        ts=ts,
        api_format="anthropic",
        requested_model="claude-fast",
        output_text=f"answer {rid}",
        **kw,
    )


async def placement(url: str) -> dict[str, str]:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        rows = await conn.fetch("SELECT request_id, tableoid::regclass::text FROM calls")
        return {r[0]: r[1] for r in rows}
    finally:
        await conn.close()


async def days_of(url: str) -> set[int]:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        return await attached_days(conn)
    finally:
        await conn.close()


async def test_migrate_makes_today_and_the_days_ahead(fresh_pg_schema: PgSchema) -> None:
    async with fresh_pg_schema() as url:
        store = open_store(url)
        try:
            await store.migrate()
            await store.migrate()  # again: nothing new, nothing fails
        finally:
            await store.close()
        t = today()
        assert await days_of(url) >= set(range(t, t + PARTITION_DAYS_AHEAD + 1))


async def test_a_record_for_a_day_without_a_partition_creates_it(fresh_pg_schema: PgSchema) -> None:
    async with fresh_pg_schema() as url:
        store = open_store(url)
        try:
            await store.migrate()
            old = today() - 5  # a spilled record replayed days later
            assert old not in await days_of(url)
            ts = old * DAY_SECONDS + 3600.5
            assert await store.insert_calls([call("late", ts), call("now", time.time())]) == 2
            assert old in await days_of(url)
            where = await placement(url)
            assert where["late"] == partition_name(old)
            assert where["now"] == partition_name(today())
            (got,) = [c for c in await store.recent_calls(10) if c.request_id == "late"]
            assert got == call("late", ts)
        finally:
            await store.close()


async def test_a_record_far_outside_the_window_lands_in_default_and_moves_with_its_day(
    fresh_pg_schema: PgSchema,
) -> None:
    ts = 1_000_000_000.0  # 2001-09-09: no partition is made on demand that far back
    async with fresh_pg_schema() as url:
        store = open_store(url)
        try:
            await store.migrate()
            assert await store.insert_calls([call("2001", ts), call("neg", -1.0)]) == 2
            assert await placement(url) == {"2001": DEFAULT_PARTITION, "neg": DEFAULT_PARTITION}

            day = day_of(ts)
            assert day is not None
            conn = await asyncpg.connect(url, timeout=5)
            try:
                assert await create_day(conn, day) is True
                assert await create_day(conn, day) is False
            finally:
                await conn.close()
            assert await placement(url) == {"2001": partition_name(day), "neg": DEFAULT_PARTITION}
            assert {c.request_id for c in await store.get_calls_by_trace("t-land")} == {
                "2001",
                "neg",
            }
            assert await store.insert_calls([call("2001", ts)]) == 0  # still known after the move
        finally:
            await store.close()


async def test_a_partition_dropped_under_the_store_sends_rows_to_default(
    fresh_pg_schema: PgSchema,
) -> None:
    async with fresh_pg_schema() as url:
        store = open_store(url)
        try:
            await store.migrate()
            now = time.time()
            assert await store.insert_calls([call("a", now)]) == 1
            conn = await asyncpg.connect(url, timeout=5)
            try:  # another replica's retention, say: this store still believes the day exists
                await conn.execute(f"DROP TABLE {partition_name(today())}")
            finally:
                await conn.close()
            assert await store.insert_calls([call("b", now + 0.001)]) == 1
            assert await placement(url) == {"b": DEFAULT_PARTITION}
        finally:
            await store.close()


async def test_replicas_making_the_same_day_at_once_make_it_once(fresh_pg_schema: PgSchema) -> None:
    async with fresh_pg_schema() as url:
        first = open_store(url)
        await first.migrate()
        stores = [open_store(url) for _ in range(4)]
        day = today() - 3
        ts = day * DAY_SECONDS + 10.0
        try:
            counts = await asyncio.gather(
                *(s.insert_calls([call(f"r{i}", ts + i)]) for i, s in enumerate(stores))
            )
            assert counts == [1, 1, 1, 1]
            where = await placement(url)
            assert where == {f"r{i}": partition_name(day) for i in range(4)}
        finally:
            for s in (first, *stores):
                await s.close()


async def test_a_day_that_cannot_be_made_now_still_lands_in_default(
    fresh_pg_schema: PgSchema,
) -> None:
    """A long reader holds the table, so the partition's DDL times out: the record still lands."""
    async with fresh_pg_schema() as url:
        store = open_store(url)
        reader = await asyncpg.connect(url, timeout=5)
        try:
            await store.migrate()
            day = today() - 4
            tx = reader.transaction()
            await tx.start()
            await reader.fetchval("SELECT count(*) FROM calls")  # holds ACCESS SHARE until rollback
            started = time.monotonic()
            assert await store.insert_calls([call("blocked", day * DAY_SECONDS + 60.0)]) == 1
            assert time.monotonic() - started < 15  # waited lock_timeout (1 s), not forever
            # the next batch of that day does not wait again (the day is retried later)
            started = time.monotonic()
            assert await store.insert_calls([call("blocked-2", day * DAY_SECONDS + 61.0)]) == 1
            assert time.monotonic() - started < 2
            await tx.rollback()
            assert await placement(url) == {
                "blocked": DEFAULT_PARTITION,
                "blocked-2": DEFAULT_PARTITION,
            }
            assert day not in await days_of(url)
        finally:
            await reader.close()
            await store.close()

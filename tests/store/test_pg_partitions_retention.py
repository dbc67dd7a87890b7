"""Retention on partitioned PostgreSQL drops whole day partitions, keeps every newer row and the
ledger, and (property) removes exactly the rows before the cut-off, never one at or after it."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.observability.retention import run_retention
from bastion.store import CallRecord, LedgerEntry, open_store
from bastion.store.pg_partitions import DAY_SECONDS, DEFAULT_PARTITION, attached_days, day_of

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
PgSchema = Callable[[], AbstractAsyncContextManager[str]]
DAY = float(DAY_SECONDS)


def today() -> int:
    day = day_of(time.time())
    assert day is not None
    return day


def call(rid: str, ts: float) -> CallRecord:
    return CallRecord(
        request_id=rid,
        trace_id="t-ret",
        ts=ts,
        api_format="openai",
        requested_model="gpt-4.1-mini",
        input_text="prompt",
        cost_usd=0.5,
    )


@asynccontextmanager
async def schema() -> AsyncIterator[str]:
    """A throwaway schema for one hypothesis example (fixtures are not reset between them)."""
    name = f"bastion_pgret_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(PG_URL, timeout=5)
    try:
        await admin.execute(f'CREATE SCHEMA "{name}"')
        yield f"{PG_URL}?search_path={name}"
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        await admin.close()


async def snapshot(url: str) -> tuple[set[int], dict[str, str]]:
    """(days with a partition, request_id -> table holding it)."""
    conn = await asyncpg.connect(url, timeout=5)
    try:
        days = await attached_days(conn)
        rows = await conn.fetch("SELECT request_id, tableoid::regclass::text FROM calls")
        return days, {r[0]: r[1] for r in rows}
    finally:
        await conn.close()


async def test_retention_drops_old_day_partitions_and_keeps_newer_rows(
    fresh_pg_schema: PgSchema,
) -> None:
    t = today()
    ages = {"d0": 0, "d1": 1, "d9": 9, "d10": 10, "d11": 11, "d30": 30}
    records = [call(rid, (t - age) * DAY + 1234.5) for rid, age in ages.items()]
    async with fresh_pg_schema() as url:
        store = open_store(url)
        try:
            await store.migrate()
            assert await store.insert_calls(records) == len(records)
            await store.insert_ledger(
                [
                    LedgerEntry(request_id=r.request_id, ts=r.ts, day="x", model="m", cost_usd=1.0)
                    for r in records
                ]
            )
            days, _ = await snapshot(url)
            assert {t - 11, t - 30} <= days

            # 10 days of metadata, at noon: the cut-off day is today - 10, which is kept whole
            now = t * DAY + DAY / 2
            result = await run_retention(store, bodies_days=None, metadata_days=10, now=now)

            assert result.calls_deleted == 2
            days, where = await snapshot(url)
            assert set(where) == {"d0", "d1", "d9", "d10"}
            assert not {d for d in days if d < t - 10}  # the old days are gone as tables
            assert {t - 10, t - 9, t} <= days
            assert await store.spend_by_day("x") == {None: 6.0}  # the ledger is kept
            again = await run_retention(store, bodies_days=None, metadata_days=10, now=now)
            assert again.calls_deleted == 0
        finally:
            await store.close()


async def test_a_cut_off_inside_a_day_deletes_exactly_the_rows_before_it(
    fresh_pg_schema: PgSchema,
) -> None:
    t = today()
    async with fresh_pg_schema() as url:
        store = open_store(url)
        try:
            await store.migrate()
            stamps = [(t - 2) * DAY + 5, (t - 1) * DAY + 100, (t - 1) * DAY + 200, t * DAY + 1]
            await store.insert_calls([call(f"c{i}", ts) for i, ts in enumerate(stamps)])
            assert await store.delete_calls_before((t - 1) * DAY + 150) == 2
            days, where = await snapshot(url)
            assert set(where) == {"c2", "c3"}
            assert t - 2 not in days and t - 1 in days  # a day partly kept is not dropped
        finally:
            await store.close()


# timestamps within ~70 days of today (some outside the on-demand window: default partition),
# a few far in the past and before 1970, and exact midnights
def _stamps() -> st.SearchStrategy[float]:
    t = today()
    return st.one_of(
        st.builds(
            lambda d, s: (t + d) * DAY + s,
            st.integers(min_value=-70, max_value=3),
            st.floats(min_value=0, max_value=DAY, exclude_max=True),
        ),
        st.integers(min_value=-70, max_value=3).map(lambda d: (t + d) * DAY),
        st.floats(min_value=-2 * DAY, max_value=1e9),
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    stamps=st.lists(_stamps(), min_size=1, max_size=30),
    cut_day=st.integers(min_value=-72, max_value=4),
    cut_second=st.floats(min_value=0, max_value=DAY, exclude_max=True),
    whole_days=st.booleans(),
)
def test_retention_keeps_exactly_the_rows_at_or_after_the_cut_off(
    stamps: list[float], cut_day: int, cut_second: float, whole_days: bool
) -> None:
    t = today()
    records = [call(f"p{i:03d}", ts) for i, ts in enumerate(stamps)]
    now = (t + cut_day) * DAY + cut_second

    async def go() -> None:
        async with schema() as url:
            store = open_store(url)
            try:
                await store.migrate()
                assert await store.insert_calls(records) == len(records)
                if whole_days:  # the retention pass: metadata_days=0 at ``now``
                    result = await run_retention(store, bodies_days=None, metadata_days=0, now=now)
                    cutoff = math.floor(now / DAY) * DAY  # midnight UTC on or before now
                    removed = result.calls_deleted
                else:
                    cutoff = now
                    removed = await store.delete_calls_before(now)
                days, where = await snapshot(url)
            finally:
                await store.close()
            keep = {r.request_id for r in records if r.ts >= cutoff}
            assert set(where) == keep  # nothing at/after the cut-off lost, nothing before kept
            assert removed == len(records) - len(keep)
            # every past day that ended by the cut-off is gone as a table, not just emptied
            # (today and the days ahead are made again, empty, by the same pass)
            assert not {d for d in days if (d + 1) * DAY <= cutoff and d < t}
            assert all(
                table.startswith("calls_p") or table == DEFAULT_PARTITION
                for table in where.values()
            )

    asyncio.run(go())

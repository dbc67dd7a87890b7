"""Migration 6 on a populated PostgreSQL call table: every row moves to its day's partition, and
every read the dashboard, spend, review queue and traces make answers exactly as before."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.findings import Finding
from bastion.store import MIGRATIONS, CallRecord, LedgerEntry, RecordStore, open_store
from bastion.store._rows import CALL_COLUMNS, CALL_JSON_COLUMNS, call_to_row
from bastion.store.migrations import POSTGRES_BOOTSTRAP
from bastion.store.pg_partitions import DEFAULT_PARTITION, day_of, partition_name
from bastion.store.postgres import _CALL_TYPES, _unnest_insert

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
DAY = 86400.0
BASE = 1_717_200_000.0  # 2024-06-01 00:00 UTC
# the insert the store made before migration 6 (unique on request_id alone)
V5_INSERT = _unnest_insert("calls", CALL_COLUMNS, _CALL_TYPES, CALL_JSON_COLUMNS)
ALL_COLUMNS = ", ".join(f"{c}::text" if c in CALL_JSON_COLUMNS else c for c in CALL_COLUMNS)


@asynccontextmanager
async def schema_v5() -> AsyncIterator[str]:
    """A fresh schema at version 5 (the release before partitioning); dropped afterwards."""
    schema = f"bastion_pgpart_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(PG_URL, timeout=5)
    try:
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        url = f"{PG_URL}?search_path={schema}"
        conn = await asyncpg.connect(url, timeout=5)
        try:
            await conn.execute(POSTGRES_BOOTSTRAP)
            for m in MIGRATIONS:
                if m.version > 5:
                    break
                for statement in m.postgres:
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO schema_migrations VALUES ($1, $2, 0)", m.version, m.name
                )
        finally:
            await conn.close()
        yield url
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


async def insert_v5(url: str, records: list[CallRecord]) -> None:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        rows = [call_to_row(r) for r in records]
        await conn.execute(V5_INSERT, *[list(c) for c in zip(*rows, strict=True)])
    finally:
        await conn.close()


async def raw(url: str, sql: str) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        return [tuple(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


def call(rid: str, ts: float, **kw: Any) -> CallRecord:
    values: dict[str, Any] = {
        "request_id": rid,
        "trace_id": f"trace-{rid[-1]}",
        "ts": ts,
        "api_format": "openai",
        "requested_model": "gpt-4.1-mini",
        "feature": "chat" if rid[-1] in "02468" else "search",
        "user_id": "user-1",
        "input_text": f"prompt {rid}",
        "output_text": f"answer {rid}",
        "input_tokens": 10,
        "cost_usd": 0.01,
        "flags": {"pii": {"email": 1}},
    }
    values.update(kw)
    return CallRecord(**values)


async def reads(store: RecordStore, traces: set[str]) -> dict[str, Any]:
    """What the dashboard, review queue, traces and spend pages read, keyed by query."""
    out: dict[str, Any] = {
        "recent": await store.recent_calls(1000),
        "recent_chat": await store.recent_calls(1000, feature="chat"),
        "recent_3": await store.recent_calls(3),
        "spend_day": await store.spend_by_day("2024-06-02", "feature"),
        "spend_between": await store.spend_between(BASE, BASE + 3 * DAY, "user_id"),
    }
    for t in sorted(traces):
        out[f"trace {t}"] = await store.get_calls_by_trace(t)
    return out


async def test_migration_moves_every_row_and_answers_every_read_as_before() -> None:
    finding = Finding(
        detector="pii", kind="pii", action="redacted", where="request", version="1", score=0.9
    )
    records = [
        call(f"r{i}", BASE + i * DAY / 3, findings=(finding,) if i % 2 else ()) for i in range(9)
    ]
    records += [call("pre-1970-0", -5.0), call("ancient-1", 12.5), call("edge-2", BASE + DAY)]
    async with schema_v5() as url:
        await insert_v5(url, records)
        store = open_store(url)
        try:
            await store.insert_ledger(
                [
                    LedgerEntry(
                        request_id=r.request_id,
                        ts=r.ts,
                        day="2024-06-02",
                        model="m",
                        user_id="user-1",
                        feature=r.feature,
                        cost_usd=r.cost_usd,
                    )
                    for r in records
                ]
            )
            traces = {r.trace_id for r in records}
            before_rows = await raw(url, f"SELECT {ALL_COLUMNS} FROM calls ORDER BY request_id")
            before = await reads(store, traces)

            await store.migrate()

            after_rows = await raw(url, f"SELECT {ALL_COLUMNS} FROM calls ORDER BY request_id")
            assert after_rows == before_rows and len(after_rows) == len(records)
            assert await reads(store, traces) == before
            assert before["recent_3"][0].request_id == "r8"

            kind = await raw(
                url, "SELECT relkind::text FROM pg_class WHERE oid = 'calls'::regclass"
            )
            assert kind == [("p",)]
            where = dict(await raw(url, "SELECT request_id, tableoid::regclass::text FROM calls"))
            for r in records:
                day = day_of(r.ts)
                want = DEFAULT_PARTITION if day is None else partition_name(day)
                assert where[r.request_id] == want, r.request_id
            assert where["pre-1970-0"] == DEFAULT_PARTITION
            assert where["edge-2"] == "calls_p20240602"  # midnight belongs to the day it starts
            pkey = await raw(
                url,
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = 'calls'::regclass AND contype = 'p'",
            )
            assert pkey == [("PRIMARY KEY (request_id, ts)",)]

            # after migration: a replay is skipped, a new record lands, old rows stay readable
            assert await store.insert_calls([records[4]]) == 0
            assert await store.insert_calls([call("new-1", BASE + 5.0)]) == 1
            assert len(await store.recent_calls(1000)) == len(records) + 1
            versions = await raw(url, "SELECT version FROM schema_migrations ORDER BY version")
            assert [v[0] for v in versions] == [m.version for m in MIGRATIONS]
        finally:
            await store.close()


TS = st.one_of(
    st.floats(min_value=-3 * DAY, max_value=3 * DAY, allow_nan=False),
    st.floats(min_value=BASE - 40 * DAY, max_value=BASE + 40 * DAY, allow_nan=False),
    st.integers(min_value=-5, max_value=5).map(lambda d: BASE + d * DAY),  # midnights
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stamps=st.lists(TS, min_size=1, max_size=40))
def test_any_populated_table_migrates_without_losing_or_misplacing_a_row(
    stamps: list[float],
) -> None:
    records = [call(f"p{i:03d}", ts) for i, ts in enumerate(stamps)]

    async def go() -> None:
        async with schema_v5() as url:
            await insert_v5(url, records)
            before = await raw(url, f"SELECT {ALL_COLUMNS} FROM calls ORDER BY request_id")
            store = open_store(url)
            try:
                await store.migrate()
            finally:
                await store.close()
            assert await raw(url, f"SELECT {ALL_COLUMNS} FROM calls ORDER BY request_id") == before
            placed = await raw(url, "SELECT ts, tableoid::regclass::text FROM calls")
            for ts, table in placed:
                day = day_of(ts)
                assert table == (DEFAULT_PARTITION if day is None else partition_name(day))

    asyncio.run(go())

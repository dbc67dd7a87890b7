"""Retention on SQLite and PostgreSQL: exactly the right calls lose text or go; the ledger stays."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bastion.observability.retention import RetentionTask, run_retention
from bastion.store import CallRecord, LedgerEntry, RecordStore, open_store

PG_URL = os.environ.get("BASTION_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
DAY = 86400.0
NOW = 1_750_000_000.0
TRACE = "retention-trace"
# request id -> age in days; bodies keep 30 days, metadata 90
AGES = {
    "fresh": 1.0,
    "week": 7.0,
    "at_body_cutoff": 30.0,  # exactly at the cut-off: kept (strictly older goes)
    "body_old": 31.0,
    "body_older": 89.0,
    "at_meta_cutoff": 90.0,
    "meta_old": 91.0,
    "ancient": 400.0,
}


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RecordStore]:
    """A migrated store per backend; PostgreSQL in a throwaway schema, failing if unreachable."""
    if request.param == "sqlite":
        s = open_store(f"sqlite:///{tmp_path / 'records.db'}")
        await s.migrate()
        try:
            yield s
        finally:
            await s.close()
        return
    schema = f"bastion_obs_{uuid.uuid4().hex[:12]}"
    try:
        admin = await asyncpg.connect(PG_URL, timeout=5)
    except Exception as exc:
        pytest.fail(f"PostgreSQL is required but unreachable at {PG_URL}: {exc}")
    try:
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        sep = "&" if "?" in PG_URL else "?"
        s = open_store(f"{PG_URL}{sep}search_path={schema}")
        await s.migrate()
        try:
            yield s
        finally:
            await s.close()
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


def record(rid: str, age_days: float, **kw: Any) -> CallRecord:
    return CallRecord(
        request_id=rid,
        trace_id=TRACE,
        ts=NOW - age_days * DAY,
        api_format="openai",
        requested_model="gpt-4.1-mini",
        feature="chat",
        input_text=f"prompt of {rid}",
        output_text=f"answer of {rid}",
        input_tokens=10,
        output_tokens=20,
        cost_usd=0.01,
        **kw,
    )


async def seed(store: RecordStore) -> None:
    await store.insert_calls([record(rid, age) for rid, age in AGES.items()])
    await store.insert_ledger(
        [
            LedgerEntry(
                request_id=rid,
                ts=NOW - age * DAY,
                day="2025-01-01",
                model="gpt-4.1-mini",
                feature="chat",
                cost_usd=0.01 * (i + 1),
            )
            for i, (rid, age) in enumerate(AGES.items())
        ]
    )


async def by_id(store: RecordStore) -> dict[str, CallRecord]:
    return {c.request_id: c for c in await store.get_calls_by_trace(TRACE)}


async def test_bodies_and_metadata_age_out_separately_and_exactly(store: RecordStore) -> None:
    await seed(store)
    result = await run_retention(store, bodies_days=30, metadata_days=90, now=NOW)
    assert result.calls_deleted == 2  # meta_old, ancient
    assert result.bodies_cleared == 3  # body_old, body_older, at_meta_cutoff
    assert result.bodies_before == NOW - 30 * DAY
    assert result.metadata_before == NOW - 90 * DAY
    calls = await by_id(store)
    assert set(calls) == set(AGES) - {"meta_old", "ancient"}
    with_text = {rid for rid, c in calls.items() if c.input_text is not None}
    without_text = {rid for rid, c in calls.items() if c.input_text is None}
    assert with_text == {"fresh", "week", "at_body_cutoff"}
    assert without_text == {"body_old", "body_older", "at_meta_cutoff"}
    for rid in without_text:
        c = calls[rid]
        assert c.output_text is None
        # metadata survives the body cut
        assert (c.input_tokens, c.output_tokens, c.cost_usd, c.feature) == (10, 20, 0.01, "chat")
    assert calls["fresh"].input_text == "prompt of fresh"
    assert calls["fresh"].output_text == "answer of fresh"


async def test_the_spend_ledger_is_untouched_by_retention(store: RecordStore) -> None:
    await seed(store)
    before = await store.spend_by_day("2025-01-01", "feature")
    await run_retention(store, bodies_days=0, metadata_days=0, now=NOW + 1)
    assert await by_id(store) == {}
    after = await store.spend_by_day("2025-01-01", "feature")
    assert after == before
    assert after["chat"] == pytest.approx(sum(0.01 * (i + 1) for i in range(len(AGES))))


async def test_a_second_pass_finds_nothing_left_to_do(store: RecordStore) -> None:
    await seed(store)
    await run_retention(store, bodies_days=30, metadata_days=90, now=NOW)
    again = await run_retention(store, bodies_days=30, metadata_days=90, now=NOW)
    assert (again.bodies_cleared, again.calls_deleted) == (0, 0)


async def test_none_keeps_that_kind_of_data_forever(store: RecordStore) -> None:
    await seed(store)
    only_bodies = await run_retention(store, bodies_days=30, metadata_days=None, now=NOW)
    assert only_bodies.calls_deleted == 0 and only_bodies.metadata_before is None
    assert set(await by_id(store)) == set(AGES)
    only_meta = await run_retention(store, bodies_days=None, metadata_days=90, now=NOW)
    assert only_meta.bodies_cleared == 0 and only_meta.calls_deleted == 2


async def test_retention_task_runs_periodically_until_stopped(store: RecordStore) -> None:
    clock = [NOW]
    task = RetentionTask(
        store, bodies_days=30, metadata_days=90, interval_seconds=0.05, clock=lambda: clock[0]
    )
    task.start()
    try:
        for _ in range(200):
            if task.runs >= 1:
                break
            await asyncio.sleep(0.01)
        clock[0] = NOW + 0.5 * DAY  # "at_meta_cutoff" is now older than 90 days
        await seed(store)  # arrives after the first pass: only a later pass can remove it
        for _ in range(400):
            if task.last_result is not None and task.last_result.calls_deleted:
                break
            await asyncio.sleep(0.01)
    finally:
        await task.stop()
    assert not task.running
    assert set(await by_id(store)) == set(AGES) - {"meta_old", "ancient", "at_meta_cutoff"}
    runs = task.runs
    await asyncio.sleep(0.15)
    assert task.runs == runs  # stopped means stopped


async def test_a_failing_pass_is_counted_and_the_task_keeps_going() -> None:
    class Down:
        calls = 0

        async def delete_calls_before(self, ts: float) -> int:
            Down.calls += 1
            raise ConnectionError("store down")

        async def delete_call_bodies_before(self, ts: float) -> int:
            return 0

    task = RetentionTask(Down(), bodies_days=1, metadata_days=2, interval_seconds=0.02)  # type: ignore[arg-type]
    task.start()
    for _ in range(200):
        if task.failures >= 2:
            break
        await asyncio.sleep(0.01)
    assert task.running
    await task.stop()
    assert task.failures >= 2 and task.runs == 0


def test_negative_or_nan_days_are_refused_at_construction() -> None:
    with pytest.raises(ValueError):
        RetentionTask(None, bodies_days=-1, metadata_days=90)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        RetentionTask(None, bodies_days=1, metadata_days=float("nan"))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        RetentionTask(None, bodies_days=1, metadata_days=2, interval_seconds=0)  # type: ignore[arg-type]

"""Migrations: idempotent, safe when replicas start together, and one schema on both backends."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import asyncpg

from bastion.store import MIGRATIONS, CallRecord, RecordStore, latest_version, open_store
from bastion.store.migrations import POSTGRES_BOOTSTRAP, SQLITE_BOOTSTRAP

ALL_VERSIONS = [m.version for m in MIGRATIONS]


def test_migration_versions_are_unique_and_increasing() -> None:
    assert sorted(set(ALL_VERSIONS)) == ALL_VERSIONS
    assert ALL_VERSIONS[0] == 1
    assert latest_version() == ALL_VERSIONS[-1]
    for m in MIGRATIONS:
        assert m.sqlite and m.postgres, f"migration {m.version} must be spelled for both dialects"


async def test_migrate_twice_is_a_no_op(
    store: RecordStore, backend: Any, make_call: Callable[..., CallRecord]
) -> None:
    await store.insert_calls([make_call("kept")])

    await store.migrate()
    await store.migrate()

    rows = await backend.query("SELECT version FROM schema_migrations ORDER BY version")
    assert [r[0] for r in rows] == ALL_VERSIONS
    assert [c.request_id for c in await store.recent_calls(5)] == ["kept"]


PgSchema = Callable[[], AbstractAsyncContextManager[str]]


async def test_concurrent_migrate_on_postgres_applies_each_version_once(
    fresh_pg_schema: PgSchema,
) -> None:
    async with fresh_pg_schema() as url:
        stores = [open_store(url) for _ in range(4)]
        try:
            await asyncio.gather(*(s.migrate() for s in stores))
            conn = await asyncpg.connect(url, timeout=5)
            try:
                rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
            finally:
                await conn.close()
            assert [r["version"] for r in rows] == ALL_VERSIONS
            for s in stores:
                await s.ping()
                assert await s.recent_calls(1) == []
        finally:
            for s in stores:
                await s.close()


async def test_concurrent_migrate_on_one_sqlite_file_applies_each_version_once(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    stores = [open_store(url) for _ in range(3)]
    try:
        await asyncio.gather(*(s.migrate() for s in stores))
    finally:
        for s in stores:
            await s.close()
    with sqlite3.connect(tmp_path / "shared.db") as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations")]
    assert versions == ALL_VERSIONS


async def test_both_backends_have_the_same_columns_and_nullability(
    tmp_path: Path, fresh_pg_schema: PgSchema
) -> None:
    tables = ("keys", "calls", "ledger", "schema_migrations")
    sqlite_store = open_store(f"sqlite:///{tmp_path / 'schema.db'}")
    await sqlite_store.migrate()
    await sqlite_store.close()
    with sqlite3.connect(tmp_path / "schema.db") as conn:
        sqlite_cols = {
            t: [(r[1], not r[3] and not r[5]) for r in conn.execute(f"PRAGMA table_info({t})")]
            for t in tables
        }

    async with fresh_pg_schema() as url:
        pg_store = open_store(url)
        await pg_store.migrate()
        await pg_store.close()
        conn2 = await asyncpg.connect(url, timeout=5)
        try:
            pg_cols = {}
            for t in tables:
                rows = await conn2.fetch(
                    "SELECT column_name, is_nullable FROM information_schema.columns "
                    "WHERE table_schema = current_schema() AND table_name = $1 "
                    "ORDER BY ordinal_position",
                    t,
                )
                pg_cols[t] = [(r["column_name"], r["is_nullable"] == "YES") for r in rows]
        finally:
            await conn2.close()

    assert sqlite_cols == pg_cols


async def test_sqlite_file_runs_in_wal_mode(store: RecordStore, backend: Any) -> None:
    if backend.kind != "sqlite":
        return
    assert (await backend.query("PRAGMA journal_mode"))[0][0] == "wal"


async def test_upgrade_to_v3_keeps_old_calls_and_adds_an_empty_client_request_id(
    backend: Any, make_call: Callable[..., CallRecord]
) -> None:
    """A store written by the previous release (schema v2) upgrades in place, losing nothing."""
    old = [m for m in MIGRATIONS if m.version <= 2]
    columns_v2 = "request_id, trace_id, ts, api_format, requested_model, status"
    row_v2 = "('old-1', 'trace-1', 1.0, 'openai', 'gpt', 200)"
    if backend.kind == "sqlite":
        path = backend.url.removeprefix("sqlite:///")
        with sqlite3.connect(path) as conn:
            conn.execute(SQLITE_BOOTSTRAP)
            for m in old:
                for statement in m.sqlite:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_migrations VALUES (?, ?, 0)", (m.version, m.name))
            conn.execute(f"INSERT INTO calls ({columns_v2}) VALUES {row_v2}")
    else:
        conn2 = await asyncpg.connect(backend.url, timeout=5)
        try:
            await conn2.execute(POSTGRES_BOOTSTRAP)
            for m in old:
                for statement in m.postgres:
                    await conn2.execute(statement)
                await conn2.execute(
                    "INSERT INTO schema_migrations VALUES ($1, $2, 0)", m.version, m.name
                )
            await conn2.execute(f"INSERT INTO calls ({columns_v2}) VALUES {row_v2}")
        finally:
            await conn2.close()

    store = open_store(backend.url)
    try:
        await store.migrate()
        await store.insert_calls([make_call("new-1", client_request_id="theirs-7")])
        by_id = {c.request_id: c for c in await store.recent_calls(10)}
    finally:
        await store.close()
    assert by_id["old-1"].client_request_id is None
    assert by_id["new-1"].client_request_id == "theirs-7"
    rows = await backend.query("SELECT version FROM schema_migrations ORDER BY version")
    assert [r[0] for r in rows] == ALL_VERSIONS

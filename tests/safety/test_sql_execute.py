"""Validated SQL runs read-only on real PostgreSQL (and SQLite); refused SQL never reaches it."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg
import pytest

from bastion.safety.validation import SqlPolicy, SqlRejected, execute_validated
from bastion.safety.validation.sql_exec import _run_postgres, _run_sqlite

PG_URL = os.environ.get("BASTION_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

POLICY = SqlPolicy(
    roles={"analyst": {"users": ["id", "name"], "orders": "*"}},
    max_rows=3,
)


@pytest.fixture
async def pg() -> AsyncIterator[Any]:
    """A connection whose search_path is a fresh schema with sample data; dropped afterwards."""
    schema = f"bastion_sqlexec_{uuid.uuid4().hex[:12]}"
    try:
        admin = await asyncpg.connect(PG_URL, timeout=5)
    except Exception as exc:
        pytest.fail(f"PostgreSQL is required but unreachable at {PG_URL}: {exc}")
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    conn = await asyncpg.connect(PG_URL, timeout=5, server_settings={"search_path": schema})
    try:
        await conn.execute(
            """
            CREATE TABLE users (id int PRIMARY KEY, name text, ssn text);
            CREATE TABLE orders (id int PRIMARY KEY, user_id int, total numeric);
            CREATE TABLE secrets (id int, value text);
            INSERT INTO users SELECT g, 'user' || g, 'ssn-' || g FROM generate_series(1, 10) g;
            INSERT INTO orders SELECT g, g % 3 + 1, g * 10 FROM generate_series(1, 10) g;
            INSERT INTO secrets VALUES (1, 'top secret');
            """
        )
        yield conn
    finally:
        await conn.close()
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


async def test_postgres_runs_allowed_query_with_limit_enforced(pg: Any) -> None:
    rows = await execute_validated(
        pg, "SELECT id, name FROM users ORDER BY id", POLICY, ["analyst"]
    )
    assert rows == [
        {"id": 1, "name": "user1"},
        {"id": 2, "name": "user2"},
        {"id": 3, "name": "user3"},
    ]


async def test_postgres_star_is_expanded_so_forbidden_columns_never_come_back(pg: Any) -> None:
    rows = await execute_validated(pg, "SELECT * FROM users ORDER BY id", POLICY, ["analyst"])
    assert rows[0] == {"id": 1, "name": "user1"}
    assert all("ssn" not in r for r in rows)


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM orders",
        "SELECT ssn FROM users",
        "SELECT * FROM secrets",
        "SELECT 1; DELETE FROM orders",
        "SELECT id FROM orders -- x",
        "WITH d AS (DELETE FROM orders RETURNING id) SELECT id FROM d",
        "SELECT pg_sleep(5)",
    ],
)
async def test_postgres_refused_sql_changes_nothing(pg: Any, sql: str) -> None:
    with pytest.raises(SqlRejected):
        await execute_validated(pg, sql, POLICY, ["analyst"])
    assert await pg.fetchval("SELECT count(*) FROM orders") == 10


async def test_postgres_transaction_is_read_only_even_if_validation_were_bypassed(pg: Any) -> None:
    with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
        await _run_postgres(pg, "DELETE FROM orders RETURNING id", (), 5.0, 10)
    with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
        await _run_postgres(
            pg, "WITH d AS (DELETE FROM orders RETURNING id) SELECT id FROM d", (), 5.0, 10
        )
    assert await pg.fetchval("SELECT count(*) FROM orders") == 10


async def test_postgres_statement_timeout_stops_slow_queries(pg: Any) -> None:
    with pytest.raises(asyncpg.QueryCanceledError):
        await _run_postgres(pg, "SELECT pg_sleep(3)", (), 0.2, 10)


async def test_postgres_refuses_to_run_inside_an_open_transaction(pg: Any) -> None:
    async with pg.transaction():
        with pytest.raises(ValueError, match="outside any transaction"):
            await execute_validated(pg, "SELECT id FROM orders", POLICY, ["analyst"])


async def test_postgres_parameters_pass_through(pg: Any) -> None:
    rows = await execute_validated(
        pg, "SELECT id FROM orders WHERE user_id = $1 ORDER BY id", POLICY, ["analyst"], args=[2]
    )
    assert [r["id"] for r in rows] == [1, 4, 7]


@pytest.fixture
async def lite(tmp_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    conn = await aiosqlite.connect(tmp_path / "x.db")
    await conn.executescript(
        """
        CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, ssn TEXT);
        CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER, total REAL);
        INSERT INTO users VALUES (1, 'a', 's1'), (2, 'b', 's2'), (3, 'c', 's3'), (4, 'd', 's4');
        INSERT INTO orders VALUES (1, 1, 10.0), (2, 2, 20.0);
        """
    )
    await conn.commit()
    try:
        yield conn
    finally:
        await conn.close()


async def test_sqlite_runs_validated_query_with_limit(lite: aiosqlite.Connection) -> None:
    rows = await execute_validated(lite, "SELECT * FROM users ORDER BY id", POLICY, ["analyst"])
    assert rows == [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}]


async def test_sqlite_query_only_blocks_writes_and_is_restored(lite: aiosqlite.Connection) -> None:
    with pytest.raises(aiosqlite.OperationalError, match="readonly"):
        await _run_sqlite(lite, "DELETE FROM orders", (), 5.0, 10)
    async with lite.execute("PRAGMA query_only") as cur:
        assert (await cur.fetchone()) == (0,)
    async with lite.execute("SELECT count(*) FROM orders") as cur:
        assert (await cur.fetchone()) == (2,)

"""Validated SQL runs read-only on real PostgreSQL (and SQLite); refused SQL never reaches it."""

from __future__ import annotations

import os
import sqlite3
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg
import pytest
from tests.safety.test_sql_catalogue import PG_BENIGN, SQLITE_BENIGN

from bastion.safety.validation import (
    DENIED_FUNCTION_PREFIXES,
    SqlPolicy,
    SqlRejected,
    SqlResultTooLarge,
    SqlTimedOut,
    default_functions,
    execute_validated,
)
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
    # nested inside the byte-counting wrapper, PostgreSQL refuses a writing CTE outright
    with pytest.raises((asyncpg.ReadOnlySQLTransactionError, asyncpg.FeatureNotSupportedError)):
        await _run_postgres(
            pg, "WITH d AS (DELETE FROM orders RETURNING id) SELECT id FROM d", (), 5.0, 10
        )
    assert await pg.fetchval("SELECT count(*) FROM orders") == 10


async def test_postgres_statement_timeout_stops_slow_queries(pg: Any) -> None:
    with pytest.raises(SqlTimedOut):
        await _run_postgres(pg, "SELECT pg_sleep(3)", (), 0.2, 10)
    assert await pg.fetchval("SELECT 1") == 1
    assert not pg.is_in_transaction()


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


async def test_sqlite_query_only_is_restored_after_a_refused_or_failed_run(
    lite: aiosqlite.Connection,
) -> None:
    with pytest.raises(aiosqlite.OperationalError):
        await _run_sqlite(lite, "SELECT nope FROM orders", (), 5.0, 10)
    async with lite.execute("PRAGMA query_only") as cur:
        assert (await cur.fetchone()) == (0,)


# --- the issue's attack, on real PostgreSQL -------------------------------------------------

SSN = "123-45-6789"


@pytest.fixture
async def issue_db() -> AsyncIterator[tuple[Any, str, str]]:
    """users(id, name, ssn) and orders(id, status) in a fresh schema, and a database role
    granted only orders(id, status); yields (connection, schema, role)."""
    tag = uuid.uuid4().hex[:12]
    schema, role = f"bastion_issue_{tag}", f"bastion_orders_only_{tag}"
    try:
        admin = await asyncpg.connect(PG_URL, timeout=5)
    except Exception as exc:
        pytest.fail(f"PostgreSQL is required but unreachable at {PG_URL}: {exc}")
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    await admin.execute(f'CREATE ROLE "{role}" NOLOGIN')
    conn = await asyncpg.connect(PG_URL, timeout=5, server_settings={"search_path": schema})
    try:
        await conn.execute(
            f"""
            CREATE TABLE users (id int PRIMARY KEY, name text, ssn text);
            CREATE TABLE orders (id int PRIMARY KEY, status text);
            INSERT INTO users VALUES (1, 'ann', '{SSN}'), (2, 'bob', '987-65-4321');
            INSERT INTO orders VALUES (1, 'open'), (2, 'shipped');
            GRANT USAGE ON SCHEMA "{schema}" TO "{role}";
            GRANT SELECT (id, status) ON orders TO "{role}";
            """
        )
        yield conn, schema, role
    finally:
        await conn.close()
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.execute(f'DROP OWNED BY "{role}"')
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()


ORDERS_ONLY = SqlPolicy(roles={"support": {"orders": ["id", "status"]}})


def _issue_attacks(schema: str) -> list[str]:
    return [
        "SELECT table_to_xml_and_xmlschema('users', true, false, '')",
        "SELECT table_to_xml_and_xmlschema('users', true, false, '') FROM orders",
        "SELECT id, table_to_xml_and_xmlschema('users', true, false, '')::text FROM orders",
        f"SELECT schema_to_xml_and_xmlschema('{schema}', true, false, '')",
        "SELECT database_to_xml_and_xmlschema(true, false, '')",
        "SELECT table_to_xml('users', true, false, '')",
        "SELECT table_to_xmlschema('users', true, false, '')",
        f"SELECT schema_to_xml('{schema}', true, false, '')",
        "SELECT query_to_xml('select ssn from users', true, false, '')",
        "SELECT id FROM orders WHERE table_to_xml('users', true, false, '')::text LIKE '%123%'",
        "WITH x AS (SELECT table_to_xml('users', true, true, '') AS d) SELECT d FROM x",
        "SELECT (SELECT table_to_xml_and_xmlschema('users', true, false, '')) FROM orders",
        "SELECT CASE WHEN id = 1 THEN table_to_xml('users', true, false, '') END FROM orders",
        "SELECT has_column_privilege('users', 'ssn', 'select')",
        "SELECT 'users'::regclass",
        "SELECT 'users'::regclass::oid FROM orders",
        "SELECT version()",
        "SELECT current_user",
        "SELECT user FROM orders",
        "SELECT current_database()",
        "SELECT exec($s)",
        "SELECT * FROM json_to_recordset('[]') AS x(ssn text)",
        "SELECT * FROM generate_series(1, 3)",
    ]


async def test_the_issue_attack_is_refused_and_no_ssn_comes_back(
    issue_db: tuple[Any, str, str],
) -> None:
    conn, schema, role = issue_db
    # the wall matters: run directly, the function really does hand out every user's SSN
    leaked = await conn.fetchval("SELECT table_to_xml_and_xmlschema('users', true, false, '')")
    assert SSN in leaked
    for as_role in (False, True):
        if as_role:
            await conn.execute(f'SET ROLE "{role}"')
        for sql in _issue_attacks(schema):
            with pytest.raises(SqlRejected) as info:
                rows = await execute_validated(conn, sql, ORDERS_ONLY, ["support"])
                assert SSN not in repr(rows)
            assert SSN not in str(info.value)
        rows = await execute_validated(
            conn, "SELECT id, status FROM orders ORDER BY id", ORDERS_ONLY, ["support"]
        )
        assert rows == [{"id": 1, "status": "open"}, {"id": 2, "status": "shipped"}]
    await conn.execute("RESET ROLE")


# --- analyst queries run on both engines ----------------------------------------------------

ANALYST_POLICY = SqlPolicy(
    roles={"analyst": {"users": ["id", "name", "created_at"], "orders": "*"}}, max_rows=50
)


@pytest.fixture
async def shop() -> AsyncIterator[Any]:
    """users and orders with timestamps, enough to run every benign analyst query."""
    schema = f"bastion_shop_{uuid.uuid4().hex[:12]}"
    try:
        admin = await asyncpg.connect(PG_URL, timeout=5)
    except Exception as exc:
        pytest.fail(f"PostgreSQL is required but unreachable at {PG_URL}: {exc}")
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    conn = await asyncpg.connect(PG_URL, timeout=5, server_settings={"search_path": schema})
    try:
        await conn.execute(
            """
            CREATE TABLE users (id int PRIMARY KEY, name text, ssn text, created_at timestamptz);
            CREATE TABLE orders (id int PRIMARY KEY, user_id int, status text, total numeric,
                                 created_at timestamptz);
            INSERT INTO users SELECT g, 'user ' || g, 'ssn-' || g,
                   timestamptz '2024-01-01' + g * interval '9 days' FROM generate_series(1, 20) g;
            INSERT INTO orders SELECT g, g % 7 + 1, (ARRAY['open', 'shipped', 'closed'])[g % 3 + 1],
                   g * 12.5, timestamptz '2024-01-01' + g * interval '2 days'
                   FROM generate_series(1, 60) g;
            """
        )
        yield conn
    finally:
        await conn.close()
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


@pytest.mark.parametrize("sql", PG_BENIGN)
async def test_postgres_analyst_queries_run(shop: Any, sql: str) -> None:
    rows = await execute_validated(shop, sql, ANALYST_POLICY, ["analyst"])
    assert isinstance(rows, list)
    assert all("ssn" not in r for r in rows)


@pytest.fixture
async def lite_shop(tmp_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    conn = await aiosqlite.connect(tmp_path / "shop.db")
    await conn.executescript(
        """
        CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, ssn TEXT, created_at TEXT);
        CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER, status TEXT, total REAL,
                             created_at TEXT);
        WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 60)
        INSERT INTO orders SELECT n, n % 7 + 1, CASE n % 3 WHEN 0 THEN 'open' ELSE 'shipped' END,
               n * 12.5, datetime('2024-01-01', '+' || (n * 2) || ' days') FROM g;
        WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 20)
        INSERT INTO users SELECT n, 'user ' || n, 'ssn-' || n, date('2024-01-01') FROM g;
        """
    )
    await conn.commit()
    try:
        yield conn
    finally:
        await conn.close()


@pytest.mark.parametrize("sql", SQLITE_BENIGN)
async def test_sqlite_analyst_queries_run(lite_shop: aiosqlite.Connection, sql: str) -> None:
    rows = await execute_validated(lite_shop, sql, ANALYST_POLICY, ["analyst"])
    assert isinstance(rows, list)


# --- the byte cap ---------------------------------------------------------------------------


def _extended(*names: str) -> SqlPolicy:
    """The analyst policy plus functions that can build huge values: only the cap stops them."""
    return SqlPolicy(roles=ANALYST_POLICY.roles, max_rows=1000, extra_functions=frozenset(names))


async def _peak(awaitable: Any) -> tuple[BaseException | None, int]:
    """Run ``awaitable`` under tracemalloc; the exception it raised and the peak bytes."""
    tracemalloc.start()
    try:
        await awaitable
    except Exception as exc:
        return exc, tracemalloc.get_traced_memory()[1]
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return None, peak


# Seven nested replaces turn 'x' into ten million characters using only default functions.
AMPLIFIED = "SELECT " + "replace(" * 7 + "'x'" + ", 'x', 'xxxxxxxxxx')" * 7 + " AS big FROM orders"


async def test_postgres_byte_cap_stops_a_value_built_from_allowed_functions(shop: Any) -> None:
    exc, peak = await _peak(execute_validated(shop, AMPLIFIED, ANALYST_POLICY, ["analyst"]))
    assert isinstance(exc, SqlResultTooLarge), exc
    assert peak < 8 << 20, peak


async def test_postgres_huge_values_are_refused_by_the_allow_list(shop: Any) -> None:
    with pytest.raises(SqlRejected, match="repeat"):
        await execute_validated(
            shop, "SELECT repeat('x', 100000000) FROM orders", ANALYST_POLICY, ["analyst"]
        )


async def test_postgres_byte_cap_stops_one_huge_value_before_it_is_sent(shop: Any) -> None:
    exc, peak = await _peak(
        execute_validated(
            shop, "SELECT repeat('x', 50000000) FROM orders", _extended("repeat"), ["analyst"]
        )
    )
    assert isinstance(exc, SqlResultTooLarge), exc
    assert exc.max_bytes == 1 << 20
    assert peak < 8 << 20, peak  # the 50 MB value never reached this process
    assert await shop.fetchval("SELECT 1") == 1


async def test_postgres_byte_cap_stops_many_rows_midway(shop: Any) -> None:
    sql = (
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 900) "
        "SELECT n, repeat('x', 50000) AS pad FROM r"
    )
    exc, peak = await _peak(execute_validated(shop, sql, _extended("repeat"), ["analyst"]))
    assert isinstance(exc, SqlResultTooLarge), exc
    assert peak < 8 << 20, peak  # 45 MB of rows were on offer


async def test_postgres_results_under_the_cap_are_whole_and_unchanged(shop: Any) -> None:
    sql = "SELECT id, status, total FROM orders ORDER BY id DESC"
    rows = await execute_validated(shop, sql, ANALYST_POLICY, ["analyst"])
    direct = await shop.fetch("SELECT id, status, total FROM orders ORDER BY id DESC LIMIT 50")
    assert rows == [dict(r) for r in direct]
    with pytest.raises(SqlResultTooLarge):
        await execute_validated(shop, sql, ANALYST_POLICY, ["analyst"], max_bytes=200)
    dup = await execute_validated(
        shop,
        "SELECT o.id, u.id FROM orders o JOIN users u ON u.id = o.user_id",
        ANALYST_POLICY,
        ["analyst"],
    )
    assert dup and set(dup[0]) == {"id"}


async def test_sqlite_huge_values_are_refused_by_the_allow_list(
    lite_shop: aiosqlite.Connection,
) -> None:
    with pytest.raises(SqlRejected, match="printf"):
        await execute_validated(
            lite_shop,
            "SELECT printf('%.*c', 100000000, 'x') FROM orders",
            ANALYST_POLICY,
            ["analyst"],
        )


async def test_sqlite_byte_cap_stops_one_huge_value_inside_sqlite(
    lite_shop: aiosqlite.Connection,
) -> None:
    exc, peak = await _peak(execute_validated(lite_shop, AMPLIFIED, ANALYST_POLICY, ["analyst"]))
    assert isinstance(exc, SqlResultTooLarge), exc
    # SQLite itself refused to build the value: it was never materialised anywhere
    assert isinstance(exc.__cause__, sqlite3.DataError)
    assert peak < 8 << 20, peak
    # the connection's own limit is back: a 2 MB value builds when asked directly
    async with lite_shop.execute("SELECT length(printf('%.*c', 2000000, 'x'))") as cur:
        assert await cur.fetchone() == (2000000,)


async def test_sqlite_printf_cannot_build_a_value_past_the_cap(
    lite_shop: aiosqlite.Connection,
) -> None:
    rows: list[dict[str, Any]] = []

    async def run() -> None:
        rows.extend(
            await execute_validated(
                lite_shop,
                "SELECT printf('%.*c', 100000000, 'x') AS big FROM orders",
                _extended("printf"),
                ["analyst"],
            )
        )

    exc, peak = await _peak(run())
    # SQLite's printf answers NULL past the value cap instead of failing: 100 MB never exists
    assert exc is None or isinstance(exc, SqlResultTooLarge), exc
    assert all(r["big"] is None for r in rows)
    assert peak < 8 << 20, peak


async def test_sqlite_byte_cap_stops_many_rows_midway(lite_shop: aiosqlite.Connection) -> None:
    sql = (
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 900) "
        "SELECT n, printf('%.*c', 50000, 'x') AS pad FROM r"
    )
    exc, peak = await _peak(execute_validated(lite_shop, sql, _extended("printf"), ["analyst"]))
    assert isinstance(exc, SqlResultTooLarge), exc
    assert peak < 8 << 20, peak


# --- server-side timeouts -------------------------------------------------------------------

FOREVER = "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r"


async def test_postgres_statement_timeout_is_enforced_for_allowed_sleep(pg: Any) -> None:
    sleepy = SqlPolicy(
        roles=POLICY.roles,
        allowed_functions=default_functions("postgres") | {"pg_sleep"},
        denied_prefixes=tuple(p for p in DENIED_FUNCTION_PREFIXES if p != "pg_"),
    )
    started = time.monotonic()
    with pytest.raises(SqlTimedOut):
        await execute_validated(pg, "SELECT pg_sleep(30)", sleepy, ["analyst"], timeout=0.3)
    assert time.monotonic() - started < 1.3
    assert await pg.fetchval("SELECT 1") == 1


async def test_postgres_runaway_recursive_cte_is_stopped(pg: Any) -> None:
    started = time.monotonic()
    with pytest.raises(SqlTimedOut):
        await execute_validated(pg, FOREVER, POLICY, ["analyst"], timeout=0.3)
    assert time.monotonic() - started < 1.3
    assert not pg.is_in_transaction()


async def test_sqlite_runaway_recursive_cte_is_stopped_in_the_database_thread(
    lite: aiosqlite.Connection,
) -> None:
    started = time.monotonic()
    with pytest.raises(SqlTimedOut):
        await execute_validated(lite, FOREVER, POLICY, ["analyst"], timeout=0.3)
    assert time.monotonic() - started < 1.3
    # the deadline is gone with the run: a slow but finite query afterwards completes
    async with lite.execute(
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 300000) "
        "SELECT count(*) FROM r"
    ) as cur:
        assert await cur.fetchone() == (300000,)
    async with lite.execute("PRAGMA query_only") as cur:
        assert (await cur.fetchone()) == (0,)

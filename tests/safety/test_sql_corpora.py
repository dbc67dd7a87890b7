"""The shipped corpora: every injection payload is refused, every analyst query accepted and run.

``data/sql_injection_payloads.txt`` holds payloads in quote and numeric contexts, spliced into
the query an application would build; ``data/sql_benign_queries.txt`` holds analyst queries that
must pass and, once rewritten, run on real SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg
import pytest

from bastion.safety.validation import SqlCode, SqlPolicy, execute_validated, validate_sql

DATA = Path(__file__).parent / "data"
PG_URL = os.environ.get("BASTION_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
ROLES = {
    "analyst": {
        "users": ["id", "name", "email", "created_at"],
        "orders": "*",
        "products": "*",
    }
}
POLICIES = {
    "postgres": SqlPolicy(roles=ROLES, max_rows=50),
    "sqlite": SqlPolicy(roles=ROLES, dialect="sqlite", max_rows=50),
}
ANALYST = ("analyst",)
TEMPLATES = {
    "quote": "SELECT id, name FROM users WHERE email = '{p}'",
    "numeric": "SELECT id, name FROM users WHERE id = {p}",
}
KNOWN_CODES = {c.value for c in SqlCode}


def _rows(name: str) -> list[tuple[str, str]]:
    out = []
    for line in (DATA / name).read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            kind, text = line.split("\t", 1)
            out.append((kind, text))
    return out


PAYLOADS = _rows("sql_injection_payloads.txt")
BENIGN = _rows("sql_benign_queries.txt")


def test_the_corpora_have_the_documented_shape() -> None:
    assert {k for k, _ in PAYLOADS} == {"quote", "numeric"}
    assert {k for k, _ in BENIGN} == {"any", "postgres", "sqlite"}
    assert len(PAYLOADS) >= 150 and len(BENIGN) >= 80
    assert len({p for _, p in PAYLOADS}) == len(PAYLOADS)


@pytest.mark.parametrize("dialect", ["postgres", "sqlite"])
@pytest.mark.parametrize("context", ["quote", "numeric"])
def test_the_application_query_itself_is_accepted(context: str, dialect: str) -> None:
    value = "ann@example.com" if context == "quote" else "7"
    verdict = validate_sql(TEMPLATES[context].format(p=value), POLICIES[dialect], ANALYST)
    assert verdict.ok, verdict.reasons


@pytest.mark.parametrize("dialect", ["postgres", "sqlite"])
@pytest.mark.parametrize(("context", "payload"), PAYLOADS)
def test_every_injection_payload_is_refused_with_a_known_code(
    context: str, payload: str, dialect: str
) -> None:
    verdict = validate_sql(TEMPLATES[context].format(p=payload), POLICIES[dialect], ANALYST)
    assert not verdict.ok, f"accepted: {verdict.sql}"
    assert verdict.codes and set(verdict.codes) <= KNOWN_CODES


def _benign(dialect: str) -> list[str]:
    return [q for d, q in BENIGN if d in ("any", dialect)]


@pytest.mark.parametrize("dialect", ["postgres", "sqlite"])
def test_no_analyst_query_is_refused(dialect: str) -> None:
    refused = {
        q: validate_sql(q, POLICIES[dialect], ANALYST).reasons
        for q in _benign(dialect)
        if not validate_sql(q, POLICIES[dialect], ANALYST).ok
    }
    assert refused == {}


SCHEMA = {
    "postgres": [
        "CREATE TABLE users (id int PRIMARY KEY, name text, email text, created_at timestamp, "
        "password text, ssn text)",
        "CREATE TABLE orders (id int PRIMARY KEY, user_id int, customer_id int, status text, "
        "total numeric, created_at timestamp)",
        "CREATE TABLE products (id int PRIMARY KEY, name text, price numeric, category text)",
        "CREATE TABLE secrets (id int, value text)",
    ],
    "sqlite": [
        "CREATE TABLE users (id int PRIMARY KEY, name text, email text, created_at text, "
        "password text, ssn text)",
        "CREATE TABLE orders (id int PRIMARY KEY, user_id int, customer_id int, status text, "
        "total real, created_at text)",
        "CREATE TABLE products (id int PRIMARY KEY, name text, price real, category text)",
        "CREATE TABLE secrets (id int, value text)",
    ],
}
DATA_ROWS = [
    *(
        f"INSERT INTO users VALUES ({i}, 'user{i}', 'u{i}@example.com', "
        f"'2024-0{i % 9 + 1}-1{i % 9} 10:00:00', 'pw{i}', 'ssn{i}')"
        for i in range(1, 8)
    ),
    *(
        f"INSERT INTO orders VALUES ({i}, {i % 7 + 1}, {i % 3 + 1}, "
        f"'{('paid', 'open', 'shipped', 'refunded')[i % 4]}', {i * 7.5}, "
        f"'2024-0{i % 9 + 1}-0{i % 9 + 1} 12:00:00')"
        for i in range(1, 30)
    ),
    *(
        f"INSERT INTO products VALUES ({i}, 'phone{i}', {i * 40}, 'cat{i % 3}')"
        for i in range(1, 12)
    ),
    "INSERT INTO secrets VALUES (1, 'top secret')",
]


@pytest.fixture
async def pg() -> AsyncIterator[Any]:
    schema = f"bastion_sqlcorpus_{uuid.uuid4().hex[:12]}"
    try:
        admin = await asyncpg.connect(PG_URL, timeout=5)
    except Exception as exc:
        pytest.fail(f"PostgreSQL is required but unreachable at {PG_URL}: {exc}")
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    conn = await asyncpg.connect(PG_URL, timeout=5, server_settings={"search_path": schema})
    try:
        for statement in SCHEMA["postgres"] + DATA_ROWS:
            await conn.execute(statement)
        yield conn
    finally:
        await conn.close()
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


@pytest.fixture
async def lite(tmp_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    conn = await aiosqlite.connect(tmp_path / "corpus.db")
    for statement in SCHEMA["sqlite"] + DATA_ROWS:
        await conn.execute(statement)
    await conn.commit()
    try:
        yield conn
    finally:
        await conn.close()


async def test_every_analyst_query_runs_rewritten_on_postgres(pg: Any) -> None:
    for query in _benign("postgres"):
        rows = await execute_validated(pg, query, POLICIES["postgres"], ANALYST)
        assert len(rows) <= 50, query


async def test_every_analyst_query_runs_rewritten_on_sqlite(lite: aiosqlite.Connection) -> None:
    for query in _benign("sqlite"):
        rows = await execute_validated(lite, query, POLICIES["sqlite"], ANALYST)
        assert len(rows) <= 50, query

"""Row rules: a customer's query returns only its own rows, on real SQLite and real PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.safety.validation import SqlPolicy, SqlRejected, execute_validated, validate_sql
from bastion.safety.validation._sql_rows import _number_placeholders, parse_row_rule

PG_URL = os.environ.get("BASTION_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
CUSTOMERS = (1, 2, 3, 4)
ORDERS = range(1, 41)
USERS = range(1, 6)
GRANTS = {"orders": "*", "users": ["id", "name"]}
RULE = {"orders": "orders.customer_id = :caller"}
POLICY = SqlPolicy(roles={"customer": GRANTS}, row_rules={"customer": RULE}, max_rows=1000)
OPEN = SqlPolicy(roles={"customer": GRANTS}, max_rows=1000)
LITE = SqlPolicy(
    roles={"customer": GRANTS}, row_rules={"customer": RULE}, dialect="sqlite", max_rows=1000
)


def owner(order_id: int) -> int:
    return order_id % 4 + 1


def own(caller: int) -> set[int]:
    return {i for i in ORDERS if owner(i) == caller}


SEED = [
    "CREATE TABLE users (id int PRIMARY KEY, name text, ssn text)",
    "CREATE TABLE orders (id int PRIMARY KEY, user_id int, customer_id int, status text, "
    "total int)",
    *(f"INSERT INTO users VALUES ({u}, 'user{u}', 'ssn-{u}')" for u in USERS),
    *(
        f"INSERT INTO orders VALUES ({i}, {i % 5 + 1}, {owner(i)}, "
        f"'{'open' if i % 3 else 'paid'}', {i * 3})"
        for i in ORDERS
    ),
]


@pytest.fixture
async def pg() -> AsyncIterator[Any]:
    """A connection whose search_path is a fresh seeded schema; dropped afterwards."""
    schema = f"bastion_sqlrows_{uuid.uuid4().hex[:12]}"
    try:
        admin = await asyncpg.connect(PG_URL, timeout=5)
    except Exception as exc:
        pytest.fail(f"PostgreSQL is required but unreachable at {PG_URL}: {exc}")
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    conn = await asyncpg.connect(PG_URL, timeout=5, server_settings={"search_path": schema})
    try:
        for statement in SEED:
            await conn.execute(statement)
        yield conn
    finally:
        await conn.close()
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


@pytest.fixture
async def lite(tmp_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    conn = await aiosqlite.connect(tmp_path / "rows.db")
    for statement in SEED:
        await conn.execute(statement)
    await conn.commit()
    try:
        yield conn
    finally:
        await conn.close()


# --- queries over orders in every shape a reference can take -------------------------------

ALIASES = ("o", "x", "orders", "t1")


@st.composite
def order_queries(draw: st.DrawFn, depth: int = 0) -> str:
    """A query whose one column ``oid`` holds order ids (or NULL), read through any shape."""
    a = draw(st.sampled_from(ALIASES))
    b = draw(st.sampled_from([x for x in ALIASES if x != a]))
    n = draw(st.integers(0, 130))
    other = draw(st.sampled_from(CUSTOMERS))
    status = draw(st.sampled_from(["open", "paid"]))
    plain = draw(st.sampled_from(["", " AS orders"])) if a == "orders" else f" AS {a}"
    shapes = [
        f"SELECT {a}.id AS oid FROM orders{plain}",
        f"SELECT {a}.id AS oid FROM orders AS {a} JOIN users AS u ON u.id = {a}.user_id",
        f"SELECT {a}.id AS oid FROM users AS u LEFT JOIN orders AS {a} ON {a}.user_id = u.id",
        f"SELECT {a}.id AS oid FROM orders AS {a} WHERE {a}.customer_id = {other}",
        f"SELECT {a}.id AS oid FROM orders AS {a} WHERE {a}.customer_id <> {other}",
        f"SELECT {b}.id AS oid FROM orders AS {a} JOIN orders AS {b} ON {a}.user_id = {b}.user_id",
        f"SELECT {b}.id AS oid FROM users AS u CROSS JOIN orders AS {b}",
        f"SELECT id AS oid FROM orders WHERE id IN (SELECT {a}.id FROM orders AS {a} "
        f"WHERE {a}.total > {n})",
        f"SELECT (SELECT max({a}.id) FROM orders AS {a} WHERE {a}.user_id = u.id) AS oid "
        "FROM users AS u",
        f"WITH c AS (SELECT id, customer_id FROM orders WHERE status = '{status}') "
        "SELECT c.id AS oid FROM c",
        f"SELECT {a}.id AS oid FROM orders AS {a}, users AS u WHERE u.id = {a}.user_id",
        f"SELECT {a}.id AS oid FROM orders AS {a} WHERE EXISTS "
        f"(SELECT 1 FROM orders AS {b} WHERE {b}.id = {a}.id + 1)",
        f"SELECT id AS oid FROM orders WHERE customer_id = {other} OR id > {n}",
        f"SELECT id AS oid FROM orders WHERE customer_id IN ({other}, {owner(n)}) AND total >= {n}",
        f"SELECT {a}.id AS oid FROM orders AS {a} ORDER BY {a}.total DESC",
    ]
    query = draw(st.sampled_from(shapes))
    if depth >= 2:
        return query
    how = draw(st.sampled_from(["none", "derived", "union", "union_all", "cte", "in"]))
    if how == "none":
        return query
    if how == "derived":
        return f"SELECT w.oid FROM ({query}) AS w"
    if how == "cte":
        return f"WITH w AS ({query}) SELECT w.oid FROM w"
    inner = draw(order_queries(depth + 1))
    if inner.startswith("WITH") or "ORDER BY" in inner:
        inner = f"SELECT v.oid FROM ({inner}) AS v"  # a set operation's branch is a plain SELECT
    if how == "in":
        return f"SELECT w.oid FROM ({query}) AS w WHERE w.oid IN (SELECT v.oid FROM ({inner}) AS v)"
    if "ORDER BY" in query:
        query = f"SELECT w.oid FROM ({query}) AS w"
    return f"{query} {'UNION' if how == 'union' else 'UNION ALL'} {inner}"


def _ids(rows: list[dict[str, Any]]) -> set[int]:
    return {int(r["oid"]) for r in rows if r["oid"] is not None}


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(query=order_queries(), caller=st.sampled_from(CUSTOMERS))
async def test_every_row_a_customer_reads_is_its_own_on_sqlite_and_postgres(
    pg: Any, lite: aiosqlite.Connection, query: str, caller: int
) -> None:
    for conn in (pg, lite):
        policy = LITE if conn is lite else POLICY
        rows = await execute_validated(conn, query, policy, ["customer"], params={"caller": caller})
        foreign = _ids(rows) - own(caller)
        assert not foreign, f"{query} returned other customers' orders {sorted(foreign)}"


# Filters an attacker would reach for to widen the rows: each query is refused or stays narrow.
HOSTILE = (
    "customer_id IN (1, 2, 3, 4)",
    "customer_id <> {caller}",
    "customer_id IS NOT NULL",
    "NOT customer_id = {caller}",
    "customer_id = {other} OR customer_id = {caller}",
    "customer_id = {other} OR 1 = 1",
    "customer_id = {other} OR customer_id <> {other}",
    "id > 0 OR customer_id IS NULL",
    "customer_id + 0 = {other}",
    "EXISTS (SELECT 1 FROM orders AS z WHERE z.customer_id = {other})",
    "id IN (SELECT z.id FROM orders AS z WHERE z.customer_id = {other})",
    "customer_id = (SELECT max(z.customer_id) FROM orders AS z)",
)


@st.composite
def hostile_queries(draw: st.DrawFn) -> str:
    other = draw(st.sampled_from(CUSTOMERS))
    where = draw(st.sampled_from(HOSTILE)).replace("{other}", str(other))
    base = draw(
        st.sampled_from(
            [
                "SELECT id AS oid FROM orders WHERE {w}",
                "SELECT o.id AS oid FROM orders AS o WHERE o.{w}",
                "SELECT w.oid FROM (SELECT id AS oid FROM orders WHERE {w}) AS w",
                "WITH c AS (SELECT id FROM orders WHERE {w}) SELECT c.id AS oid FROM c",
                "SELECT id AS oid FROM orders UNION SELECT id FROM orders WHERE {w}",
                "SELECT u.id * 0 + o.id AS oid FROM users AS u LEFT JOIN orders AS o "
                "ON o.user_id = u.id AND o.{w}",
            ]
        )
    )
    return base.replace("{w}", where)


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(query=hostile_queries(), caller=st.sampled_from(CUSTOMERS))
async def test_filters_written_to_widen_the_rows_are_refused_or_stay_within_the_caller(
    pg: Any, lite: aiosqlite.Connection, query: str, caller: int
) -> None:
    query = query.replace("{caller}", str(caller))
    for conn in (pg, lite):
        policy = LITE if conn is lite else POLICY
        try:
            rows = await execute_validated(
                conn, query, policy, ["customer"], params={"caller": caller}
            )
        except SqlRejected:
            continue
        foreign = _ids(rows) - own(caller)
        assert not foreign, f"{query} returned other customers' orders {sorted(foreign)}"


async def test_the_same_queries_without_the_rule_do_return_other_customers_rows(
    pg: Any, lite: aiosqlite.Connection
) -> None:
    query = "SELECT o.id AS oid FROM orders AS o WHERE o.customer_id = 2"
    for conn in (pg, lite):
        opened = await execute_validated(conn, query, OPEN, ["customer"], dialect=None)
        assert _ids(opened) == own(2)
        policy = LITE if conn is lite else POLICY
        ruled = await execute_validated(conn, query, policy, ["customer"], params={"caller": 1})
        assert ruled == []


@pytest.mark.parametrize("caller", CUSTOMERS)
async def test_a_customer_sees_all_of_its_own_rows_and_aggregates_only_over_them(
    pg: Any, lite: aiosqlite.Connection, caller: int
) -> None:
    for conn in (pg, lite):
        policy = LITE if conn is lite else POLICY
        rows = await execute_validated(
            conn, "SELECT id AS oid FROM orders", policy, ["customer"], params={"caller": caller}
        )
        assert _ids(rows) == own(caller)
        (agg,) = await execute_validated(
            conn,
            "SELECT count(*) AS n, sum(total) AS s FROM orders",
            policy,
            ["customer"],
            params={"caller": caller},
        )
        assert (agg["n"], agg["s"]) == (len(own(caller)), sum(3 * i for i in own(caller)))


async def test_the_callers_value_is_bound_never_written_into_the_sql(
    pg: Any, lite: aiosqlite.Connection
) -> None:
    hostile = "1 OR 1=1"
    verdict = validate_sql("SELECT id FROM orders", POLICY, ["customer"])
    assert verdict.params == ("caller",) and "$1" in (verdict.sql or "")
    for conn in (pg, lite):
        policy = LITE if conn is lite else POLICY
        if conn is lite:
            rows = await execute_validated(
                conn,
                "SELECT id AS oid FROM orders",
                policy,
                ["customer"],
                params={"caller": hostile},
            )
            assert rows == []  # compared as a value: no customer has that id
        else:
            with pytest.raises(asyncpg.DataError):  # a text where an int goes: refused as data
                await execute_validated(
                    conn, "SELECT id FROM orders", policy, ["customer"], params={"caller": hostile}
                )


async def test_the_querys_own_parameters_keep_their_values_beside_the_rules(
    pg: Any, lite: aiosqlite.Connection
) -> None:
    pg_rows = await execute_validated(
        pg,
        "SELECT id AS oid FROM orders WHERE total > $1 AND status = $2",
        POLICY,
        ["customer"],
        args=(30, "open"),
        params={"caller": 3},
    )
    lite_rows = await execute_validated(
        lite,
        "SELECT id AS oid FROM orders WHERE total > ? AND status = ?",
        LITE,
        ["customer"],
        args=(30, "open"),
        params={"caller": 3},
    )
    expected = {i for i in own(3) if i * 3 > 30 and i % 3}
    assert _ids(pg_rows) == _ids(lite_rows) == expected


async def test_missing_values_and_wrong_argument_counts_are_errors_not_open_reads(
    lite: aiosqlite.Connection,
) -> None:
    with pytest.raises(ValueError, match="caller"):
        await execute_validated(lite, "SELECT id FROM orders", LITE, ["customer"])
    with pytest.raises(ValueError, match="parameter"):
        await execute_validated(
            lite, "SELECT id FROM orders", LITE, ["customer"], args=(1,), params={"caller": 1}
        )


def test_every_reference_is_wrapped_whatever_its_shape() -> None:
    sql = validate_sql(
        "WITH c AS (SELECT id FROM orders) SELECT o.id FROM orders o JOIN c ON c.id = o.id "
        "WHERE o.id IN (SELECT id FROM public.orders) UNION SELECT id FROM orders",
        SqlPolicy(
            roles={"customer": {**GRANTS, "public.orders": "*"}}, row_rules={"customer": RULE}
        ),
        ["customer"],
    ).raise_for_rejection()
    assert sql.count("FROM orders AS bastion_rows WHERE bastion_rows.customer_id = $1") == 3
    assert sql.count("FROM public.orders AS bastion_rows WHERE") == 1
    assert "FROM orders AS o" not in sql and ") AS o JOIN" in sql


def test_rules_of_all_the_callers_roles_apply_together() -> None:
    policy = SqlPolicy(
        roles={"customer": GRANTS, "region": GRANTS, "admin": GRANTS},
        row_rules={
            "customer": RULE,
            "region": {"orders": "region = :region AND status <> 'deleted'"},
        },
    )
    verdict = validate_sql("SELECT id FROM orders", policy, ["admin", "customer", "region"])
    assert verdict.params == ("caller", "region")
    assert "customer_id = $1 AND (bastion_rows.region = $2 AND" in (verdict.sql or "")
    assert validate_sql("SELECT id FROM orders", policy, ["admin"]).params == ()


@pytest.mark.parametrize(
    ("sql", "fragment"),
    [
        ("WITH orders AS (SELECT 1 AS id) SELECT id FROM orders", "CTE"),
        ("WITH ORDERS AS (SELECT 1 AS id) SELECT id FROM users", "CTE"),
        ("SELECT id FROM orders WHERE id = :mine", "named parameters"),
    ],
)
def test_shapes_the_rule_cannot_cover_are_refused(sql: str, fragment: str) -> None:
    verdict = validate_sql(sql, POLICY, ["customer"])
    assert not verdict.ok and fragment in "; ".join(verdict.reasons)
    assert verdict.codes == ("row_rule",)
    with pytest.raises(SqlRejected) as info:
        verdict.raise_for_rejection()
    assert info.value.codes == ("row_rule",)


@pytest.mark.parametrize(
    ("predicate", "fragment"),
    [
        ("customer_id = 7", "binds no parameter"),
        ("customer_id = ?", "named"),
        ("customer_id IN (SELECT id FROM customers)", "subquery"),
        ("users.customer_id = :caller", "another table"),
        ("customer_id = = :caller", "does not parse"),
    ],
)
def test_a_bad_rule_is_refused_at_start_up_by_name(predicate: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_row_rule("orders", predicate, "postgres")
    with pytest.raises(ValueError):
        SqlPolicy(roles={"customer": GRANTS}, row_rules={"customer": {"orders": predicate}})


async def test_a_question_mark_inside_a_literal_is_data_not_a_parameter(
    lite: aiosqlite.Connection,
) -> None:
    query = "SELECT id AS oid FROM orders WHERE status <> '?' AND total > ?"
    verdict = validate_sql(query, LITE, ["customer"])
    assert verdict.sql is not None and "<> '?'" in verdict.sql and "total > ?1" in verdict.sql
    rows = await execute_validated(
        lite, query, LITE, ["customer"], args=(60,), params={"caller": 2}
    )
    assert _ids(rows) == {i for i in own(2) if i * 3 > 60}


def test_placeholders_that_do_not_add_up_refuse_rather_than_shift() -> None:
    assert _number_placeholders("SELECT ? FROM t", "m", 2, []) is None
    assert _number_placeholders("SELECT ?, 'a?' FROM t WHERE x = mr2x", "m", 1, ["c"]) == (
        "SELECT ?1, 'a?' FROM t WHERE x = ?2"
    )

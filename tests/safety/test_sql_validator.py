"""Model-written SQL: only one read-only SELECT over allowed tables and columns, always limited."""

from __future__ import annotations

import pytest

from bastion.safety.validation import SqlPolicy, SqlRejected, validate_sql
from bastion.safety.validation._sql_text import find_comment

POLICY = SqlPolicy(
    roles={
        "analyst": {"users": ["id", "name", "email"], "orders": "*", "public.products": "*"},
        "support": {"tickets": "*"},
        "admin": {"users": "*"},
    },
    max_rows=100,
)
ANALYST = ("analyst",)


def ok(sql: str, roles: tuple[str, ...] = ANALYST, policy: SqlPolicy = POLICY) -> str:
    verdict = validate_sql(sql, policy, roles)
    assert verdict.ok, verdict.reasons
    assert isinstance(verdict.sql, str)
    return verdict.sql


def refused(sql: str, roles: tuple[str, ...] = ANALYST, policy: SqlPolicy = POLICY) -> str:
    verdict = validate_sql(sql, policy, roles)
    assert not verdict.ok, f"accepted: {verdict.sql}"
    assert verdict.sql is None
    return "; ".join(verdict.reasons)


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO orders (id) VALUES (1)",
        "UPDATE orders SET total = 0",
        "DELETE FROM orders",
        "MERGE INTO orders o USING orders s ON o.id = s.id WHEN MATCHED THEN DELETE",
        "DROP TABLE orders",
        "CREATE TABLE x (a int)",
        "ALTER TABLE orders ADD COLUMN x int",
        "TRUNCATE orders",
        "GRANT SELECT ON orders TO public",
        "COPY orders TO '/tmp/x'",
        "CALL refresh_everything()",
        "SET statement_timeout = 0",
        "EXPLAIN ANALYZE DELETE FROM orders",
        "DO $$ BEGIN DELETE FROM orders; END $$",
        "SELECT id INTO orders_copy FROM orders",
        "SELECT * FROM orders FOR UPDATE",
        "SELECT * FROM orders FOR SHARE",
        "WITH gone AS (DELETE FROM orders RETURNING id) SELECT id FROM gone",
        "WITH moved AS (UPDATE orders SET total = 0 RETURNING id) SELECT id FROM moved",
        "WITH x AS (INSERT INTO orders (id) VALUES (1) RETURNING id) SELECT * FROM x",
    ],
)
def test_writes_and_locks_are_refused(sql: str) -> None:
    refused(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1; SELECT 2",
        "SELECT id FROM orders; DROP TABLE orders",
        "SELECT id FROM orders; DELETE FROM orders",
    ],
)
def test_stacked_queries_are_refused(sql: str) -> None:
    assert "exactly one statement" in refused(sql)


def test_a_single_trailing_semicolon_is_one_statement() -> None:
    assert ok("SELECT id FROM orders;") == "SELECT id FROM orders LIMIT 100"


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT id FROM orders -- WHERE tenant = 'a'",
        "SELECT id FROM orders /* hidden */",
        "SELECT id /* x */ FROM orders",
        "SELECT id FROM orders WHERE name = 'a' --'",
        "SELECT E'\\'' -- ' AS x FROM orders",
    ],
)
def test_comments_are_refused(sql: str) -> None:
    assert "comments are not allowed" in refused(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT '--' AS a, '/* no */' AS b FROM orders",
        'SELECT id AS "a--b" FROM orders',
        "SELECT $$ -- in a dollar string $$ AS x FROM orders",
        "SELECT $tag$ /* in a tagged string */ $tag$ AS x FROM orders",
        "SELECT 'it''s -- fine' AS x FROM orders",
    ],
)
def test_comment_markers_inside_literals_are_data(sql: str) -> None:
    ok(sql)


def test_comment_scanner_errs_on_the_safe_side_for_dollar_identifiers() -> None:
    assert find_comment("SELECT a$$$ -- $$") == "--"
    assert find_comment("SELECT $1 FROM t") is None


@pytest.mark.parametrize(
    ("sql", "fragment"),
    [
        ("SELECT * FROM secrets", "'secrets'"),
        ("SELECT id FROM pg_catalog.pg_authid", "pg_authid"),
        ("SELECT table_name FROM information_schema.tables", "information_schema.tables"),
        ("SELECT id FROM products", "'products'"),
        ("SELECT o.id FROM orders o JOIN secrets s ON s.id = o.id", "'secrets'"),
        ("SELECT id FROM orders WHERE id IN (SELECT id FROM secrets)", "'secrets'"),
        ("WITH s AS (SELECT * FROM secrets) SELECT * FROM s", "'secrets'"),
        ("SELECT (SELECT max(id) FROM secrets) FROM orders", "'secrets'"),
        ('SELECT name FROM "Users"', "'Users'"),
    ],
)
def test_forbidden_tables_are_refused_anywhere_in_the_query(sql: str, fragment: str) -> None:
    assert fragment in refused(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT ssn FROM users",
        "SELECT u.ssn FROM users u",
        "SELECT users.ssn FROM users",
        "SELECT name FROM users WHERE ssn = '123-45-6789'",
        "SELECT name FROM users ORDER BY ssn",
        "SELECT count(ssn) FROM users",
        "SELECT o.id FROM orders o JOIN users u ON u.ssn = o.ref",
        "SELECT id FROM orders WHERE ref IN (SELECT ssn FROM users)",
        "WITH u AS (SELECT ssn FROM users) SELECT * FROM u",
        "SELECT x FROM (SELECT ssn AS x FROM users) d",
        "SELECT id FROM orders o WHERE EXISTS (SELECT 1 FROM users u WHERE u.ssn = o.ref)",
        "SELECT name FROM users UNION SELECT ssn FROM users",
    ],
)
def test_forbidden_columns_are_refused_in_every_clause_and_subquery(sql: str) -> None:
    assert "ssn" in refused(sql)


@pytest.mark.parametrize(
    "sql",
    [
        # PostgreSQL binds an unknown inner name to the outer users.ssn.
        "SELECT (SELECT ssn FROM orders LIMIT 1) FROM users",
        "SELECT (SELECT x FROM (SELECT ssn AS x) d) FROM users",
        # Whole-row references expose every column.
        "SELECT row_to_json(u) FROM users u",
        "SELECT ssn(u) FROM users u",
        "SELECT (u).ssn FROM users u",
        "SELECT count(u.*) FROM users u",
        "SELECT u FROM orders o, users u",
        # Column aliases rename by position: u.email here is users' 2nd column, maybe ssn.
        "SELECT u.email FROM users AS u(a, email)",
        "SELECT * FROM users AS u(a, b, c, d)",
    ],
)
def test_outer_and_whole_row_references_cannot_reach_forbidden_columns(sql: str) -> None:
    refused(sql)


def test_select_star_on_a_restricted_table_is_expanded_to_allowed_columns() -> None:
    assert (
        ok("SELECT * FROM users") == "SELECT users.id, users.name, users.email FROM users LIMIT 100"
    )
    assert ok("SELECT u.* FROM users AS u") == (
        "SELECT u.id, u.name, u.email FROM users AS u LIMIT 100"
    )
    joined = ok("SELECT * FROM users u JOIN orders o ON o.user_id = u.id")
    assert joined.startswith("SELECT u.id, u.name, u.email, o.* FROM users AS u JOIN orders AS o")


def test_select_star_is_refused_when_policy_says_refuse() -> None:
    strict = SqlPolicy(roles=POLICY.roles, star="refuse")
    assert "SELECT *" in refused("SELECT * FROM users", policy=strict)
    assert "restricted" in refused("SELECT u.* FROM users u", policy=strict)
    assert ok("SELECT * FROM orders", policy=strict).startswith("SELECT * FROM orders")


def test_unrestricted_tables_keep_their_star() -> None:
    assert ok("SELECT * FROM orders") == "SELECT * FROM orders LIMIT 100"


def test_allowed_queries_with_joins_ctes_and_subqueries_pass() -> None:
    ok("SELECT u.name, o.total FROM users u JOIN orders o ON o.user_id = u.id WHERE o.total > 10")
    ok("WITH big AS (SELECT user_id FROM orders WHERE total > 100) SELECT name FROM users")
    ok("SELECT name FROM users WHERE id IN (SELECT o.user_id FROM orders o)")
    ok("SELECT * FROM public.products")
    ok("SELECT NAME FROM USERS")


def test_a_cte_shadowing_a_table_name_is_checked_as_the_cte() -> None:
    ok("WITH users AS (SELECT 1 AS ssn) SELECT ssn FROM users")


def test_output_aliases_in_order_and_group_by_are_pinned_to_positions() -> None:
    assert ok("SELECT name AS n FROM users ORDER BY n") == (
        "SELECT name AS n FROM users ORDER BY 1 LIMIT 100"
    )
    assert ok("SELECT lower(name) AS nm, count(*) FROM users GROUP BY nm").endswith(
        "GROUP BY 1 LIMIT 100"
    )


def test_roles_grant_the_union_of_their_tables_and_nothing_else() -> None:
    refused("SELECT id FROM tickets")
    ok("SELECT id FROM tickets", roles=("analyst", "support"))
    ok("SELECT ssn FROM users", roles=("admin",))
    assert "none of the caller's roles" in refused("SELECT 1", roles=("nobody",))


@pytest.mark.parametrize(
    ("sql", "name"),
    [
        ("SELECT pg_sleep(10)", "pg_sleep"),
        ("SELECT id FROM orders WHERE pg_sleep(1) IS NULL", "pg_sleep"),
        ("SELECT pg_read_file('/etc/passwd')", "pg_read_file"),
        ("SELECT lo_export(1234, '/tmp/x')", "lo_export"),
        ("SELECT * FROM dblink('host=x', 'select 1') AS t(a int)", "dblink"),
        ("SELECT query_to_xml('select * from secrets', true, true, '')", "query_to_xml"),
        ("SELECT current_setting('data_directory')", "current_setting"),
        ("SELECT set_config('x', 'y', false)", "set_config"),
        ("SELECT nextval('orders_id_seq')", "nextval"),
        ('SELECT "pg_sleep"(1)', "pg_sleep"),
        ("SELECT PG_SLEEP(1)", "pg_sleep"),
    ],
)
def test_denied_functions_are_refused(sql: str, name: str) -> None:
    assert name in refused(sql)


def test_schema_qualified_function_calls_are_refused() -> None:
    assert "schema-qualified" in refused("SELECT pg_catalog.lower(name) FROM users")


def test_function_allow_list_refuses_everything_else() -> None:
    strict = SqlPolicy(roles=POLICY.roles, allowed_functions=frozenset({"count", "lower"}))
    ok("SELECT lower(name), count(*) FROM users GROUP BY 1", policy=strict)
    assert "allow-list" in refused("SELECT upper(name) FROM users", policy=strict)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT id FROM orders", "SELECT id FROM orders LIMIT 100"),
        ("SELECT id FROM orders LIMIT 5", "SELECT id FROM orders LIMIT 5"),
        ("SELECT id FROM orders LIMIT 100000", "SELECT id FROM orders LIMIT 100"),
        ("SELECT id FROM orders LIMIT ALL", "SELECT id FROM orders LIMIT 100"),
        ("SELECT id FROM orders LIMIT 10 + 1000", "SELECT id FROM orders LIMIT 100"),
        ("SELECT id FROM orders LIMIT 5 OFFSET 10", "SELECT id FROM orders LIMIT 5 OFFSET 10"),
        ("SELECT id FROM orders LIMIT 500 OFFSET 10", "SELECT id FROM orders LIMIT 100 OFFSET 10"),
        (
            "SELECT id FROM orders FETCH FIRST 10 ROWS WITH TIES",
            "SELECT id FROM orders LIMIT 100",
        ),
        (
            "SELECT id FROM orders UNION SELECT user_id FROM orders",
            "SELECT id FROM orders UNION SELECT user_id FROM orders LIMIT 100",
        ),
        (
            "SELECT id FROM (SELECT id FROM orders LIMIT 100000) AS s",
            "SELECT id FROM (SELECT id FROM orders LIMIT 100000) AS s LIMIT 100",
        ),
    ],
)
def test_row_limit_is_injected_or_clamped(sql: str, expected: str) -> None:
    assert ok(sql) == expected


def test_sqlite_dialect_clamps_negative_limits() -> None:
    lite = SqlPolicy(roles=POLICY.roles, dialect="sqlite", max_rows=10)
    assert validate_sql("SELECT id FROM orders LIMIT -1", lite, ANALYST).sql == (
        "SELECT id FROM orders LIMIT 10"
    )


def test_garbage_and_oversized_input_are_refused_not_crashing() -> None:
    assert "cannot parse" in refused("SELEC id FROM")
    assert "empty" in refused("   ")
    assert "NUL" in refused("SELECT id FROM orders\x00")
    assert "longer than" in refused("SELECT " + "1+" * 20_000 + "1")
    assert refused("SELECT " + "(" * 5000 + "1" + ")" * 5000)


def test_rejection_raises_with_reasons_for_callers_that_want_errors() -> None:
    verdict = validate_sql("DELETE FROM orders", POLICY, ANALYST)
    with pytest.raises(SqlRejected) as info:
        verdict.raise_for_rejection()
    assert info.value.status == 422
    assert info.value.reasons == verdict.reasons

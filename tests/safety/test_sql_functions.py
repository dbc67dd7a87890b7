"""The SQL validator's function allow-list: what it refuses anywhere, what it never mistakes for a call."""

from __future__ import annotations

import pytest
import sqlglot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlglot import exp
from tests.safety.test_sql_catalogue import (
    PG_ADMINISTRATION,
    PG_CASTS,
    PG_JSON,
    PG_OTHER,
    PG_SYSTEM_INFORMATION,
    PG_XML,
    SQLITE_CALLS,
)

from bastion.safety.validation import (
    DENIED_FUNCTION_PREFIXES,
    DENIED_FUNCTIONS,
    SqlPolicy,
    default_functions,
    validate_sql,
)

ROLES = {"analyst": {"users": ["id", "name"], "orders": "*"}}
POLICY = SqlPolicy(roles=ROLES)
SQLITE = SqlPolicy(roles=ROLES, dialect="sqlite")
ANALYST = ("analyst",)


def ok(sql: str, policy: SqlPolicy = POLICY) -> str:
    verdict = validate_sql(sql, policy, ANALYST)
    assert verdict.ok, verdict.reasons
    assert verdict.sql is not None
    return verdict.sql


def refused(sql: str, policy: SqlPolicy = POLICY) -> str:
    verdict = validate_sql(sql, policy, ANALYST)
    assert not verdict.ok, f"accepted: {verdict.sql}"
    return "; ".join(verdict.reasons)


def test_the_issue_attack_is_refused_by_name() -> None:
    reasons = refused("SELECT table_to_xml_and_xmlschema('users', true, false, '')")
    assert "table_to_xml_and_xmlschema" in reasons
    assert "schema_to_xml_and_xmlschema" in refused(
        "SELECT schema_to_xml_and_xmlschema('public', true, false, '')"
    )
    assert "database_to_xml_and_xmlschema" in refused(
        "SELECT database_to_xml_and_xmlschema(true, false, '')"
    )


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT version()",
        "SELECT current_user",
        "SELECT current_user()",
        "SELECT session_user",
        "SELECT user FROM orders",
        "SELECT current_role",
        "SELECT current_catalog",
        "SELECT current_schema",
        "SELECT current_database()",
        "SELECT 'users'::regclass",
        "SELECT has_column_privilege('users', 'ssn', 'select')",
        "SELECT exec($s)",
    ],
)
def test_small_leaks_from_the_issue_are_refused(sql: str) -> None:
    refused(sql)


def test_typed_sqlglot_nodes_are_judged_by_what_they_print() -> None:
    # sqlglot parses these into typed classes whose own names differ from the SQL spelling
    tree = sqlglot.parse_one("SELECT current_user, version(), current_schema()", read="postgres")
    assert tree.find(exp.CurrentUser) is not None
    assert tree.find(exp.CurrentSchema) is not None
    reasons = refused("SELECT current_user, version(), current_schema()")
    assert "current_user" in reasons and "version" in reasons and "current_schema" in reasons
    # TimestampTrunc prints as DATE_TRUNC, GroupConcat as STRING_AGG: allowed by those names
    assert "DATE_TRUNC" in ok("SELECT date_trunc('month', total) FROM orders")
    assert "STRING_AGG" in ok("SELECT string_agg(status, ',') FROM orders")


def test_unknown_functions_are_refused_whatever_they_are_called() -> None:
    assert "allow-list" in refused("SELECT my_udf(id) FROM orders")
    assert "allow-list" in refused('SELECT "my_udf"(id) FROM orders')
    assert "allow-list" in refused("SELECT Version2(id) FROM orders")
    assert "version" in refused('SELECT "version"() FROM orders')


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT status || '-' || id FROM orders",
        "SELECT CASE WHEN total > 1 THEN 'a' ELSE 'b' END FROM orders",
        "SELECT CASE status WHEN 'open' THEN 1 END FROM orders",
        "SELECT id FROM orders WHERE id IN (1, 2, 3)",
        "SELECT id FROM orders WHERE id NOT IN (SELECT id FROM users)",
        "SELECT id FROM orders WHERE total BETWEEN 1 AND 2",
        "SELECT id FROM orders WHERE status LIKE 'a%' OR status ILIKE 'b%'",
        "SELECT id FROM orders WHERE status SIMILAR TO 'a%'",
        "SELECT id FROM orders WHERE status ~ 'a' AND status !~ 'b' AND status ~* 'c'",
        "SELECT total + 1, total - 1, total * 2, total / 2, total % 2, -total, 2 ^ 3 FROM orders",
        "SELECT id FROM orders WHERE status IS NULL OR status IS NOT DISTINCT FROM 'x'",
        "SELECT id FROM orders AS o WHERE EXISTS (SELECT 1 FROM users AS u WHERE u.id = o.id)",
        "SELECT id FROM orders WHERE NOT (total > 1 AND total < 5)",
        "SELECT id FROM orders WHERE total > ALL (SELECT id FROM users)",
        "SELECT id FROM orders WHERE total = ANY (SELECT id FROM users)",
        "SELECT ARRAY[1, 2], (1, 2) = (1, 2) FROM orders",
        "SELECT total::int, CAST(total AS text), CAST(status AS varchar(3)) FROM orders",
        "SELECT interval '1 day', DATE '2024-01-01' FROM orders",
        'SELECT status COLLATE "C" FROM orders',
    ],
)
def test_operators_and_syntax_are_not_mistaken_for_calls(sql: str) -> None:
    verdict = validate_sql(sql, POLICY, ANALYST)
    assert verdict.ok, verdict.reasons


def test_allowed_functions_replaces_the_default_and_extra_functions_extends_it() -> None:
    strict = SqlPolicy(roles=ROLES, allowed_functions=frozenset({"count"}))
    ok("SELECT count(*) FROM orders", strict)
    assert "lower" in refused("SELECT lower(status) FROM orders", strict)
    ok("SELECT CASE WHEN total > 1 THEN 1 END, total::int FROM orders", strict)

    more = SqlPolicy(roles=ROLES, extra_functions=frozenset({"MD5", "repeat"}))
    ok("SELECT md5(status), repeat(status, 2), lower(status) FROM orders", more)
    assert more.functions_for("postgres") == default_functions("postgres") | {"md5", "repeat"}
    assert "md5" in refused("SELECT md5(status) FROM orders")


def test_the_deny_floor_wins_over_an_extended_allow_list() -> None:
    generous = SqlPolicy(
        roles=ROLES,
        extra_functions=frozenset({"pg_sleep", "table_to_xml_and_xmlschema", "version"}),
    )
    assert "pg_sleep" in refused("SELECT pg_sleep(1)", generous)
    assert "table_to_xml_and_xmlschema" in refused(
        "SELECT table_to_xml_and_xmlschema('users', true, false, '')", generous
    )
    assert "version" in refused("SELECT version()", generous)
    lifted = SqlPolicy(
        roles=ROLES,
        extra_functions=frozenset({"pg_sleep"}),
        denied_prefixes=tuple(p for p in DENIED_FUNCTION_PREFIXES if p != "pg_"),
    )
    ok("SELECT pg_sleep(1)", lifted)


def test_defaults_are_per_dialect_with_a_conservative_fallback() -> None:
    assert "date_trunc" in default_functions("postgres")
    assert "strftime" in default_functions("sqlite")
    assert "strftime" not in default_functions("postgres")
    fallback = default_functions("snowflake")
    assert {"count", "sum", "coalesce", "lower"} <= fallback
    assert not fallback & DENIED_FUNCTIONS
    for dialect in ("postgres", "sqlite", "mysql", "snowflake", "duckdb"):
        allowed = default_functions(dialect)
        assert not allowed & DENIED_FUNCTIONS
        assert not any(n.startswith(DENIED_FUNCTION_PREFIXES) for n in allowed)
    # the dialect of the call decides, not only the policy's
    assert validate_sql("SELECT strftime('%Y', 'now') FROM orders", POLICY, ANALYST).ok is False
    assert validate_sql(
        "SELECT strftime('%Y', 'now') FROM orders", POLICY, ANALYST, dialect="sqlite"
    ).ok


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM generate_series(1, 10)",
        "SELECT g FROM orders, generate_series(1, 10) AS g",
        "SELECT g FROM orders CROSS JOIN LATERAL generate_series(1, 10) AS g",
        "SELECT * FROM unnest(ARRAY[1, 2])",
        "SELECT * FROM ROWS FROM (generate_series(1, 2)) AS r",
        "SELECT * FROM orders JOIN unnest(ARRAY[1]) AS u ON true",
    ],
)
def test_table_valued_functions_are_refused_even_when_allow_listed(sql: str) -> None:
    generous = SqlPolicy(roles=ROLES, extra_functions=frozenset({"generate_series", "unnest"}))
    assert "table-valued" in refused(sql, generous)


def test_custom_operators_and_schema_qualified_calls_are_refused() -> None:
    assert "operator" in refused("SELECT total OPERATOR(pg_catalog.+) 1 FROM orders")
    assert "schema-qualified" in refused("SELECT pg_catalog.lower(status) FROM orders")


def test_bare_keyword_calls_only_count_unquoted_and_not_in_sqlite() -> None:
    ok('SELECT "user" FROM orders')  # a quoted name is a column
    ok("SELECT user FROM orders", SQLITE)  # SQLite has no such keyword
    refused("SELECT user FROM orders")


# --- property: no catalogue function survives any query shape --------------------------------

_PG_NAMES = tuple(
    c for c in PG_SYSTEM_INFORMATION + PG_ADMINISTRATION + PG_XML + PG_JSON + PG_OTHER
)
_SHAPES = (
    "{x}",
    "(SELECT {x})",
    "(SELECT {x} FROM orders LIMIT 1)",
    "CASE WHEN id > 1 THEN {x} ELSE NULL END",
    "CASE WHEN {x} IS NULL THEN 1 END",
    "coalesce({x}, NULL)",
    "CAST({x} AS text)",
    "({x})::text",
    "lower(CAST({x} AS text))",
    "count({x})",
    "max({x}) OVER (PARTITION BY status)",
    "NOT ({x} IS NULL)",
    "({x}) || 'x'",
    "ARRAY[{x}]",
)
_QUERIES = (
    "SELECT {e} FROM orders",
    "SELECT id FROM orders WHERE {e} IS NOT NULL",
    "SELECT id FROM orders ORDER BY {e}",
    "SELECT status FROM orders GROUP BY status HAVING count({e}) > 0",
    "WITH c AS (SELECT {e} AS v FROM orders) SELECT v FROM c",
    "SELECT v FROM (SELECT {e} AS v FROM orders) AS d",
    "SELECT o.id, x.v FROM orders o CROSS JOIN LATERAL (SELECT {e} AS v) AS x",
    "SELECT id FROM orders WHERE id IN (SELECT {e} FROM users)",
    "SELECT id FROM orders UNION SELECT {e} FROM orders",
    "SELECT id FROM orders WHERE EXISTS (SELECT {e})",
)


def _case(name: str, draw_upper: list[bool]) -> str:
    return "".join(
        ch.upper() if up else ch
        for ch, up in zip(name, draw_upper + [False] * len(name), strict=False)
    )


@st.composite
def _hostile_queries(draw: st.DrawFn, calls: tuple[str, ...], sqlite: bool = False) -> str:
    call = draw(st.sampled_from(calls))
    head, sep, rest = call.partition("(")
    flips = draw(st.lists(st.booleans(), max_size=len(head)))
    head = _case(head, flips)
    if sep and draw(st.booleans()) and "::" not in head:
        head = f'"{head.lower()}"'  # a quoted name is the same function in PostgreSQL
    expr = head + sep + rest
    # in SQLite ARRAY[x] is the column "array" aliased by a bracket-quoted name: no call at all
    shapes = [s for s in _SHAPES if not (sqlite and s.startswith("ARRAY"))]
    for shape in draw(st.lists(st.sampled_from(shapes), min_size=1, max_size=4)):
        expr = shape.format(x=expr)
    return draw(st.sampled_from(_QUERIES)).format(e=expr)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_hostile_queries(_PG_NAMES + PG_CASTS))
def test_postgres_catalogue_calls_are_never_accepted_in_any_shape(sql: str) -> None:
    verdict = validate_sql(sql, POLICY, ANALYST)
    assert not verdict.ok, verdict.sql


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_hostile_queries(SQLITE_CALLS, sqlite=True))
def test_sqlite_catalogue_calls_are_never_accepted_in_any_shape(sql: str) -> None:
    verdict = validate_sql(sql, SQLITE, ANALYST)
    assert not verdict.ok, verdict.sql

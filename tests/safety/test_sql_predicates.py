"""Always-true and constant filters are refused in WHERE, ON and HAVING; real filters never are."""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.safety.validation import SqlCode, SqlPolicy, validate_sql

ROLES = {"analyst": {"orders": "*", "users": ["id", "name", "email"]}}
POLICIES = {
    "postgres": SqlPolicy(roles=ROLES),
    "sqlite": SqlPolicy(roles=ROLES, dialect="sqlite"),
}
ANALYST = ("analyst",)
FILTER_CODES = {SqlCode.TAUTOLOGY.value, SqlCode.CONSTANT_CONDITION.value}


def codes(sql: str, dialect: str = "postgres") -> tuple[str, ...]:
    verdict = validate_sql(sql, POLICIES[dialect], ANALYST)
    assert not verdict.ok, f"accepted: {verdict.sql}"
    return verdict.codes


def accepted(sql: str, dialect: str = "postgres") -> str:
    verdict = validate_sql(sql, POLICIES[dialect], ANALYST)
    assert verdict.ok, verdict.reasons
    assert verdict.sql is not None
    return verdict.sql


# The and the brief's shapes, each in WHERE, ON and HAVING.
TAUTOLOGIES = (
    "'1' = '1'",
    "1 = 1",
    "1",
    "TRUE",
    "'a' LIKE '%'",
    "o.total = o.total",
    "NOT 0",
    "2 > 1",
    "o.status = 'x' OR 1",
    "o.status IS NOT NULL OR TRUE",
    "o.status IS NULL OR o.status IS NOT NULL",
    "o.total > 5 OR o.total <= 5",
    "o.status = 'a' OR NOT o.status = 'a'",
    "NOT (o.total = 1 AND 1 = 0)",
    "o.total = 1 OR (1 = 1) IS TRUE",
    "o.total = 1 OR 'ab' = 'a' || 'b'",
    "o.total = 1 OR 3 BETWEEN 1 AND 5",
    "o.total = 1 OR 1 IN (2, 1)",
    "o.total = 1 OR (SELECT 1) = 1",
    "o.total = 1 OR '1' = 1",
    "o.total = 1 OR 'A' = 'a'",
    "o.total = 1 OR o.status LIKE '%'",
    "o.total = 1 OR CAST(1 AS boolean)",
    "o.total = 1 OR coalesce(NULL, 1) = 1",
    "o.total = 1 OR lower('X') = 'x'",
)
POSITIONS = (
    "SELECT o.id FROM orders AS o WHERE {p}",
    "SELECT o.id FROM orders AS o JOIN users AS u ON u.id = o.user_id AND ({p})",
    "SELECT o.status, count(*) FROM orders AS o GROUP BY o.status HAVING {p}",
    "SELECT u.id FROM users AS u WHERE u.id IN (SELECT o.user_id FROM orders AS o WHERE {p})",
    "WITH c AS (SELECT o.id FROM orders AS o WHERE o.total > 3 AND ({p})) SELECT id FROM c",
)


@pytest.mark.parametrize("dialect", ["postgres", "sqlite"])
@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("predicate", TAUTOLOGIES)
def test_always_true_conditions_are_refused_in_every_position(
    predicate: str, position: str, dialect: str
) -> None:
    assert "tautology" in codes(position.format(p=predicate), dialect)


@pytest.mark.parametrize(
    "predicate",
    [
        "1 = 2",
        "o.total > 1 AND 1 = 2",
        "o.total > 1 AND length('x') = 1",
        "NULL",
        "FALSE",
        "o.total > 1 OR current_date > '2000-01-01'",
        "o.total > 1 OR EXISTS (SELECT 1 FROM users)",
        "o.total > 1 OR (SELECT count(*) FROM users AS u WHERE u.id > 0) > 0",
    ],
)
def test_conditions_that_read_no_row_are_refused_as_probes(predicate: str) -> None:
    found = codes(f"SELECT o.id FROM orders AS o WHERE {predicate}")
    assert found == ("constant_condition",)


def test_a_constant_join_condition_is_refused_with_the_cross_join_spelling() -> None:
    verdict = validate_sql(
        "SELECT o.id FROM orders AS o JOIN users AS u ON 1 = 1", POLICIES["postgres"], ANALYST
    )
    assert verdict.codes == ("tautology",) and "CROSS JOIN" in verdict.reasons[0]
    accepted("SELECT o.id FROM orders AS o CROSS JOIN users AS u")


def test_the_refusal_names_the_always_true_part() -> None:
    verdict = validate_sql(
        "SELECT id FROM users WHERE email = '1' OR '1' = '1'", POLICIES["postgres"], ANALYST
    )
    assert verdict.codes == ("tautology",)
    assert verdict.reasons == (
        "condition \"'1' = '1'\" does not depend on the row (it is always true)",
    )


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT o.id FROM orders AS o LEFT JOIN LATERAL "
        "(SELECT count(*) AS n FROM users AS u WHERE u.id = o.user_id) AS x ON TRUE",
        "SELECT id FROM orders WHERE created_at > current_date - 7",
        "SELECT id FROM orders WHERE created_at < now()",
        "SELECT status FROM orders GROUP BY status HAVING count(*) > 1",
        "SELECT id FROM orders WHERE status IS NULL OR total IS NOT NULL",
        "SELECT id FROM orders WHERE total > 5 OR total < 5",
        "SELECT id FROM orders WHERE user_id = id",
        "SELECT id FROM orders WHERE status LIKE 'o%' OR status LIKE '%x'",
        "SELECT id FROM orders WHERE NOT (status = 'a' OR total = 1)",
        "SELECT id FROM orders WHERE total = (SELECT max(total) FROM orders)",
        "SELECT id FROM orders WHERE total BETWEEN 1 AND 10 AND status IN ('a', 'b')",
        "SELECT id FROM orders WHERE total = $1",
        "SELECT CASE WHEN 1 = 1 THEN 'a' END FROM orders",
        "SELECT id FROM orders AS o WHERE EXISTS (SELECT 1 FROM users AS u WHERE u.id = o.user_id)",
        "SELECT o.id FROM orders AS o WHERE EXISTS (SELECT 1 FROM users WHERE name = o.status)",
        "SELECT id FROM orders WHERE total > (SELECT avg(total) FROM orders)",
    ],
)
def test_real_filters_and_constant_projections_pass(sql: str) -> None:
    accepted(sql)


# --- property: a generated tautology is refused wherever it is put ---------------------------

_WORDS = st.text(alphabet="abcxyz", min_size=1, max_size=4)
_COLUMNS = ("o.total", "o.status")


@st.composite
def tautologies(draw: st.DrawFn) -> str:
    a = draw(st.integers(-50, 50))
    b = draw(st.integers(a + 1, a + 60))
    s = draw(_WORDS)
    col = draw(st.sampled_from(_COLUMNS))
    atom = draw(
        st.sampled_from(
            [
                f"{a} < {b}",
                f"{b} > {a}",
                f"{a} = {a}",
                f"{a} <> {b}",
                f"{a} <= {a}",
                f"'{s}' = '{s}'",
                f"'{s}' LIKE '%'",
                f"'{s}' LIKE '{s[0]}%'",
                f"NOT {a} = {b}",
                f"{a} IN ({b}, {a})",
                f"{a} BETWEEN {a - 1} AND {b}",
                f"{a} + {b} = {a + b}",
                f"{b - a}",
                "TRUE",
                "NOT 0",
                "NULL IS NULL",
                f"{a} IS NOT NULL",
                f"'{s}' || 'q' = '{s}q'",
                f"(SELECT {a}) = {a}",
                f"{col} = {col}",
                f"{col} IS NULL OR {col} IS NOT NULL",
                f"o.total > {a} OR o.total <= {a}",
                f"o.status = '{s}' OR NOT o.status = '{s}'",
                f"{col} LIKE '%'",
            ]
        )
    )
    for _ in range(draw(st.integers(0, 2))):
        atom = draw(st.sampled_from([f"({atom})", f"NOT NOT ({atom})", f"NOT (NOT ({atom}))"]))
    return atom


def _always_true_on_sample(predicate: str) -> bool:
    """Checks the generator itself: SQLite finds the predicate true for every row of a sample."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE o (id int, total int, status text)")
    db.executemany(
        "INSERT INTO o VALUES (?, ?, ?)",
        [(i, t, s) for i, (t, s) in enumerate([(-60, "a"), (0, "xyz"), (7, "b"), (120, "cab")])],
    )
    (n,) = db.execute(f"SELECT count(*) FROM o WHERE {predicate}").fetchone()
    db.close()
    return bool(n == 4)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tautology=tautologies(),
    position=st.sampled_from(POSITIONS),
    join=st.sampled_from(
        [
            "{t}",
            "o.status = 'open' OR {t}",
            "{t} OR o.total < 3",
            "o.total > 1 AND ({t})",
            "({t}) AND o.total > 1",
        ]
    ),
    dialect=st.sampled_from(["postgres", "sqlite"]),
)
def test_a_tautology_is_refused_wherever_it_stands(
    tautology: str, position: str, join: str, dialect: str
) -> None:
    assert _always_true_on_sample(tautology), tautology
    sql = position.format(p=join.format(t=tautology))
    assert set(codes(sql, dialect)) <= FILTER_CODES


# --- property: filters over columns are never mistaken for tautologies ----------------------


@st.composite
def column_filters(draw: st.DrawFn, depth: int = 0) -> str:
    if depth >= 3 or draw(st.booleans()):
        n = draw(st.integers(-5, 200))
        word = draw(_WORDS)
        return draw(
            st.sampled_from(
                [
                    f"o.total = {n}",
                    f"o.total > {n}",
                    f"o.total < {n}",
                    f"o.status = '{word}'",
                    f"o.status LIKE '{word}%'",
                    f"o.total IN ({n}, {n + 1})",
                    f"o.total BETWEEN {n} AND {n + 10}",
                    "o.status IS NULL",
                    f"o.user_id = {n}",
                ]
            )
        )
    left = draw(column_filters(depth + 1))
    right = draw(column_filters(depth + 1))
    return draw(st.sampled_from([f"({left} AND {right})", f"({left} OR {right})"]))


@settings(max_examples=300, deadline=None)
@given(predicate=column_filters(), dialect=st.sampled_from(["postgres", "sqlite"]))
def test_filters_that_read_the_row_are_accepted(predicate: str, dialect: str) -> None:
    accepted(f"SELECT o.id FROM orders AS o WHERE {predicate}", dialect)


def test_long_chains_are_checked_whole_and_absurd_nesting_is_refused_not_raised() -> None:
    chain = " OR ".join(f"o.id = {i}" for i in range(1400))
    accepted(f"SELECT o.id FROM orders AS o WHERE {chain}")
    assert codes(f"SELECT o.id FROM orders AS o WHERE {chain} OR NOT o.id = 7") == ("tautology",)
    assert codes(f"SELECT o.id FROM orders AS o WHERE {chain} OR 1 = 1") == ("tautology",)
    deep = "+".join(["1"] * 5000)
    assert codes(f"SELECT o.id FROM orders AS o WHERE o.id = {deep}") == ("uncheckable",)

"""Row-level rules: a role sees only the rows of a table that a configured predicate admits.

A rule such as ``orders: "customer_id = :caller"`` for role ``customer`` is enforced by
replacing every reference to ``orders`` in the checked query, wherever it is (FROM, joins,
subqueries, CTE bodies, UNION branches, aliased or schema-qualified), by a derived table that
reads only the admitted rows::

    FROM orders AS o  ->  FROM (SELECT * FROM orders AS bastion_rows
                                WHERE bastion_rows.customer_id = $2) AS o

Wrapping each reference, instead of adding to the query's WHERE clauses, keeps the rule out of
the query's own logic: an OUTER JOIN, an OR or a correlated subquery cannot route around a
filter that is applied before the query sees the table. Values are never written into the SQL:
each ``:name`` becomes a positional parameter numbered after the query's own, bound by the
executor. After the rewrite every remaining reference to a ruled table name is checked to sit
inside a wrapper, so a shape this module missed is refused rather than let through.

A rule applies to every table of that name in any schema (``public.orders`` and ``orders``
alike), and every rule of every role the caller holds applies: rules only ever narrow.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.optimizer.normalize_identifiers import normalize_identifiers

from ._sql_reasons import Refusal, SqlCode

__all__ = ["Rewritten", "RowRule", "apply_row_rules", "parse_row_rule"]

_INNER = "bastion_rows"


@dataclass(frozen=True, slots=True)
class RowRule:
    """One table's required predicate; ``params`` are the ``:names`` it binds."""

    table: str
    predicate: str
    params: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Rewritten:
    """The query with rules applied: SQL to run, and the parameter names after the query's own."""

    sql: str
    params: tuple[str, ...]
    user_params: int


def parse_row_rule(table: str, predicate: str, dialect: str) -> RowRule:
    """Check an operator's rule once, at start-up; ValueError names what is wrong with it."""
    name = table.split(".")[-1]
    if not name.strip():
        raise ValueError(f"row rule table name {table!r} is empty")
    try:
        tree = sqlglot.parse_one(predicate, read=dialect)
    except Exception as exc:
        raise ValueError(f"row rule for {table!r} does not parse: {exc}") from exc
    params: list[str] = []
    for node in tree.walk():
        if isinstance(node, exp.Query | exp.Subquery | exp.Exists):
            raise ValueError(f"row rule for {table!r} may not contain a subquery")
        if isinstance(node, exp.Placeholder):
            if _anonymous(node):
                raise ValueError(f"row rule for {table!r}: parameters are named, like :caller")
            params.append(node.name)
        elif isinstance(node, exp.Parameter):
            raise ValueError(f"row rule for {table!r}: parameters are named, like :caller")
        elif isinstance(node, exp.Column) and node.table and node.table.lower() != name.lower():
            raise ValueError(f"row rule for {table!r} names another table's column {node.sql()!r}")
    if not params:
        raise ValueError(f"row rule for {table!r} binds no parameter (:caller): it would be fixed")
    return RowRule(name, predicate, tuple(dict.fromkeys(params)))


def apply_row_rules(
    tree: exp.Expr, rules: Mapping[str, Iterable[RowRule]], dialect: str
) -> Rewritten | list[Refusal]:
    """Wrap every reference to a ruled table in ``tree`` (mutated), or say why it cannot be."""
    folded = {_fold(t, dialect): list(r) for t, r in rules.items() if r}
    shadow = [
        cte.alias_or_name
        for cte in tree.find_all(exp.CTE)
        if cte.alias_or_name.lower() in {k.lower() for k in folded}
    ]
    if shadow:
        return [
            Refusal(
                SqlCode.ROW_RULE,
                f"a CTE may not be named like the row-restricted table {shadow[0]!r}",
            )
        ]
    user_params = _user_params(tree, dialect)
    if user_params is None:
        return [
            Refusal(
                SqlCode.ROW_RULE,
                "named parameters cannot be combined with row rules: use positional ones",
            )
        ]
    names: list[str] = []
    slots: dict[str, exp.Expr] = {}
    mark = secrets.token_hex(8)
    wrapped: set[int] = set()
    for table in [t for t in tree.find_all(exp.Table) if t.name in folded]:
        inner = _wrap(table, folded[table.name], dialect, names, slots, mark, user_params)
        wrapped.add(id(inner))
    for table in tree.find_all(exp.Table):
        if table.name in folded and id(table) not in wrapped:
            return [
                Refusal(
                    SqlCode.ROW_RULE,
                    f"reference {table.sql(dialect=dialect)!r} to a row-restricted table "
                    "cannot be filtered",
                )
            ]
    sql = tree.sql(dialect=dialect, normalize_functions=False, comments=False)
    if dialect != "postgres":
        numbered = _number_placeholders(sql, mark, user_params, names)
        if numbered is None:
            return [Refusal(SqlCode.ROW_RULE, "the query's parameters cannot be numbered safely")]
        sql = numbered
    return Rewritten(sql, tuple(names), user_params)


def _fold(name: str, dialect: str) -> str:
    return Dialect.get_or_raise(dialect).normalize_identifier(exp.to_identifier(name)).name


def _user_params(tree: exp.Expr, dialect: str) -> int | None:
    """How many positional parameters the query itself binds (None: it uses named ones)."""
    anonymous = 0
    highest = 0
    for node in tree.find_all(exp.Placeholder, exp.Parameter):
        if isinstance(node, exp.Placeholder) and _anonymous(node) and dialect != "postgres":
            anonymous += 1
        elif isinstance(node, exp.Parameter) and dialect == "postgres" and node.this.is_int:
            highest = max(highest, int(node.this.name))
        else:
            return None
    return anonymous if dialect != "postgres" else highest


def _anonymous(node: exp.Placeholder) -> bool:
    """A bare ``?`` (sqlglot names it ``?`` or leaves it unnamed)."""
    return node.args.get("this") in (None, "", "?")


def _wrap(
    table: exp.Table,
    rules: list[RowRule],
    dialect: str,
    names: list[str],
    slots: dict[str, exp.Expr],
    mark: str,
    first: int,
) -> exp.Table:
    """Replace ``table`` by ``(SELECT * FROM table WHERE rules) AS alias``; the inner table."""
    alias = table.args.get("alias")
    outer_name = table.alias_or_name
    inner = table.copy()
    inner.set("alias", exp.TableAlias(this=exp.to_identifier(_INNER)))
    condition: exp.Expr | None = None
    for rule in dict.fromkeys(rules):
        predicate = normalize_identifiers(sqlglot.parse_one(rule.predicate, read=dialect), dialect)
        for column in list(predicate.find_all(exp.Column)):
            column.set("table", exp.to_identifier(_INNER))
            column.set("db", None)
            column.set("catalog", None)
        for placeholder in list(predicate.find_all(exp.Placeholder)):
            placeholder.replace(_slot(placeholder.name, dialect, names, slots, mark, first))
        condition = predicate if condition is None else exp.and_(condition, predicate)
    select = exp.select("*").from_(inner, copy=False).where(condition, copy=False)
    new_alias = alias.copy() if isinstance(alias, exp.TableAlias) else None
    if new_alias is None:
        new_alias = exp.TableAlias(this=exp.to_identifier(outer_name))
    table.replace(exp.Subquery(this=select, alias=new_alias))
    if table.args.get("db"):
        _unqualify_columns(select.root(), table)
    return inner


def _slot(
    name: str, dialect: str, names: list[str], slots: dict[str, exp.Expr], mark: str, first: int
) -> exp.Expr:
    """The positional parameter for ``:name``, the same one each time the name recurs."""
    if name not in slots:
        names.append(name)
        position = first + len(names)
        if dialect == "postgres":
            slots[name] = exp.Parameter(this=exp.Literal.number(position))
        else:
            slots[name] = exp.var(f"{mark}r{position}x")
    return slots[name].copy()


def _number_placeholders(sql: str, mark: str, user: int, names: list[str]) -> str | None:
    """Give every ``?`` its number (``?1``, ``?2``): the query's own in order, ours after them.

    An anonymous ``?`` takes the number after the highest one written before it, so a numbered
    rule parameter ahead of it would shift it; numbering all of them keeps each value in place.
    None if the count comes out different from the parsed query's.
    """
    out: list[str] = []
    count = 0
    i = 0
    n = len(sql)
    while i < n:
        ch = sql[i]
        if ch in "'\"`[":
            end = _quoted_end(sql, i)
            out.append(sql[i:end])
            i = end
            continue
        if ch == "?":
            count += 1
            out.append(f"?{count}")
            i += 1
            continue
        out.append(ch)
        i += 1
    text = "".join(out)
    if count != user:
        return None
    for position in range(user + 1, user + len(names) + 1):
        text = text.replace(f"{mark}r{position}x", f"?{position}")
    return text


def _quoted_end(sql: str, i: int) -> int:
    close = "]" if sql[i] == "[" else sql[i]
    j = i + 1
    while j < len(sql):
        if sql[j] == close:
            if close != "]" and j + 1 < len(sql) and sql[j + 1] == close:
                j += 2
                continue
            return j + 1
        j += 1
    return len(sql)


def _unqualify_columns(root: exp.Expr, table: exp.Table) -> None:
    """``public.orders.id`` names a table that is now a derived table called ``orders``."""
    for column in root.find_all(exp.Column):
        if (
            column.table == table.alias_or_name
            and column.args.get("db") is not None
            and (column.catalog, column.db) == (table.catalog, table.db)
        ):
            column.set("db", None)
            column.set("catalog", None)

"""What model-written SQL may call: a per-dialect allow-list of functions, cast types and FROM items.

A deny-list cannot win here. PostgreSQL ships thousands of functions and every release adds
some; the deny-list that knew ``table_to_xml`` let ``table_to_xml_and_xmlschema('users', ...)``
dump a whole table the caller had no grant on. So every call is refused unless each name it
goes by is on the list for the dialect, and the default list holds only what an analyst needs
(aggregates, string, date/time and math functions, window ranking) and nothing that reads
metadata, files, settings, other schemas or the server.

sqlglot parses most calls into typed nodes (``exp.Count``, ``exp.CurrentUser``,
``exp.TimestampTrunc``) whose name in the query is neither the class nor ``sql_name()``: what
the database runs is the node as printed in the dialect. So every call is judged by what it
prints, its arguments left out: each word left over (``DATE_TRUNC``, ``CURRENT_USER``,
``SUBSTRING ... FROM ... FOR``) must be an allowed name or plain SQL syntax. A node that
prints as an operator (``a ~ b``, ``a -> 'k'``) adds no word and only combines values that
are checked themselves. Unknown calls (``exp.Anonymous``) must be listed by name as written.
Beside calls: casts only to plain scalar types (``'users'::regclass`` resolves catalogue
names), FROM items only tables, subqueries and VALUES (a table-valued function such as
``pragma_table_info`` or ``generate_series`` reads whatever it likes), no custom operators.

Hand-written on purpose: sqlglot knows how to parse and print calls, not which are safe.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.generator import Generator

from ._sql_reasons import Refusal, SqlCode

__all__ = ["CallRules", "check_calls", "default_functions"]

# What an analyst reaches for in any dialect. Names as the database sees them (lower case).
_COMMON: Final = frozenset(
    {
        # aggregates
        "count",
        "sum",
        "avg",
        "min",
        "max",
        # conditionals
        "coalesce",
        "nullif",
        # strings
        "lower",
        "upper",
        "length",
        "substr",
        "substring",
        "trim",
        "ltrim",
        "rtrim",
        "replace",
        # math
        "round",
        "abs",
        "ceil",
        "ceiling",
        "floor",
        "sign",
        "mod",
        "power",
        "sqrt",
        "exp",
        "ln",
        "log",
        # date and time
        "current_date",
        "current_time",
        "current_timestamp",
        # window ranking and offsets
        "row_number",
        "rank",
        "dense_rank",
        "percent_rank",
        "cume_dist",
        "ntile",
        "lag",
        "lead",
        "first_value",
        "last_value",
        "nth_value",
    }
)

_POSTGRES: Final = _COMMON | frozenset(
    {
        "greatest",
        "least",
        "concat",
        "concat_ws",
        "left",
        "right",
        "position",
        "strpos",
        "initcap",
        "btrim",
        "split_part",
        "regexp_replace",
        "char_length",
        "character_length",
        "trunc",
        "div",
        "cbrt",
        "degrees",
        "radians",
        "date_trunc",
        "date_part",
        "extract",
        "now",
        "localtime",
        "localtimestamp",
        "age",
        "make_date",
        "make_time",
        "make_timestamp",
        "make_interval",
        "to_char",
        "to_date",
        "to_timestamp",
        "to_number",
        "justify_days",
        "justify_hours",
        "justify_interval",
        "string_agg",
        "array_agg",
        "bool_and",
        "bool_or",
        "every",
        "stddev",
        "stddev_pop",
        "stddev_samp",
        "variance",
        "var_pop",
        "var_samp",
        "corr",
        "covar_pop",
        "covar_samp",
        "percentile_cont",
        "percentile_disc",
        "mode",
    }
)

_SQLITE: Final = _COMMON | frozenset(
    {
        "instr",
        "ifnull",
        "iif",
        "total",
        "group_concat",
        "date",
        "time",
        "datetime",
        "julianday",
        "unixepoch",
        "strftime",
        "trunc",
        "pow",
        "typeof",
    }
)

# Other dialects get what every engine agrees on, plus their usual spellings of it.
_FALLBACK: Final = _COMMON | frozenset(
    {"greatest", "least", "concat", "date_trunc", "extract", "trunc", "string_agg"}
)

_BY_DIALECT: Final = MappingProxyType({"postgres": _POSTGRES, "sqlite": _SQLITE})

# Words a call's own rendering may contain besides its name: syntax, never a callable.
_SYNTAX: Final = frozenset(
    {
        "case",
        "when",
        "then",
        "else",
        "end",
        "cast",
        "try_cast",
        "as",
        "from",
        "for",
        "in",
        "is",
        "not",
        "null",
        "and",
        "or",
        "distinct",
        "all",
        "array",
        "exists",
        "both",
        "leading",
        "trailing",
        "order",
        "by",
        "asc",
        "desc",
        "nulls",
        "first",
        "last",
        "separator",
        "true",
        "false",
        "collate",
        "placing",
        "ignore",
        "respect",
        # scalar type names in casts sqlglot inserts itself (ROUND(CAST(AVG(x) AS DECIMAL), 2))
        "decimal",
        "numeric",
        "double",
        "precision",
        "real",
        "int",
        "integer",
        "bigint",
        "smallint",
        "float",
        "text",
        "varchar",
        "boolean",
    }
)

# SQL keywords that PostgreSQL (and the standard) evaluate as calls although written bare;
# sqlglot leaves some of them as plain columns (``SELECT user``).
_BARE_CALLS: Final = frozenset(
    {
        "user",
        "current_user",
        "session_user",
        "system_user",
        "current_role",
        "current_catalog",
        "current_schema",
        "current_date",
        "current_time",
        "current_timestamp",
        "localtime",
        "localtimestamp",
    }
)

# Scalar types a value may be cast to. Casts to reg* / oid types resolve catalog names
# (``'users'::regclass``), so anything not listed here, user-defined types included, is refused.
_CAST_TYPES: Final = frozenset(
    t
    for t in (
        getattr(exp.DataType.Type, name, None)
        for name in (
            "TINYINT",
            "SMALLINT",
            "MEDIUMINT",
            "INT",
            "BIGINT",
            "DECIMAL",
            "DOUBLE",
            "FLOAT",
            "BOOLEAN",
            "CHAR",
            "NCHAR",
            "VARCHAR",
            "NVARCHAR",
            "TEXT",
            "DATE",
            "TIME",
            "TIMETZ",
            "DATETIME",
            "TIMESTAMP",
            "TIMESTAMPTZ",
            "TIMESTAMPLTZ",
            "INTERVAL",
            "UUID",
            "JSON",
            "JSONB",
            "VARBINARY",
            "BINARY",
            "BLOB",
            "ARRAY",
        )
    )
    if t is not None
)

# One left-to-right scan: a string literal is skipped whole, a quoted identifier counts unquoted.
_TOKEN: Final = re.compile(
    r"""'(?:[^']|'')*'|"((?:[^"]|"")*)"|`([^`]*)`|([A-Za-z_][A-Za-z_0-9$]*)"""
)


def default_functions(dialect: str) -> frozenset[str]:
    """The functions a dialect's queries may call unless the policy says otherwise."""
    return _BY_DIALECT.get(dialect, _FALLBACK)


@dataclass(frozen=True, slots=True)
class CallRules:
    """The names a query may call (``allowed``) and the floor no allow-list lifts (``denied``)."""

    dialect: str
    allowed: frozenset[str]
    denied: frozenset[str] = frozenset()
    denied_prefixes: tuple[str, ...] = ()

    def is_denied(self, name: str) -> bool:
        return name in self.denied or name.startswith(self.denied_prefixes)


def check_calls(tree: exp.Expr, rules: CallRules) -> list[Refusal]:
    """Reasons to refuse ``tree`` for what it calls, casts to or selects from; empty if none."""
    reasons: list[Refusal] = []
    for node in tree.walk():
        reasons.extend(_check_shape(node, rules))
    try:
        printed = list(_printed_calls(tree, rules.dialect))
    except Exception as exc:  # RecursionError, UnsupportedError: what cannot be printed cannot run
        note = Refusal(SqlCode.UNCHECKABLE, f"cannot check the query's calls: {exc}"[:300])
        return [*dict.fromkeys(reasons), note]
    for node, words in printed:
        deny = [node.sql_name().lower()] if not isinstance(node, exp.Anonymous) else []
        # sqlglot's own name may differ from the SQL spelling: it can only deny, not allow
        reasons.extend(_judge([*deny, *words], words, rules))
    return list(dict.fromkeys(reasons))


def _check_shape(node: exp.Expr, rules: CallRules) -> Iterator[Refusal]:
    """What is visible in the parsed tree: FROM items, cast types, bare keyword calls, names."""
    if isinstance(node, exp.From | exp.Join | exp.Lateral):
        yield from _check_source(node)
    if isinstance(node, exp.DataType):
        yield from _check_type(node, rules.dialect)
    elif isinstance(node, exp.Operator):
        yield Refusal(
            SqlCode.CUSTOM_OPERATOR,
            f"custom operator {node.sql(dialect=rules.dialect)!r} is not allowed",
        )
    elif isinstance(node, exp.Column):
        name = _bare_call(node, rules.dialect)
        if name is not None:
            yield from _judge([name], [name], rules)
    elif isinstance(node, exp.Dot) and isinstance(node.expression, exp.Func):
        yield Refusal(
            SqlCode.FUNCTION_QUALIFIED,
            f"schema-qualified function call {node.sql(dialect=rules.dialect)!r} is not allowed",
        )
    elif isinstance(node, exp.Anonymous):
        written = node.name.lower()
        if rules.is_denied(written):
            yield _denied(written)
        elif written not in rules.allowed:
            # an unknown call is never syntax, whatever it is named (``"case"(x)``)
            yield _not_listed(written)
    elif isinstance(node, exp.Func) and rules.is_denied(node.sql_name().lower()):
        yield _denied(node.sql_name().lower())


def _denied(name: str) -> Refusal:
    return Refusal(SqlCode.FUNCTION_DENIED, f"function {name!r} is not allowed")


def _not_listed(name: str) -> Refusal:
    return Refusal(
        SqlCode.FUNCTION_NOT_ALLOWED,
        f"function {name!r} is not on the allow-list (unknown functions are refused)",
    )


def _judge(deny_names: list[str], allow_names: list[str], rules: CallRules) -> Iterator[Refusal]:
    denied = [n for n in deny_names if rules.is_denied(n)]
    if denied:
        yield _denied(denied[0])
        return
    for name in allow_names:
        if name not in rules.allowed and name not in _SYNTAX:
            yield _not_listed(name)
            return


def _printed_calls(tree: exp.Expr, dialect: str) -> Iterator[tuple[exp.Func, list[str]]]:
    """Each call in ``tree`` with the words it prints as in ``dialect``, arguments left out.

    The query is printed once, as the final SQL will be, and every node that prints itself
    records the words left in its text once what its arguments printed is cut out. Words a call prints on behalf of
    a node that does not print itself (a CASE branch, a helper node sqlglot builds on the
    way) count as that call's own. A call printed inline by something that is not a call is
    printed again on its own, so no call goes unjudged.
    """
    copy = tree.copy()
    nodes = list(copy.walk())
    parents = {id(n): n.parent for n in nodes}
    own = _render_own_words(copy, dialect, {id(n) for n in nodes})
    for node in nodes:
        parent = parents[id(node)]
        if not isinstance(node, exp.Func) or isinstance(parent, exp.Dot):
            continue  # a schema-qualified call is refused by its shape
        if id(node) in own:
            yield node, own[id(node)]
            continue
        holder = parent
        while holder is not None and id(holder) not in own:
            holder = parents.get(id(holder))
        if isinstance(holder, exp.Func):
            continue  # the enclosing call printed it, and its words were judged there
        alone = node.copy()
        yield node, _render_own_words(alone, dialect, {id(n) for n in alone.walk()})[id(alone)]


def _render_own_words(tree: exp.Expr, dialect: str, known: set[int]) -> dict[int, list[str]]:
    """Print ``tree`` (mutated on the way, as sqlglot does); each known node's own words.

    One pass however deep the query nests; judging each call by printing it alone would cost
    the query's size times its depth.
    """
    d = Dialect.get_or_raise(dialect)
    base = d.generator_class
    pending: list[list[str]] = []
    own: dict[int, list[str]] = {}

    def sql(self: Generator, expression: Any, key: str | None = None, comment: bool = True) -> str:
        if key is not None or not isinstance(expression, exp.Expr):
            out: str = base.sql(self, expression, key, comment)
            return out
        pending.append([])
        try:
            out = base.sql(self, expression, None, comment)
        finally:
            inner = pending.pop()
        if id(expression) in known:
            own[id(expression)] = list(_words(_cut(out, inner)).elements())
            if pending:
                pending[-1].append(out)
        elif pending:
            pending[-1].extend(inner)  # a helper node: what it printed itself stays with its caller
        return out

    generator: Generator = type("RecordingGenerator", (base,), {"sql": sql})(
        dialect=d, comments=False
    )
    generator.sql(generator.preprocess(tree))
    return own


def _cut(text: str, pieces: list[str]) -> str:
    """``text`` with each piece removed once, longest first, only where it stands alone.

    A piece the text does not contain (printed, then not used) removes nothing: a call's own
    words can only be over-counted, never hidden.
    """
    for piece in sorted(pieces, key=len, reverse=True):
        if not piece:
            continue
        before = r"(?<![A-Za-z_0-9$])" if _is_word_char(piece[0]) else ""
        after = r"(?![A-Za-z_0-9$])" if _is_word_char(piece[-1]) else ""
        text = re.sub(before + re.escape(piece) + after, " ", text, count=1)
    return text


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch in "_$"


def _words(sql: str) -> Counter[str]:
    """Identifier-like words (quoted ones unquoted) outside string literals, lower-cased."""
    counts: Counter[str] = Counter()
    for match in _TOKEN.finditer(sql):
        word = next((g for g in match.groups() if g is not None), None)
        if word:
            counts[word.lower()] += 1
    return counts


def _bare_call(column: exp.Column, dialect: str) -> str | None:
    """The call a bare keyword column really is (``SELECT user`` is ``current_user`` in PG)."""
    if dialect == "sqlite" or column.table:
        return None
    ident = column.this
    if not isinstance(ident, exp.Identifier) or ident.quoted:
        return None
    name = ident.name.lower()
    return name if name in _BARE_CALLS else None


def _check_type(node: exp.DataType, dialect: str) -> Iterator[Refusal]:
    if type(node) is not exp.DataType or node.this not in _CAST_TYPES:
        yield Refusal(SqlCode.TYPE_DENIED, f"type {node.sql(dialect=dialect)!r} is not allowed")


def _check_source(node: exp.From | exp.Join | exp.Lateral) -> Iterator[Refusal]:
    """FROM items are tables, subqueries or VALUES: a table-valued function reads what it likes."""
    item = node.this
    if isinstance(node, exp.Lateral):
        if not isinstance(item, exp.Subquery):
            yield _tvf(f"table-valued function {_label(item)!r} is not allowed (LATERAL)")
        return
    if isinstance(item, exp.Table):
        if not isinstance(item.this, exp.Identifier):
            yield _tvf(f"table-valued function {_label(item)!r} in FROM is not allowed")
    elif not isinstance(item, exp.Subquery | exp.Values | exp.Lateral):
        yield _tvf(f"table-valued function {_label(item)!r} in FROM is not allowed")


def _tvf(message: str) -> Refusal:
    return Refusal(SqlCode.TABLE_FUNCTION, message)


def _label(item: exp.Expr | None) -> str:
    if item is None:
        return "?"
    text = item.sql()
    return text if len(text) <= 80 else text[:77] + "..."

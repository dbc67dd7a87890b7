"""Validate model-written SQL before anything runs it: one read-only SELECT over allowed data.

The model's text is never executed: it is parsed (sqlglot), checked, and re-generated from the
checked tree, so what runs is exactly what was validated. Refusals list every reason, so the
model can be told why and try again.

Functions are allow-listed per dialect (``_sql_functions``): a deny-list of PostgreSQL's
thousands of functions let ``table_to_xml_and_xmlschema`` dump tables no grant covered. The
deny-list below stays as a floor that no operator's allow-list extension can lift.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

import sqlglot
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.optimizer.normalize_identifiers import normalize_identifiers

from bastion.errors import UnprocessableRequest

from ._sql_functions import CallRules, check_calls, default_functions
from ._sql_scope import Grant, check_access
from ._sql_text import find_comment

__all__ = [
    "DENIED_FUNCTIONS",
    "DENIED_FUNCTION_PREFIXES",
    "SqlPolicy",
    "SqlRejected",
    "SqlVerdict",
    "default_functions",
    "validate_sql",
]

TableRules = Mapping[str, Collection[str] | Literal["*"]]

# Functions that sleep, touch files or the network, run SQL from a string, export whole tables,
# read the catalogue or the server, change settings or sequences, or take locks: each turns a
# read-only SELECT over granted columns into something else. The allow-list already refuses
# them; this floor keeps them refused when an operator extends the allow-list too generously.
DENIED_FUNCTIONS: Final = frozenset(
    {
        "current_setting",
        "set_config",
        "nextval",
        "setval",
        "currval",
        "lastval",
        "txid_current",
        "ts_stat",
        "ts_rewrite",
        "query_to_xml",
        "query_to_xmlschema",
        "query_to_xml_and_xmlschema",
        "cursor_to_xml",
        "cursor_to_xmlschema",
        "table_to_xml",
        "table_to_xmlschema",
        "table_to_xml_and_xmlschema",
        "database_to_xml",
        "database_to_xmlschema",
        "database_to_xml_and_xmlschema",
        "schema_to_xml",
        "schema_to_xmlschema",
        "schema_to_xml_and_xmlschema",
        "xmlparse",
        "version",
        "current_user",
        "session_user",
        "system_user",
        "current_role",
        "user",
        "current_database",
        "current_catalog",
        "current_schema",
        "current_schemas",
        "current_query",
        "to_regclass",
        "to_regproc",
        "to_regprocedure",
        "to_regtype",
        "to_regrole",
        "to_regnamespace",
        "format_type",
        "col_description",
        "obj_description",
        "shobj_description",
        "exec",
        "execute",
        "sleep",
        "benchmark",
        "load_file",
        "load_extension",
        "readfile",
        "writefile",
        "edit",
        "fts3_tokenizer",
        "randomblob",
        "zeroblob",
    }
)
DENIED_FUNCTION_PREFIXES: Final = (
    "pg_",
    "lo_",
    "dblink",
    "has_",
    "inet_",
    "txid_",
    "sqlite_",
    "pragma_",
)

_WRITES: Final = (
    exp.DML,
    exp.DDL,
    exp.Insert,
    exp.Update,
    exp.Delete,
    exp.Merge,
    exp.Create,
    exp.Drop,
    exp.Alter,
    exp.TruncateTable,
    exp.Command,
    exp.Copy,
    exp.Grant,
    exp.Revoke,
    exp.Set,
    exp.Transaction,
    exp.Commit,
    exp.Rollback,
    exp.Use,
    exp.Pragma,
    exp.Analyze,
    exp.LoadData,
    exp.Attach,
    exp.Detach,
    exp.Kill,
    exp.Cache,
    exp.Uncache,
    exp.Refresh,
    exp.Execute,
    exp.Declare,
    exp.Comment,
)


class SqlRejected(UnprocessableRequest):
    """Model-written SQL failed validation; ``reasons`` say why, for the model's next try."""

    def __init__(self, reasons: Iterable[str]) -> None:
        self.reasons = tuple(reasons)
        super().__init__("SQL rejected: " + "; ".join(self.reasons))


@dataclass(frozen=True, slots=True)
class SqlVerdict:
    """``ok`` with the SQL to run (rewritten), or the reasons it must not run."""

    ok: bool
    sql: str | None
    reasons: tuple[str, ...] = ()

    def raise_for_rejection(self) -> str:
        """The SQL to run, or ``SqlRejected``; for callers that treat refusal as an error."""
        if not self.ok or self.sql is None:
            raise SqlRejected(self.reasons)
        return self.sql


@dataclass(frozen=True, slots=True)
class SqlPolicy:
    """Which tables and columns each role may read, and the limits every query gets.

    ``roles`` maps role → {table: columns or "*"}; table names may be schema-qualified and
    match exactly as written in the query. A caller gets the union of its roles' grants.
    ``star="expand"`` rewrites ``SELECT *`` over restricted tables to the allowed columns,
    ``"refuse"`` rejects it.

    Calls are allow-listed: ``allowed_functions`` (names as the dialect spells them) replaces
    the dialect's default list (``default_functions``), ``None`` keeps it; ``extra_functions``
    adds names to whichever list applies. ``denied_functions`` / ``denied_prefixes`` win over
    both, so lifting one of those takes an explicit change to the floor too.
    """

    roles: Mapping[str, TableRules]
    max_rows: int = 1000
    dialect: str = "postgres"
    star: Literal["expand", "refuse"] = "expand"
    max_length: int = 20_000
    denied_functions: frozenset[str] = DENIED_FUNCTIONS
    denied_prefixes: tuple[str, ...] = DENIED_FUNCTION_PREFIXES
    allowed_functions: frozenset[str] | None = None
    extra_functions: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.max_rows < 1:
            raise ValueError("max_rows must be >= 1")
        if self.star not in ("expand", "refuse"):
            raise ValueError("star must be 'expand' or 'refuse'")
        Dialect.get_or_raise(self.dialect)
        if isinstance(self.allowed_functions, str) or isinstance(self.extra_functions, str):
            raise ValueError("function lists are collections of names, not a string")
        lower = object.__setattr__
        lower(self, "denied_functions", frozenset(n.lower() for n in self.denied_functions))
        lower(self, "denied_prefixes", tuple(p.lower() for p in self.denied_prefixes))
        if self.allowed_functions is not None:
            lower(self, "allowed_functions", frozenset(n.lower() for n in self.allowed_functions))
        lower(self, "extra_functions", frozenset(n.lower() for n in self.extra_functions))

    def functions_for(self, dialect: str | None = None) -> frozenset[str]:
        """The names a query in ``dialect`` may call under this policy (before the deny floor)."""
        base = self.allowed_functions
        if base is None:
            base = default_functions(dialect or self.dialect)
        return base | self.extra_functions

    def call_rules(self, dialect: str | None = None) -> CallRules:
        d = dialect or self.dialect
        return CallRules(d, self.functions_for(d), self.denied_functions, self.denied_prefixes)

    def grants_for(self, roles: Iterable[str], dialect: str | None = None) -> dict[str, Grant]:
        """The union of the roles' grants, names normalized as the dialect folds identifiers."""
        d = dialect or self.dialect
        merged: dict[str, Grant] = {}
        for role in roles:
            for table, rule in self.roles.get(role, {}).items():
                key = ".".join(_fold(part, d) for part in table.split("."))
                merged[key] = _merge(merged.get(key), rule, d)
        return merged


def _fold(name: str, dialect: str) -> str:
    """Fold a policy name like an unquoted identifier, as the query's names are folded."""
    ident = Dialect.get_or_raise(dialect).normalize_identifier(exp.to_identifier(name))
    return ident.name


def _merge(current: Grant | None, rule: Collection[str] | str, dialect: str) -> Grant:
    if rule == "*" or (current is not None and current.columns is None):
        return Grant(None)
    if isinstance(rule, str):
        raise ValueError(f"a table rule is '*' or a collection of columns, not {rule!r}")
    ordered = sorted(rule) if isinstance(rule, set | frozenset) else list(rule)
    columns = list(current.columns or ()) if current else []
    columns += [c for c in (_fold(c, dialect) for c in ordered) if c not in columns]
    return Grant(tuple(columns))


def validate_sql(
    sql: str, policy: SqlPolicy, roles: Iterable[str], *, dialect: str | None = None
) -> SqlVerdict:
    """Check ``sql`` for the caller's ``roles``; on success return the SQL that may run."""
    d = dialect or policy.dialect
    early = _check_text(sql, policy, d)
    if early:
        return _refused(early)
    try:
        statements = [s for s in sqlglot.parse(sql, dialect=d) if s is not None]
    except Exception as exc:  # ParseError, TokenError, RecursionError on absurd nesting
        return _refused([f"cannot parse the SQL: {str(exc).splitlines()[0][:200]}"])
    if len(statements) != 1:
        return _refused([f"exactly one statement is allowed, got {len(statements)}"])
    tree = statements[0]
    if not isinstance(tree, exp.Select | exp.SetOperation):
        return _refused([f"only SELECT queries are allowed, got {tree.key.upper()}"])
    reasons = _check_read_only(tree) + check_calls(tree, policy.call_rules(d))
    if reasons:
        return _refused(reasons)
    grants = policy.grants_for(roles, d)
    if not grants:
        return _refused(["none of the caller's roles may query any table"])
    tree = normalize_identifiers(tree, dialect=d)
    reasons = check_access(tree, grants, expand_star=policy.star == "expand")
    if reasons:
        return _refused(reasons)
    _enforce_limit(tree, policy.max_rows)
    return SqlVerdict(True, tree.sql(dialect=d, normalize_functions=False, comments=False))


def _refused(reasons: Iterable[str]) -> SqlVerdict:
    return SqlVerdict(False, None, tuple(reasons))


def _check_text(sql: str, policy: SqlPolicy, dialect: str) -> list[str]:
    if not sql.strip():
        return ["the SQL is empty"]
    if len(sql) > policy.max_length:
        return [f"the SQL is longer than {policy.max_length} characters"]
    if "\x00" in sql:
        return ["the SQL contains a NUL byte"]
    marker = find_comment(sql, dialect)
    if marker is not None:
        return [f"comments are not allowed (found {marker!r})"]
    return []


def _check_read_only(tree: exp.Expr) -> list[str]:
    reasons: list[str] = []
    for node in tree.walk():
        if isinstance(node, exp.Into):
            reasons.append("SELECT ... INTO is not allowed")
        elif isinstance(node, exp.Lock):
            reasons.append("row locks (FOR UPDATE / FOR SHARE) are not allowed")
        elif isinstance(node, _WRITES):
            reasons.append(f"{node.key.upper()} is not allowed: the query must be read-only")
    return list(dict.fromkeys(reasons))


def _int_literal(node: exp.Expr | None) -> int | None:
    if isinstance(node, exp.Literal) and not node.is_string and node.this.isdigit():
        return int(node.this)
    return None


def _enforce_limit(tree: exp.Expr, max_rows: int) -> None:
    """Keep a small enough literal LIMIT; replace anything else (ALL, expressions, WITH TIES)."""
    current = tree.args.get("limit")
    if isinstance(current, exp.Limit):
        value = _int_literal(current.expression)
        if value is not None and value <= max_rows:
            return
        offset = current.args.get("offset")
    elif isinstance(current, exp.Fetch):
        value = _int_literal(current.args.get("count"))
        options = current.args.get("limit_options")
        plain = options is None or not (
            options.args.get("percent") or options.args.get("with_ties")
        )
        if value is not None and value <= max_rows and plain:
            return
        offset = None
    else:
        offset = None
    limit = exp.Limit(expression=exp.Literal.number(max_rows))
    if offset is not None:
        limit.set("offset", offset)
    tree.set("limit", limit)

"""Validate model-written SQL before anything runs it: one read-only SELECT over allowed data.

The model's text is never executed: it is parsed (sqlglot), checked, and re-generated from the
checked tree, so what runs is exactly what was validated. Refusals list every reason, so the
model can be told why and try again.

Functions are allow-listed per dialect (``_sql_functions``): a deny-list of PostgreSQL's
thousands of functions let ``table_to_xml_and_xmlschema`` dump tables no grant covered. The
deny-list below stays as a floor that no operator's allow-list extension can lift. Filters that
are always true (``OR '1'='1'``) are refused (``_sql_predicates``), and a role's row rules
(``orders: customer_id = :caller``) wrap every reference to the table so only admitted rows are
ever read (``_sql_rows``). Each refusal carries a stable code (``_sql_reasons``) beside its
message.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import sqlglot
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.optimizer.normalize_identifiers import normalize_identifiers

from bastion.errors import UnprocessableRequest

from ._sql_functions import CallRules, check_calls, default_functions
from ._sql_predicates import check_predicates
from ._sql_reasons import Refusal, SqlCode
from ._sql_rows import RowRule, apply_row_rules, parse_row_rule
from ._sql_scope import Grant, check_access
from ._sql_text import find_comment

__all__ = [
    "DENIED_FUNCTIONS",
    "DENIED_FUNCTION_PREFIXES",
    "Refusal",
    "SqlCode",
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
    """Model-written SQL failed validation; ``reasons`` say why, ``codes`` which rules refused."""

    def __init__(self, reasons: Iterable[Refusal | str]) -> None:
        items = tuple(reasons)
        self.reasons = tuple(str(r) for r in items)
        self.codes = tuple(
            dict.fromkeys(str(r.code) if isinstance(r, Refusal) else "other" for r in items)
        )
        super().__init__("SQL rejected: " + "; ".join(self.reasons))


@dataclass(frozen=True, slots=True)
class SqlVerdict:
    """``ok`` with the SQL to run (rewritten), or the refusals saying why it must not run.

    When row rules applied, the SQL binds ``params`` (by name, in order) after the query's own
    ``user_params`` positional parameters; ``bind`` builds the full argument list.
    """

    ok: bool
    sql: str | None
    refusals: tuple[Refusal, ...] = ()
    params: tuple[str, ...] = ()
    user_params: int = 0

    @property
    def reasons(self) -> tuple[str, ...]:
        """The messages, for the model's next try."""
        return tuple(r.message for r in self.refusals)

    @property
    def codes(self) -> tuple[str, ...]:
        """The rules that refused, each once, as stable ids for records and metrics."""
        return tuple(dict.fromkeys(str(r.code) for r in self.refusals))

    def raise_for_rejection(self) -> str:
        """The SQL to run, or ``SqlRejected``; for callers that treat refusal as an error."""
        if not self.ok or self.sql is None:
            raise SqlRejected(self.refusals)
        return self.sql

    def bind(self, args: Sequence[Any], values: Mapping[str, Any]) -> tuple[Any, ...]:
        """The query's own ``args`` followed by each row-rule parameter's value from ``values``."""
        if not self.params:
            return tuple(args)
        if len(args) != self.user_params:
            raise ValueError(
                f"the query binds {self.user_params} parameter(s) of its own, got {len(args)}"
            )
        missing = [name for name in self.params if name not in values]
        if missing:
            raise ValueError(f"row rule parameter {missing[0]!r} has no value")
        return (*args, *(values[name] for name in self.params))


@dataclass(frozen=True, slots=True)
class SqlPolicy:
    """Which tables and columns each role may read, and the limits every query gets.

    ``roles`` maps role → {table: columns or "*"}; table names may be schema-qualified and
    match exactly as written in the query. A caller gets the union of its roles' grants.
    ``star="expand"`` rewrites ``SELECT *`` over restricted tables to the allowed columns,
    ``"refuse"`` rejects it.

    ``row_rules`` maps role → {table: predicate}, e.g. ``{"customer": {"orders":
    "orders.customer_id = :caller"}}``: every reference to the table in a query from a caller
    holding the role reads only rows the predicate admits, its ``:names`` bound as parameters
    at execution. Rules of all the caller's roles apply together.

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
    row_rules: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    _rules: Mapping[str, tuple[RowRule, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

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
        parsed: dict[str, tuple[RowRule, ...]] = {}
        for role, tables in self.row_rules.items():
            if isinstance(tables, str) or not isinstance(tables, Mapping):
                raise ValueError(f"row rules of role {role!r} map table names to predicates")
            parsed[role] = tuple(
                parse_row_rule(table, predicate, self.dialect)
                for table, predicate in tables.items()
            )
        lower(self, "_rules", parsed)

    def rules_for(
        self, roles: Iterable[str], dialect: str | None = None
    ) -> dict[str, list[RowRule]]:
        """Each ruled table's rules over all of the caller's roles, names folded for ``dialect``."""
        d = dialect or self.dialect
        out: dict[str, list[RowRule]] = {}
        for role in roles:
            for rule in self._rules.get(role, ()):
                rules = out.setdefault(_fold(rule.table, d), [])
                if rule not in rules:
                    rules.append(rule)
        return out

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
    roles = tuple(roles)
    early = _check_text(sql, policy, d)
    if early:
        return _refused(early)
    try:
        statements = [s for s in sqlglot.parse(sql, dialect=d) if s is not None]
    except Exception as exc:  # ParseError, TokenError, RecursionError on absurd nesting
        detail = str(exc).splitlines()[0][:200]
        return _refused([Refusal(SqlCode.PARSE_ERROR, f"cannot parse the SQL: {detail}")])
    if len(statements) != 1:
        return _refused(
            [
                Refusal(
                    SqlCode.STATEMENTS,
                    f"exactly one statement is allowed, got {len(statements)}",
                )
            ]
        )
    tree = statements[0]
    if not isinstance(tree, exp.Select | exp.SetOperation):
        return _refused(
            [
                Refusal(
                    SqlCode.NOT_SELECT,
                    f"only SELECT queries are allowed, got {tree.key.upper()}",
                )
            ]
        )
    reasons = _check_read_only(tree) + check_calls(tree, policy.call_rules(d))
    reasons += check_predicates(tree, d)
    if reasons:
        return _refused(reasons)
    grants = policy.grants_for(roles, d)
    if not grants:
        return _refused(
            [Refusal(SqlCode.NO_GRANT, "none of the caller's roles may query any table")]
        )
    tree = normalize_identifiers(tree, dialect=d)
    reasons = check_access(tree, grants, expand_star=policy.star == "expand")
    if reasons:
        return _refused(reasons)
    _enforce_limit(tree, policy.max_rows)
    rules = policy.rules_for(roles, d)
    if rules:
        rewritten = apply_row_rules(tree, rules, d)
        if isinstance(rewritten, list):
            return _refused(rewritten)
        return SqlVerdict(
            True, rewritten.sql, params=rewritten.params, user_params=rewritten.user_params
        )
    return SqlVerdict(True, tree.sql(dialect=d, normalize_functions=False, comments=False))


def _refused(reasons: Iterable[Refusal]) -> SqlVerdict:
    return SqlVerdict(False, None, tuple(dict.fromkeys(reasons)))


def _check_text(sql: str, policy: SqlPolicy, dialect: str) -> list[Refusal]:
    if not sql.strip():
        return [Refusal(SqlCode.EMPTY, "the SQL is empty")]
    if len(sql) > policy.max_length:
        return [Refusal(SqlCode.TOO_LONG, f"the SQL is longer than {policy.max_length} characters")]
    if "\x00" in sql:
        return [Refusal(SqlCode.NUL_BYTE, "the SQL contains a NUL byte")]
    marker = find_comment(sql, dialect)
    if marker is not None:
        return [Refusal(SqlCode.COMMENT, f"comments are not allowed (found {marker!r})")]
    return []


def _check_read_only(tree: exp.Expr) -> list[Refusal]:
    reasons: list[Refusal] = []
    for node in tree.walk():
        if isinstance(node, exp.Into):
            reasons.append(Refusal(SqlCode.SELECT_INTO, "SELECT ... INTO is not allowed"))
        elif isinstance(node, exp.Lock):
            reasons.append(
                Refusal(SqlCode.ROW_LOCK, "row locks (FOR UPDATE / FOR SHARE) are not allowed")
            )
        elif isinstance(node, _WRITES):
            message = f"{node.key.upper()} is not allowed: the query must be read-only"
            reasons.append(Refusal(SqlCode.WRITE, message))
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

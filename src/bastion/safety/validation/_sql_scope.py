"""Table and column allow-listing over sqlglot scopes, resolving names the way the database does.

sqlglot resolves scopes but not visibility rules, and an unqualified name the validator resolves
differently from PostgreSQL is a leak (``SELECT (SELECT ssn FROM orders) FROM users`` reads
``users.ssn`` when ``orders`` has no such column). So every name is checked against every table
it could bind to at the query levels SQL lets it see; anything unresolvable is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sqlglot import exp
from sqlglot.optimizer.scope import Scope, ScopeType, traverse_scope, walk_in_scope

from ._sql_reasons import Refusal, SqlCode

__all__ = ["Grant", "check_access", "table_key"]


@dataclass(frozen=True, slots=True)
class Grant:
    """What a caller may read from one table; ``columns=None`` means every column."""

    columns: tuple[str, ...] | None

    def allows(self, column: str) -> bool:
        return self.columns is None or column in self.columns


@dataclass(slots=True)
class _Pass:
    """One validation's findings and pending rewrites, applied only if nothing was refused."""

    grants: Mapping[str, Grant]
    expand_star: bool
    reasons: list[Refusal] = field(default_factory=list)
    seen: set[int] = field(default_factory=set)
    rewrites: list[tuple[exp.Expr, list[exp.Expr]]] = field(default_factory=list)

    def refuse(self, code: SqlCode, message: str) -> None:
        reason = Refusal(code, message)
        if reason not in self.reasons:
            self.reasons.append(reason)


def table_key(table: exp.Table) -> str:
    """The table's name as the policy spells it: ``[catalog.][schema.]name``."""
    return ".".join(part for part in (table.catalog, table.db, table.name) if part)


def _is_function_table(table: exp.Table) -> bool:
    """A table-valued function (``generate_series``) in FROM: refused, never resolved as a table."""
    return not isinstance(table.this, exp.Identifier)


def _levels(scope: Scope) -> list[Scope]:
    """The query levels a name in ``scope`` may bind to, innermost first.

    A CTE body or a non-LATERAL derived table cannot see the FROM items of the query that
    contains it, only the levels above that one.
    """
    out = [scope]
    child, parent = scope, scope.parent
    while parent is not None:
        if child.scope_type not in (ScopeType.CTE, ScopeType.DERIVED_TABLE):
            out.append(parent)
        child, parent = parent, parent.parent
    return out


def _real_tables(scopes: Iterable[Scope]) -> list[exp.Table]:
    """Base tables (not CTEs, derived tables or table functions) an unqualified name may hit."""
    found: list[exp.Table] = []
    for level in scopes:
        for source in level.sources.values():
            if not isinstance(source, exp.Table) or _is_function_table(source):
                continue
            if all(source is not t for t in found):
                found.append(source)
    return found


def _resolve(levels: list[Scope], column: exp.Column) -> exp.Table | Scope | None:
    """The source a qualified column names, at the innermost level that defines it."""
    for level in levels:
        source = level.sources.get(column.table)
        if source is None:
            continue
        if isinstance(source, exp.Table) and column.args.get("db") is not None:
            if (column.catalog, column.db) != (source.catalog, source.db):
                return None
        elif column.args.get("db") is not None:
            return None
        return source
    return None


def check_access(
    tree: exp.Expr, grants: Mapping[str, Grant], *, expand_star: bool
) -> list[Refusal]:
    """Reasons to refuse ``tree``; if none, star expansions and alias rewrites are applied."""
    run = _Pass(grants, expand_star)
    try:
        scopes = traverse_scope(tree)
    except Exception as exc:  # sqlglot raises several types for unresolvable shapes
        return [Refusal(SqlCode.UNRESOLVED, f"cannot resolve the query's structure: {exc}")]
    for scope in scopes:
        _check_tables(run, scope)
        _check_scope(run, scope)
    for node in tree.walk():
        if isinstance(node, exp.Column | exp.Table | exp.Star) and id(node) not in run.seen:
            run.refuse(SqlCode.UNRESOLVED, f"cannot resolve reference {node.sql()!r}")
    if not run.reasons:
        for target, replacement in run.rewrites:
            if len(replacement) == 1:
                target.replace(replacement[0])
            else:
                _splice(target, replacement)
    return run.reasons


def _splice(target: exp.Expr, replacement: list[exp.Expr]) -> None:
    """Replace one projection by several (a star by its allowed columns)."""
    select = target.parent
    assert isinstance(select, exp.Select)
    projections: list[exp.Expr] = []
    for p in select.expressions:
        projections.extend(replacement if p is target else [p])
    select.set("expressions", projections)


def _check_tables(run: _Pass, scope: Scope) -> None:
    for table in scope.tables:
        source = scope.sources.get(table.alias_or_name)
        if source is table:
            run.seen.add(id(table))
            if _is_function_table(table):
                # a table-valued function reads what it likes (pragma_table_info, json_each)
                run.refuse(
                    SqlCode.TABLE_FUNCTION,
                    f"table-valued function {table.sql()[:80]!r} is not allowed",
                )
                continue
            grant = run.grants.get(table_key(table))
            if grant is None:
                run.refuse(SqlCode.TABLE_DENIED, f"table {table_key(table)!r} is not allowed")
            elif grant.columns is not None and _renames_columns(table):
                # users AS u(a, email) names users' 2nd column "email", whatever it really is
                run.refuse(
                    SqlCode.COLUMN_DENIED,
                    f"column aliases on restricted table {table_key(table)!r} are not allowed",
                )
        elif isinstance(source, Scope) and not table.args.get("db"):
            run.seen.add(id(table))  # a CTE reference; the CTE body is its own scope


def _renames_columns(table: exp.Table) -> bool:
    alias = table.args.get("alias")
    return isinstance(alias, exp.TableAlias) and bool(alias.columns)


def _check_scope(run: _Pass, scope: Scope) -> None:
    levels = _levels(scope)
    select = scope.expression if isinstance(scope.expression, exp.Select) else None
    if select is not None:
        _check_joins(run, scope, select)
    for node in walk_in_scope(scope.expression):
        if isinstance(node, exp.Star):
            run.seen.add(id(node))
            if isinstance(node.parent, exp.Column):
                continue
            if isinstance(node.parent, exp.Count) or select is None:
                continue
            _check_bare_star(run, scope, select, node)
        elif isinstance(node, exp.Column):
            run.seen.add(id(node))
            if isinstance(node.this, exp.Star):
                run.seen.add(id(node.this))
                _check_qualified_star(run, levels, select, node)
            elif node.table:
                _check_qualified(run, levels, node)
            else:
                _check_unqualified(run, levels, select, node)


def _grant_of(run: _Pass, table: exp.Table) -> Grant:
    return run.grants.get(table_key(table), Grant(()))


def _check_qualified(run: _Pass, levels: list[Scope], column: exp.Column) -> None:
    source = _resolve(levels, column)
    if source is None:
        run.refuse(SqlCode.UNRESOLVED, f"column {column.sql()!r} names an unknown table")
    elif (
        isinstance(source, exp.Table)
        and not _is_function_table(source)
        and not _grant_of(run, source).allows(column.name)
    ):
        run.refuse(
            SqlCode.COLUMN_DENIED,
            f"column {column.name!r} of table {table_key(source)!r} is not allowed",
        )


def _check_unqualified(
    run: _Pass, levels: list[Scope], select: exp.Select | None, column: exp.Column
) -> None:
    tables = _real_tables(levels)
    denied = [t for t in tables if not _grant_of(run, t).allows(column.name)]
    if not denied:
        return
    if select is not None and _rewrite_output_alias(run, select, column):
        return
    names = ", ".join(repr(table_key(t)) for t in denied)
    ambiguous = len(tables) > 1 or sum(len(level.sources) for level in levels) > 1
    hint = " (qualify it with its table)" if ambiguous else ""
    run.refuse(SqlCode.COLUMN_DENIED, f"column {column.name!r} is not allowed on {names}{hint}")


def _rewrite_output_alias(run: _Pass, select: exp.Select, column: exp.Column) -> bool:
    """``ORDER BY n`` / ``GROUP BY n`` naming an output alias becomes its position.

    A bare name there may mean an input column of the same name (GROUP BY prefers it), so the
    validator pins the meaning it checked instead of guessing the database's.
    """
    parent = column.parent
    if isinstance(parent, exp.Ordered) and isinstance(parent.parent, exp.Order):
        owner: exp.Expr = parent.parent
    elif isinstance(parent, exp.Group):
        owner = parent
    else:
        return False
    if owner.parent is not select:
        return False
    hits = [i for i, p in enumerate(select.expressions) if p.alias_or_name == column.name]
    if len(hits) != 1 or not isinstance(select.expressions[hits[0]], exp.Alias):
        return False
    run.rewrites.append((column, [exp.Literal.number(hits[0] + 1)]))
    return True


def _check_joins(run: _Pass, scope: Scope, select: exp.Select) -> None:
    tables = [s for _, s in scope.selected_sources.values() if isinstance(s, exp.Table)]
    for join in select.args.get("joins") or []:
        if join.method.upper() == "NATURAL" and any(
            _grant_of(run, t).columns is not None for t in tables if not _is_function_table(t)
        ):
            run.refuse(
                SqlCode.COLUMN_DENIED,
                "NATURAL JOIN is not allowed on tables with restricted columns",
            )
        for ident in join.args.get("using") or []:
            name = ident.name if isinstance(ident, exp.Expr) else str(ident)
            for t in tables:
                if not _is_function_table(t) and not _grant_of(run, t).allows(name):
                    run.refuse(
                        SqlCode.COLUMN_DENIED,
                        f"column {name!r} of table {table_key(t)!r} is not allowed",
                    )


def _star_columns(run: _Pass, name: str, source: exp.Table | Scope) -> list[exp.Expr] | None:
    """What ``name.*`` may become: itself if unrestricted, its allowed columns, or None."""
    if isinstance(source, exp.Table) and not _is_function_table(source):
        grant = _grant_of(run, source)
        if grant.columns is not None:
            return [exp.column(c, table=name) for c in grant.columns] or None
    return [exp.Column(this=exp.Star(), table=exp.to_identifier(name))] if name else None


def _check_bare_star(run: _Pass, scope: Scope, select: exp.Select, star: exp.Star) -> None:
    sources = [s for _, s in scope.selected_sources.values()]
    if any(
        isinstance(s, exp.Table) and not _is_function_table(s) and table_key(s) not in run.grants
        for s in sources
    ):
        return  # already refused as a forbidden table
    restricted = [
        table_key(s)
        for _, s in scope.selected_sources.values()
        if isinstance(s, exp.Table)
        and not _is_function_table(s)
        and _grant_of(run, s).columns is not None
    ]
    if not restricted:
        return
    names = ", ".join(repr(t) for t in restricted)
    if not run.expand_star or star.parent is not select or any(star.args.values()):
        run.refuse(
            SqlCode.STAR_RESTRICTED,
            f"SELECT * is not allowed on tables with restricted columns ({names})",
        )
        return
    expanded: list[exp.Expr] = []
    for name, (_, source) in scope.selected_sources.items():
        cols = _star_columns(run, name, source)
        if cols is None:
            run.refuse(
                SqlCode.STAR_RESTRICTED,
                f"SELECT * cannot be expanded over {name or 'an unnamed source'!r}",
            )
            return
        expanded.extend(cols)
    run.rewrites.append((star, expanded))


def _check_qualified_star(
    run: _Pass, levels: list[Scope], select: exp.Select | None, column: exp.Column
) -> None:
    source = _resolve(levels, column)
    if source is None:
        run.refuse(SqlCode.UNRESOLVED, f"{column.sql()!r} names an unknown table")
        return
    if not isinstance(source, exp.Table) or _grant_of(run, source).columns is None:
        return
    cols = _star_columns(run, column.table, source)
    if not run.expand_star or select is None or column.parent is not select or cols is None:
        run.refuse(
            SqlCode.STAR_RESTRICTED,
            f"{column.sql()!r} is not allowed: table {table_key(source)!r} is restricted",
        )
        return
    run.rewrites.append((column, cols))

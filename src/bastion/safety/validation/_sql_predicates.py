"""Refuse filters that are always true: ``OR '1'='1'``, ``WHERE 1``, ``x = x``, ``NOT 0``.

An always-true condition in WHERE, ON, HAVING or QUALIFY is the mark of an injected payload (it
turns "this customer's row" into "every row") and never what an analyst means. Each condition
is folded with three-valued logic, treating anything that reads a row as unknown: a part that is
true whatever the row holds is refused, wherever it sits (``a AND (b OR 1)``,
``NOT (x = 1 AND 1 = 0)``). Beside constants, a few row-dependent shapes are true for every row
that has a value: a comparison of an expression with itself, ``LIKE '%'``, and ``e IS NULL OR e
IS NOT NULL`` or ``p OR NOT p`` side by side.

Constants are compared as loosely as any supported database would (``'1' = 1`` and ``'a' =
'A '`` count as true), so a payload cannot hide behind one engine's coercion rules. A condition
that reads no column of the row is refused even when false or unfoldable (``AND 1=2``,
``length('x') = 1``, ``current_date > '2000-01-01'``, an uncorrelated ``EXISTS``): it cannot
tell one row from another, so it is dead weight at best and a blind-injection probe at worst.

Hand-written on purpose: sqlglot's simplifier folds some constants but does not say which part
of a condition is always true, and it folds with one dialect's coercions.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Final

from sqlglot import exp

from ._sql_reasons import Refusal, SqlCode

__all__ = ["check_predicates"]


class _Unknown:
    """A value that depends on a row, or that this module cannot compute."""

    __slots__ = ()


UNKNOWN: Final = _Unknown()
Const = bool | int | float | str | None  # None is SQL NULL
Value = Const | _Unknown
Truth = bool | None  # None: unknown or NULL (a filter keeps no such row)

_TRUE_WORDS: Final = frozenset({"t", "true", "y", "yes", "on", "1"})
_NUMBER_PREFIX: Final = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_COMPARE: Final = (exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.NullSafeEQ)
_REFLEXIVE: Final = (exp.EQ, exp.GTE, exp.LTE, exp.NullSafeEQ, exp.Like, exp.ILike, exp.Glob)
_COMPLEMENT: Final[dict[type[exp.Expr], type[exp.Expr]]] = {
    exp.EQ: exp.NEQ,
    exp.NEQ: exp.EQ,
    exp.LT: exp.GTE,
    exp.GTE: exp.LT,
    exp.GT: exp.LTE,
    exp.LTE: exp.GT,
}
_MAX_TEXT: Final = 120


def check_predicates(tree: exp.Expr, dialect: str) -> list[Refusal]:
    """Reasons to refuse ``tree`` for an always-true or constant filter; empty if none."""
    reasons: list[Refusal] = []
    try:
        for node in tree.walk():
            if isinstance(node, exp.Where | exp.Having | exp.Qualify):
                reasons.extend(_scan(node.this, dialect))
            elif isinstance(node, exp.Join):
                on = node.args.get("on")
                if on is None or (isinstance(node.this, exp.Lateral) and _is_true_literal(on)):
                    continue  # LEFT JOIN LATERAL (...) ON TRUE is how PostgreSQL spells it
                found = list(_scan(on, dialect))
                if found and _is_constant(on):  # JOIN ... ON 1 = 1 means every pair
                    hint = "; to pair every row write CROSS JOIN"
                    found = [Refusal(r.code, r.message + hint) for r in found]
                reasons.extend(found)
    except RecursionError:  # AND/OR chains are flat; only absurd nesting of other kinds gets here
        return [Refusal(SqlCode.UNCHECKABLE, "a condition is nested too deeply to be checked")]
    return list(dict.fromkeys(reasons))


def _is_true_literal(node: exp.Expr) -> bool:
    return isinstance(node, exp.Boolean) and node.this is True


def _text(node: exp.Expr, dialect: str) -> str:
    text = node.sql(dialect=dialect)
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 3] + "..."


def _scan(node: exp.Expr, dialect: str) -> Iterator[Refusal]:
    """Refusals for a condition: each constant part, else the deepest always-true part.

    An AND or OR chain is taken as one list of operands (however long, without recursion).
    """
    node = _strip(node)
    # a condition built only of constants (NOT 0, 1 = 1 AND 2 = 2) is judged whole
    compound = isinstance(node, exp.And | exp.Or | exp.Not) and not _is_constant(node)
    if compound:
        below: list[Refusal] = []
        children = [node.this] if isinstance(node, exp.Not) else _parts(node, type(node))
        for child in children:
            below.extend(_scan(child, dialect))
        yield from below
        if any(r.code is SqlCode.TAUTOLOGY for r in below):
            return  # the always-true part was named already
    always = truth(node) is True
    if not compound and _is_constant(node):
        code = SqlCode.TAUTOLOGY if always else SqlCode.CONSTANT_CONDITION
        yield Refusal(
            code,
            f"condition {_text(node, dialect)!r} does not depend on the row"
            + (" (it is always true)" if always else ""),
        )
    elif always:
        yield Refusal(
            SqlCode.TAUTOLOGY,
            f"condition {_text(node, dialect)!r} is always true: a filter must depend on the row",
        )


def _is_constant(node: exp.Expr) -> bool:
    """True when ``node`` is the same for every row of its query: it reads no column of it.

    The clock counts as constant (``OR current_date > '2000-01-01'`` is as true as ``OR 1``),
    and so does a subquery that does not refer to the outer row (``OR EXISTS (SELECT 1 FROM
    orders)``). A parameter, an aggregate or a window varies, and so may a subquery naming a
    column it does not qualify with one of its own tables.
    """
    stack = [node]
    while stack:
        sub = stack.pop()
        if isinstance(sub, exp.Column | exp.Placeholder | exp.Parameter | exp.AggFunc | exp.Window):
            return False
        if isinstance(sub, exp.Query):
            if _correlated(sub):
                return False
            continue
        stack.extend(sub.iter_expressions())
    return True


def _correlated(query: exp.Query) -> bool:
    """Whether ``query`` may read the outer row (unqualified names are assumed to)."""
    own = {t.alias_or_name for t in query.find_all(exp.Table)}
    own |= {s.alias_or_name for s in query.find_all(exp.Subquery, exp.CTE) if s.alias_or_name}
    for node in query.find_all(exp.Column, exp.Placeholder, exp.Parameter):
        if not isinstance(node, exp.Column) or not node.table or node.table not in own:
            return True
    return False


def _scalar(node: exp.Expr | None) -> exp.Expr | None:
    """The projection of ``(SELECT expr)``: a subquery that reads no table is just its value."""
    if not isinstance(node, exp.Subquery) or not isinstance(node.this, exp.Select):
        return None
    select = node.this
    if len(select.expressions) != 1 or any(
        select.args.get(k) for k in ("from", "joins", "where", "group", "having", "qualify")
    ):
        return None
    projection: exp.Expr = select.expressions[0]
    if isinstance(projection, exp.Alias):
        projection = projection.this
    return projection


def _strip(node: exp.Expr) -> exp.Expr:
    while True:
        if isinstance(node, exp.Paren):
            node = node.this
            continue
        inner = _scalar(node)
        if inner is None:
            return node
        node = inner


# --- truth of a condition -------------------------------------------------------------------


def truth(node: exp.Expr) -> Truth:
    """True or False when the condition's outcome is the same for every row, else None."""
    node = _strip(node)
    if isinstance(node, exp.And):
        truths = [truth(p) for p in _parts(node, exp.And)]
        if any(t is False for t in truths):
            return False
        return True if all(t is True for t in truths) else None
    if isinstance(node, exp.Or):
        return _or_truth(node)
    if isinstance(node, exp.Not):
        inner = truth(node.this)
        return None if inner is None else not inner
    if isinstance(node, _COMPARE):
        return _compare_truth(node)
    if isinstance(node, exp.Like | exp.ILike | exp.Glob):
        return _like_truth(node)
    if isinstance(node, exp.Is):
        return _is_truth(node)
    if isinstance(node, exp.In):
        return _in_truth(node)
    if isinstance(node, exp.Between):
        return _between_truth(node)
    return _truthy(value(node))


def _parts(node: exp.Expr, kind: type[exp.Expr]) -> list[exp.Expr]:
    """The operands of a chain of ``kind`` (AND or OR) in order, parentheses looked through."""
    out: list[exp.Expr] = []
    stack = [node]
    while stack:
        item = _strip(stack.pop())
        if isinstance(item, kind):
            stack.extend((item.expression, item.this))
        else:
            out.append(item)
    return out


def _or_truth(node: exp.Or) -> Truth:
    parts = _parts(node, exp.Or)
    truths = [truth(p) for p in parts]
    if any(t is True for t in truths):
        return True
    if _has_complement(parts):
        return True
    return False if all(t is False for t in truths) else None


def _has_complement(parts: list[exp.Expr]) -> bool:
    """``p OR NOT p``, ``e IS NULL OR e IS NOT NULL``, ``a = b OR a <> b`` and the like.

    Each operand is keyed by its shape and its operands' SQL, so the check is one pass.
    """
    keys: set[tuple[str, ...]] = set()
    opposites: set[tuple[str, ...]] = set()
    for part in parts:
        key, against = _key(part), _opposites(part)
        if key in opposites or any(o in keys for o in against):
            return True
        keys.add(key)
        opposites.update(against)
    return False


def _key(part: exp.Expr) -> tuple[str, ...]:
    if isinstance(part, exp.Not):
        return ("not", *_key(_strip(part.this)))
    if isinstance(part, exp.Is):
        negate = str(bool(part.args.get("negate")))
        return ("is", negate, part.this.sql(), part.expression.sql())
    if type(part) in _COMPLEMENT:
        return (type(part).__name__, part.this.sql(), part.expression.sql())
    return ("atom", part.sql())


def _opposites(part: exp.Expr) -> list[tuple[str, ...]]:
    """The keys an operand's complement may have."""
    if isinstance(part, exp.Not):
        return [_key(_strip(part.this))]
    out = [("not", *_key(part))]
    if isinstance(part, exp.Is):
        negate = str(not part.args.get("negate"))
        out.append(("is", negate, part.this.sql(), part.expression.sql()))
    opposite = _COMPLEMENT.get(type(part))
    if opposite is not None:
        out.append((opposite.__name__, part.this.sql(), part.expression.sql()))
    return out


def _compare_truth(node: exp.Expr) -> Truth:
    left, right = value(node.this), value(node.expression)
    if isinstance(left, _Unknown) or isinstance(right, _Unknown):
        if node.this == node.expression:
            return isinstance(node, _REFLEXIVE)
        return None
    if isinstance(node, exp.NullSafeEQ):
        return (left is None and right is None) or _equal(left, right) is True
    if isinstance(node, exp.EQ):
        return _equal(left, right)
    if isinstance(node, exp.NEQ):
        eq = _equal(left, right)
        return None if eq is None else not eq
    order = _order(left, right)
    if order is None:
        return None
    if isinstance(node, exp.GT):
        return order > 0
    if isinstance(node, exp.GTE):
        return order >= 0
    if isinstance(node, exp.LT):
        return order < 0
    return order <= 0


def _like_truth(node: exp.Like | exp.ILike | exp.Glob) -> Truth:
    subject, pattern = value(node.this), value(node.expression)
    if node.this == node.expression:
        return True
    glob = isinstance(node, exp.Glob)
    if isinstance(pattern, str) and pattern and set(pattern) <= ({"*"} if glob else {"%"}):
        return None if subject is None else True  # matches every value there is
    if isinstance(subject, _Unknown) or isinstance(pattern, _Unknown):
        return None
    if subject is None or pattern is None:
        return None
    regex = _glob_regex(str(pattern)) if glob else _like_regex(str(pattern))
    return regex.fullmatch(str(subject)) is not None


def _like_regex(pattern: str) -> re.Pattern[str]:
    out = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.compile(out, re.S | re.I)


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(out, re.S | re.I)


def _is_truth(node: exp.Is) -> Truth:
    target = node.expression
    subject = value(node.this)
    negate = bool(node.args.get("negate"))
    if isinstance(subject, _Unknown):
        return None
    if isinstance(target, exp.Null):
        result = subject is None
    elif isinstance(target, exp.Boolean):
        result = _truthy(subject) is target.this
    else:
        return None
    return not result if negate else result


def _in_truth(node: exp.In) -> Truth:
    if node.args.get("query") is not None or node.args.get("unnest") is not None:
        return None
    items = node.expressions
    if any(item == node.this for item in items):
        return True
    subject = value(node.this)
    values = [value(i) for i in items]
    if isinstance(subject, _Unknown) or any(isinstance(v, _Unknown) for v in values):
        return None
    if any(_equal(subject, v) is True for v in values):  # type: ignore[arg-type]
        return True
    return False if subject is not None and None not in values else None


def _between_truth(node: exp.Between) -> Truth:
    low, high = node.args.get("low"), node.args.get("high")
    if low == node.this and high == node.this:
        return True
    if low is None or high is None:
        return None
    x, lo, hi = value(node.this), value(low), value(high)
    if isinstance(x, _Unknown) or isinstance(lo, _Unknown) or isinstance(hi, _Unknown):
        return None
    first, second = _order(x, lo), _order(x, hi)
    if first is None or second is None:
        return None
    return first >= 0 and second <= 0


def _truthy(v: Value) -> Truth:
    """A constant used as a condition, true if any supported database would take it as true."""
    if isinstance(v, _Unknown) or v is None:
        return None
    if isinstance(v, bool):
        return v
    if isinstance(v, int | float):
        return v != 0
    if v.strip().lower() in _TRUE_WORDS:
        return True
    match = _NUMBER_PREFIX.match(v)  # SQLite reads '1abc' as 1
    return match is not None and float(match.group(0)) != 0


# --- constant values ------------------------------------------------------------------------


def value(node: exp.Expr) -> Value:
    """The constant ``node`` always evaluates to, or UNKNOWN."""
    node = _strip(node)
    if isinstance(node, exp.Literal):
        return node.this if node.is_string else _number(node.this)
    if isinstance(node, exp.Boolean):
        return bool(node.this)
    if isinstance(node, exp.Null):
        return None
    if isinstance(node, exp.Neg):
        inner = _num(value(node.this))
        return UNKNOWN if inner is None else -inner
    if isinstance(node, exp.Add | exp.Sub | exp.Mul | exp.Div | exp.Mod):
        return _arith(node)
    if isinstance(node, exp.DPipe | exp.Concat):
        return _concat(node)
    if isinstance(node, exp.Cast | exp.TryCast):
        return _cast(value(node.this), node.to)
    if isinstance(node, exp.Coalesce):
        for arg in [node.this, *node.expressions]:
            first = value(arg)
            if first is not None:
                return first
        return None
    if isinstance(node, exp.Lower | exp.Upper):
        text = value(node.this)
        if isinstance(text, str):
            return text.lower() if isinstance(node, exp.Lower) else text.upper()
        return UNKNOWN
    if isinstance(node, exp.And | exp.Or | exp.Not | exp.Is | exp.In | exp.Between):
        return _as_value(node)
    if isinstance(node, (*_COMPARE, exp.Like, exp.ILike, exp.Glob)):
        return _as_value(node)
    return UNKNOWN


def _as_value(node: exp.Expr) -> Value:
    """A condition used as a value: its truth when every row gets the same one."""
    t = truth(node)
    return UNKNOWN if t is None else t


def _number(text: str) -> Value:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        f = float(text)
    except ValueError:
        return UNKNOWN
    return f if math.isfinite(f) else UNKNOWN


def _num(v: Value) -> int | float | None:
    """``v`` as a number when any supported database would read it as one."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int | float):
        return v
    if isinstance(v, str):
        n = _number(v.strip())
        return n if isinstance(n, int | float) else None
    return None


def _equal(a: Const, b: Const) -> bool | None:
    if a is None or b is None:
        return None
    if a == b:
        return True
    na, nb = _num(a), _num(b)
    if na is not None and nb is not None and na == nb:
        return True
    # MySQL-style case- and trailing-space-insensitive collations count as equal too
    return isinstance(a, str) and isinstance(b, str) and a.rstrip().lower() == b.rstrip().lower()


def _order(a: Const, b: Const) -> int | None:
    if a is None or b is None:
        return None
    na, nb = _num(a), _num(b)
    if na is not None and nb is not None:
        return (na > nb) - (na < nb)
    sa, sb = str(a), str(b)
    return (sa > sb) - (sa < sb)


def _arith(node: exp.Expr) -> Value:
    left, right = value(node.this), value(node.expression)
    if left is None or right is None:
        return None
    a, b = _num(left), _num(right)
    if a is None or b is None:
        return UNKNOWN
    if isinstance(node, exp.Add):
        return a + b
    if isinstance(node, exp.Sub):
        return a - b
    if isinstance(node, exp.Mul):
        return a * b
    if b == 0:
        return None  # SQLite gives NULL; PostgreSQL raises, which returns no row either
    if isinstance(node, exp.Mod):
        return math.fmod(a, b)
    return a / b if isinstance(a, float) or isinstance(b, float) else int(a / b)


def _concat(node: exp.Expr) -> Value:
    parts = [node.this, node.expression] if isinstance(node, exp.DPipe) else node.expressions
    out = []
    for part in parts:
        v = value(part)
        if v is None:
            return None
        if isinstance(v, _Unknown):
            return UNKNOWN
        out.append(str(v).lower() if isinstance(v, bool) else str(v))
    return "".join(out)


def _cast(v: Value, to: exp.DataType | None) -> Value:
    if isinstance(v, _Unknown) or v is None or to is None:
        return v
    kind = to.this
    if kind == exp.DataType.Type.BOOLEAN:
        return _truthy(v)
    if kind in exp.DataType.INTEGER_TYPES:
        n = _num(v)
        return UNKNOWN if n is None else int(n)
    if kind in exp.DataType.TEXT_TYPES:
        return str(v).lower() if isinstance(v, bool) else str(v)
    return v

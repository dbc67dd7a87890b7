"""Find comments in raw SQL text, because sqlglot drops or moves them and they hide payloads.

Hand-written on purpose: a comment can only be judged by where string literals end, and no
library exposes a lexer that reports comments as tokens for every dialect. The scanner errs on
the safe side: where the database might see a comment, it reports one.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["find_comment"]

_DOLLAR_TAG: Final = re.compile(r"\$([A-Za-z_][A-Za-z_0-9]*)?\$")
_BACKSLASH_DIALECTS: Final = frozenset({"mysql", "bigquery", "spark", "databricks", "hive"})
_HASH_DIALECTS: Final = frozenset({"mysql", "bigquery", "hive", "spark", "databricks"})


def _skip_quoted(sql: str, i: int, quote: str, backslash: bool) -> int:
    """Index just past the quoted run starting at ``sql[i]``; doubled quotes stay inside."""
    n = len(sql)
    j = i + 1
    while j < n:
        ch = sql[j]
        if backslash and ch == "\\":
            j += 2
            continue
        if ch == quote:
            if j + 1 < n and sql[j + 1] == quote:
                j += 2
                continue
            return j + 1
        j += 1
    return n


def find_comment(sql: str, dialect: str = "postgres") -> str | None:
    """The first comment marker outside literals and quoted identifiers, or None."""
    backslash_strings = dialect in _BACKSLASH_DIALECTS
    hash_comments = dialect in _HASH_DIALECTS
    dollar_quotes = dialect == "postgres"
    n = len(sql)
    i = 0
    while i < n:
        ch = sql[i]
        two = sql[i : i + 2]
        if two in ("--", "/*"):
            return two
        if ch == "#" and hash_comments:
            return "#"
        if ch == "'":
            escaped = backslash_strings or (i > 0 and sql[i - 1] in "eE" and _word_start(sql, i))
            i = _skip_quoted(sql, i, "'", escaped)
        elif ch in ('"', "`"):
            i = _skip_quoted(sql, i, ch, backslash_strings)
        elif ch == "$" and dollar_quotes:
            match = _DOLLAR_TAG.match(sql, i)
            if match is None or (i > 0 and (sql[i - 1].isalnum() or sql[i - 1] in "_$")):
                i += 1
                continue
            end = sql.find(match.group(0), match.end())
            i = n if end < 0 else end + len(match.group(0))
        else:
            i += 1
    return None


def _word_start(sql: str, quote_at: int) -> bool:
    """True when the ``E`` before a quote is a string prefix, not the end of an identifier."""
    k = quote_at - 2
    return k < 0 or not (sql[k].isalnum() or sql[k] == "_")

"""Run model-written SQL only after validation, and only where the database itself forbids writes.

Validation is the first wall; the second is the database: PostgreSQL runs the query in a
``READ ONLY`` transaction, SQLite under ``PRAGMA query_only``. Either wall alone would stop a
write the other missed.

The database also enforces the limits, because a query the validator accepts can still be
costly (a self-join over a big table, a recursive CTE that never ends):

- time: PostgreSQL's ``statement_timeout``; on SQLite a progress handler that aborts the
  statement inside the database's own thread (cancelling the awaiting task would leave it
  running there). A client-side deadline backs both up.
- bytes: a result may hold at most ``max_bytes``, counted while rows stream in so memory stays
  bounded. PostgreSQL counts each row's text size as it produces rows and raises as soon as
  the total passes the cap, before that row is sent; rows come through a server-side cursor
  in batches, so at most the cap's worth of rows is ever held. SQLite caps every single value
  with ``SQLITE_LIMIT_LENGTH`` (a 100 MB string fails, or for ``printf`` comes back NULL,
  inside SQLite) and the rows are counted one by one as they are stepped. Passing the cap
  raises ``SqlResultTooLarge``: a silently truncated answer would be taken as the whole one.
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import aiosqlite

from bastion.errors import UnprocessableRequest

from .sql import SqlPolicy, validate_sql

__all__ = ["DEFAULT_MAX_BYTES", "SqlResultTooLarge", "SqlTimedOut", "execute_validated"]

DEFAULT_MAX_BYTES: Final = 1 << 20
_BATCH: Final = 50  # rows per PostgreSQL cursor fetch
_PROGRESS_STEPS: Final = 1000  # SQLite VM instructions between deadline checks
_OVER_CAP: Final = "bastion_result_over_cap"


class SqlResultTooLarge(UnprocessableRequest):
    """The result would pass ``max_bytes``; nothing is returned rather than a part of it."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        super().__init__(
            f"SQL result is larger than {max_bytes} bytes: select fewer rows or columns, "
            "or aggregate"
        )


class SqlTimedOut(UnprocessableRequest):
    """The database stopped the query at its deadline."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        super().__init__(f"SQL query ran longer than {timeout:g}s and was stopped")


async def execute_validated(
    conn: Any,
    sql: str,
    policy: SqlPolicy,
    roles: Iterable[str],
    *,
    args: Sequence[Any] = (),
    params: Mapping[str, Any] | None = None,
    timeout: float = 5.0,
    dialect: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> list[dict[str, Any]]:
    """Validate ``sql`` for ``roles`` and run the rewritten query read-only.

    Raises ``SqlRejected`` (validation), ``SqlTimedOut`` (past ``timeout`` seconds) or
    ``SqlResultTooLarge`` (past ``max_bytes`` of row data). ``conn`` is an asyncpg connection
    (or pool connection) or an aiosqlite connection; the dialect defaults to the connection's.
    It must not be inside a transaction already, since a nested block cannot be made read-only.
    ``params`` holds the values of the policy's row rules (``{"caller": 42}``); they are bound
    as parameters after ``args``, never written into the SQL.
    """
    if max_bytes < 1:
        raise ValueError("max_bytes must be >= 1")
    is_sqlite = isinstance(conn, aiosqlite.Connection)
    d = dialect or ("sqlite" if is_sqlite else policy.dialect)
    verdict = validate_sql(sql, policy, roles, dialect=d)
    checked = verdict.raise_for_rejection()
    bound = verdict.bind(args, params or {})
    if is_sqlite:
        return await _run_sqlite(conn, checked, bound, timeout, policy.max_rows, max_bytes)
    return await _run_postgres(conn, checked, bound, timeout, policy.max_rows, max_bytes)


async def _run_postgres(
    conn: Any,
    sql: str,
    args: Sequence[Any],
    timeout: float,
    max_rows: int,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> list[dict[str, Any]]:
    import asyncpg  # conn is asyncpg's, so it is loaded: a SQLite deployment never pays for it

    if conn.is_in_transaction():
        raise ValueError("execute_validated needs a connection outside any transaction")
    rows: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(timeout + 1.0), conn.transaction(readonly=True):
            if await conn.fetchval("SHOW transaction_read_only") != "on":
                raise RuntimeError("PostgreSQL did not make the transaction read-only")
            await conn.execute(f"SET LOCAL statement_timeout = {max(1, int(timeout * 1000))}")
            cursor = conn.cursor(_sized(sql, max_bytes), *args, prefetch=min(_BATCH, max_rows))
            async for record in cursor:
                *fields, (_, total) = record.items()
                if total > max_bytes:  # the server raises first; kept in case it ever does not
                    raise SqlResultTooLarge(max_bytes)
                rows.append(dict(fields))
                if len(rows) >= max_rows:
                    break
    except asyncpg.QueryCanceledError as exc:
        raise SqlTimedOut(timeout) from exc
    except TimeoutError as exc:
        raise SqlTimedOut(timeout) from exc
    except asyncpg.InvalidTextRepresentationError as exc:
        if _OVER_CAP in str(exc):
            raise SqlResultTooLarge(max_bytes) from exc
        raise
    return rows


def _sized(sql: str, max_bytes: int) -> str:
    """``sql`` with a running byte count as its last column; past ``max_bytes`` it raises.

    The count is each row's text size summed in the order rows are produced, kept in a
    transaction-local setting: a window function would spool every row before the first one
    (minutes for a few huge values), the setting streams. The error is raised while PostgreSQL
    computes the row that passes the cap, so that row is never sent. ``OFFSET 0`` keeps the
    count from being computed twice per row or filtered early; the query is wrapped as a CTE,
    not a subquery, so a write smuggled past validation still reaches the read-only
    transaction and fails there. Names are random so the query cannot shadow them.
    """
    tag = f"_bastion_{secrets.token_hex(6)}"
    counter = f"bastion.result_bytes{tag}"
    running = (
        f"set_config('{counter}', (coalesce(nullif(current_setting('{counter}', true), ''), "
        f"'0')::bigint + octet_length({tag}_q::text))::text, true)::bigint"
    )
    return (
        f"WITH {tag}_q AS ({sql}) "
        f"SELECT * FROM (SELECT {tag}_q.*, {running} AS {tag}_n FROM {tag}_q OFFSET 0) {tag}_s "
        f"WHERE CASE WHEN {tag}_s.{tag}_n > {int(max_bytes)} "
        f"THEN ('{_OVER_CAP}:' || {tag}_s.{tag}_n)::int = 0 ELSE true END"
    )


async def _run_sqlite(
    conn: aiosqlite.Connection,
    sql: str,
    args: Sequence[Any],
    timeout: float,
    max_rows: int,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> list[dict[str, Any]]:
    # aiosqlite has no public way to set SQLite limits or to step a cursor row by row in its
    # thread; its queue-a-callable method runs the whole read there, where the limits live.
    run: Any = conn
    deadline = time.monotonic() + timeout
    try:
        async with asyncio.timeout(timeout + 1.0):
            try:
                result: list[dict[str, Any]] = await run._execute(
                    _read_sqlite, run._conn, sql, tuple(args), deadline, max_rows, max_bytes
                )
            except asyncio.CancelledError:
                await conn.interrupt()
                raise
    except TimeoutError as exc:
        raise SqlTimedOut(timeout) from exc
    except sqlite3.OperationalError as exc:
        if "interrupted" in str(exc):
            raise SqlTimedOut(timeout) from exc
        raise
    except sqlite3.DataError as exc:
        if "too big" in str(exc):
            raise SqlResultTooLarge(max_bytes) from exc
        raise
    return result


def _read_sqlite(
    db: sqlite3.Connection,
    sql: str,
    args: tuple[Any, ...],
    deadline: float,
    max_rows: int,
    max_bytes: int,
) -> list[dict[str, Any]]:
    """Run in the connection's thread: read-only, deadline and value cap set, then restored."""
    query_only = int(db.execute("PRAGMA query_only").fetchone()[0])
    length = db.getlimit(sqlite3.SQLITE_LIMIT_LENGTH)
    db.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, min(length, max_bytes))
    db.execute("PRAGMA query_only = ON")
    db.set_progress_handler(lambda: time.monotonic() > deadline, _PROGRESS_STEPS)
    cursor = None
    try:
        cursor = db.execute(sql, args)
        names = [d[0] for d in cursor.description or ()]
        rows: list[dict[str, Any]] = []
        total = 0
        while len(rows) < max_rows:
            row = cursor.fetchone()
            if row is None:
                break
            total += sum(_value_size(v) for v in row)
            if total > max_bytes:
                raise SqlResultTooLarge(max_bytes)
            rows.append(dict(zip(names, row, strict=True)))
        return rows
    finally:
        if cursor is not None:
            cursor.close()
        db.set_progress_handler(None, 0)
        db.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, length)
        db.execute(f"PRAGMA query_only = {query_only}")


def _value_size(value: object) -> int:
    """Bytes a value takes in a result, about as SQLite stores it."""
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, bytes | bytearray | memoryview):
        return len(value)
    return 8

"""Run model-written SQL only after validation, and only where the database itself forbids writes.

Validation is the first wall; the second is the database: PostgreSQL runs the query in a
``READ ONLY`` transaction with a statement timeout, SQLite under ``PRAGMA query_only``. Either
wall alone would stop a write the other missed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

import aiosqlite

from .sql import SqlPolicy, validate_sql

__all__ = ["execute_validated"]


async def execute_validated(
    conn: Any,
    sql: str,
    policy: SqlPolicy,
    roles: Iterable[str],
    *,
    args: Sequence[Any] = (),
    timeout: float = 5.0,
    dialect: str | None = None,
) -> list[dict[str, Any]]:
    """Validate ``sql`` for ``roles`` and run the rewritten query read-only; raise ``SqlRejected``.

    ``conn`` is an asyncpg connection (or pool connection) or an aiosqlite connection; the
    dialect defaults to the connection's. It must not be inside a transaction already, since a
    nested block cannot be made read-only.
    """
    is_sqlite = isinstance(conn, aiosqlite.Connection)
    d = dialect or ("sqlite" if is_sqlite else policy.dialect)
    checked = validate_sql(sql, policy, roles, dialect=d).raise_for_rejection()
    if is_sqlite:
        return await _run_sqlite(conn, checked, args, timeout, policy.max_rows)
    return await _run_postgres(conn, checked, args, timeout, policy.max_rows)


async def _run_postgres(
    conn: Any, sql: str, args: Sequence[Any], timeout: float, max_rows: int
) -> list[dict[str, Any]]:
    if conn.is_in_transaction():
        raise ValueError("execute_validated needs a connection outside any transaction")
    async with conn.transaction(readonly=True):
        if await conn.fetchval("SHOW transaction_read_only") != "on":
            raise RuntimeError("PostgreSQL did not make the transaction read-only")
        await conn.execute(f"SET LOCAL statement_timeout = {max(1, int(timeout * 1000))}")
        rows = await conn.fetch(sql, *args, timeout=timeout + 1.0)
    return [dict(r) for r in rows[:max_rows]]


async def _run_sqlite(
    conn: aiosqlite.Connection, sql: str, args: Sequence[Any], timeout: float, max_rows: int
) -> list[dict[str, Any]]:
    async with conn.execute("PRAGMA query_only") as cur:
        row = await cur.fetchone()
    previous = int(row[0]) if row else 0
    await conn.execute("PRAGMA query_only = ON")
    try:
        async with asyncio.timeout(timeout):
            try:
                async with conn.execute(sql, tuple(args)) as cur:
                    names = [d[0] for d in cur.description or ()]
                    fetched = await cur.fetchmany(max_rows)
            except asyncio.CancelledError:
                await conn.interrupt()
                raise
    finally:
        await conn.execute(f"PRAGMA query_only = {previous}")
    return [dict(zip(names, r, strict=True)) for r in fetched]

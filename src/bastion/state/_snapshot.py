"""The SQLite file behind the embedded counter store, so a restart keeps today's counters.

It is written behind (the store batches dirty keys) and read once at start; it is never on
the hot path. One table per kind of state, keyed by the counter key, rows replaced whole.
The ``flags`` table is the exception: it is written through and re-read by ``_flag_file``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import aiosqlite

from bastion.errors import StateUnavailable

__all__ = ["TABLES", "Snapshot", "SnapshotFile"]

Row = tuple[Any, ...]

# table -> columns; the first column is the key, ``expires_at`` (if any) is wall-clock seconds.
TABLES: Final[Mapping[str, tuple[str, ...]]] = {
    "caps": ("key", "settled", "expires_at"),
    "counters": ("key", "value", "expires_at"),
    "flags": ("key", "value", "meta"),
    "idem": ("key", "fingerprint", "done", "lock_until", "response", "expires_at"),
}

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS caps (key TEXT PRIMARY KEY, settled REAL NOT NULL,"
    " expires_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, value REAL NOT NULL,"
    " expires_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS flags (key TEXT PRIMARY KEY, value TEXT, meta BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS idem (key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL,"
    " done INTEGER NOT NULL, lock_until REAL NOT NULL, response BLOB, expires_at REAL NOT NULL)",
)


@dataclass(slots=True)
class Snapshot:
    """Unexpired rows per table, as loaded at start."""

    rows: dict[str, list[Row]] = field(default_factory=dict)


class SnapshotFile:
    """One aiosqlite connection, used by one background writer at a time."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._conn: aiosqlite.Connection | None = None

    async def open(self, now: float) -> Snapshot:
        """Create the schema, drop expired rows, and return what is left."""
        try:
            self._conn = await aiosqlite.connect(self._path, isolation_level=None)
            await self._conn.execute("PRAGMA journal_mode=WAL")
            await self._conn.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                await self._conn.execute(statement)
            snapshot = Snapshot()
            for table, columns in TABLES.items():
                if "expires_at" in columns:
                    await self._conn.execute(f"DELETE FROM {table} WHERE expires_at <= ?", (now,))
                cursor = await self._conn.execute(f"SELECT {', '.join(columns)} FROM {table}")
                snapshot.rows[table] = [tuple(row) for row in await cursor.fetchall()]
            return snapshot
        except (sqlite3.Error, OSError) as exc:
            await self.close()
            raise StateUnavailable(f"counter state file {self._path!r}: {exc}") from exc

    async def write(
        self, upserts: Mapping[str, Sequence[Row]], deletes: Mapping[str, Sequence[str]]
    ) -> None:
        """Apply one batch in one transaction, so a crash leaves the previous batch whole."""
        conn = self._conn
        if conn is None:
            raise StateUnavailable(f"counter state file {self._path!r} is closed")
        try:
            await conn.execute("BEGIN IMMEDIATE")
            try:
                for table, keys in deletes.items():
                    if keys:
                        await conn.executemany(
                            f"DELETE FROM {table} WHERE key = ?", [(k,) for k in keys]
                        )
                for table, rows in upserts.items():
                    if rows:
                        columns = TABLES[table]
                        marks = ", ".join("?" for _ in columns)
                        await conn.executemany(
                            f"INSERT OR REPLACE INTO {table} ({', '.join(columns)})"
                            f" VALUES ({marks})",
                            rows,
                        )
                await conn.execute("COMMIT")
            except BaseException:
                await conn.execute("ROLLBACK")
                raise
        except (sqlite3.Error, OSError) as exc:
            raise StateUnavailable(f"counter state file {self._path!r}: {exc}") from exc

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

"""The flags table of the embedded state file, shared live between processes.

Counters are written behind, but a flag is an operator's order (the kill switch): the CLI
and every gateway process on the same file must see a flip within a poll. So flags are
written through at once and re-read whenever another connection has committed; the
connection's ``data_version`` tells that. A poll is one statement (the version joined with
the rows, one read transaction), so it costs one trip to the connection's thread, not the
four an execute-then-fetch of a pragma and a select took: the rows are decoded only when
the version moved.

It has its own connection (its own aiosqlite thread): a poll never queues behind a
write-behind batch, and a WAL reader never waits for a writer.
"""

from __future__ import annotations

import asyncio
import sqlite3

import aiosqlite

from bastion.errors import StateUnavailable
from bastion.state._snapshot import Row

__all__ = ["FlagFile"]

# one row even when the table is empty, so the version always comes back
_POLL = (
    "SELECT v.data_version, f.key, f.value, f.meta"
    " FROM pragma_data_version AS v LEFT JOIN flags AS f"
)


class FlagFile:
    """Write-through and change-polled access to the ``flags`` table (created by the snapshot)."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._conn: aiosqlite.Connection | None = None
        self._version: int | None = None
        # one operation at a time, so a re-read started before a write never lands after it
        self._lock = asyncio.Lock()

    async def open(self) -> list[Row]:
        """Connect and return every flag row (set or cleared, with its meta)."""
        try:
            self._conn = await aiosqlite.connect(self._path, isolation_level=None)
        except (sqlite3.Error, OSError) as exc:
            raise self._unavailable(exc) from exc
        rows = await self.changed()
        return [] if rows is None else rows

    async def changed(self) -> list[Row] | None:
        """Every flag row if another connection committed since the last read, else None."""
        conn = self._connection()
        async with self._lock:
            try:
                found = list(await conn.execute_fetchall(_POLL))
            except (sqlite3.Error, OSError) as exc:
                raise self._unavailable(exc) from exc
            version = int(found[0][0]) if found else None
            if version is not None and version == self._version:
                return None
            self._version = version
            # meta is NOT NULL in the table: a NULL one is the empty join, not a flag
            return [tuple(row[1:]) for row in found if row[3] is not None]

    async def write(self, key: str, value: str | None, meta: bytes) -> None:
        """Replace one flag's row now (autocommit), so other processes see it at their next poll."""
        conn = self._connection()
        async with self._lock:
            try:
                await conn.execute(
                    "INSERT OR REPLACE INTO flags (key, value, meta) VALUES (?, ?, ?)",
                    (key, value, meta),
                )
            except (sqlite3.Error, OSError) as exc:
                raise self._unavailable(exc) from exc

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    def _connection(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise StateUnavailable(f"counter state file {self._path!r} is closed")
        return self._conn

    def _unavailable(self, exc: BaseException) -> StateUnavailable:
        return StateUnavailable(f"counter state file {self._path!r} (flags): {exc}")

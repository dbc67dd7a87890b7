"""The embedded record store: one SQLite file in WAL mode, so ``bastion serve`` needs no server.

One connection is shared and every operation holds an ``asyncio.Lock``: aiosqlite runs each
statement on its own thread in order, but without the lock two coroutines' statements could
interleave inside one transaction. Transactions are explicit (``isolation_level=None`` plus
``BEGIN IMMEDIATE``), so a writer takes SQLite's write lock up front instead of failing on
upgrade, which also makes ``migrate()`` safe when two processes share the file.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import aiosqlite
import orjson

from bastion.errors import Conflict, NotFound, StateUnavailable
from bastion.store._rows import (
    CALL_COLUMNS,
    KEY_COLUMNS,
    KEY_MUTABLE_COLUMNS,
    LEDGER_COLUMNS,
    call_from_row,
    call_to_row,
    group_column,
    key_from_row,
    key_mutable_values,
    key_to_row,
    ledger_to_row,
    unique_by_request_id,
)
from bastion.store.migrations import MIGRATIONS, SQLITE_BOOTSTRAP
from bastion.store.models import CallRecord, GroupBy, KeyRecord, LedgerEntry, PromptVersion

__all__ = ["SQLiteStore"]

MEMORY: Final = ":memory:"

# Primary result codes meaning "the database cannot be used right now", as opposed to a bug.
_UNAVAILABLE_CODES: Final = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_CORRUPT,
        sqlite3.SQLITE_NOTADB,
        sqlite3.SQLITE_PROTOCOL,
    }
)

_CALL_SELECT: Final = f"SELECT {', '.join(CALL_COLUMNS)} FROM calls"
_CALL_INSERT: Final = (
    f"INSERT INTO calls ({', '.join(CALL_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in CALL_COLUMNS)}) "
    "ON CONFLICT (request_id) DO NOTHING"
)
_LEDGER_INSERT: Final = (
    f"INSERT INTO ledger ({', '.join(LEDGER_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in LEDGER_COLUMNS)}) "
    "ON CONFLICT (request_id) DO NOTHING"
)
_KEY_SELECT: Final = f"SELECT {', '.join(KEY_COLUMNS)} FROM keys"
_KEY_INSERT: Final = (
    f"INSERT INTO keys ({', '.join(KEY_COLUMNS)}) VALUES ({', '.join('?' for _ in KEY_COLUMNS)})"
)


def _is_unavailable(exc: sqlite3.Error) -> bool:
    """Tell an outage (locked, disk, unopenable file) from a programming error."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return isinstance(exc, sqlite3.OperationalError) and "unable to open" in str(exc)
    return (code & 0xFF) in _UNAVAILABLE_CODES


_KEY_UPDATE: Final = (
    f"UPDATE keys SET {', '.join(f'{c} = ?' for c in KEY_MUTABLE_COLUMNS)} "
    "WHERE id = ? AND revoked_at IS NULL"
)


def _json_list(values: tuple[str, ...]) -> str:
    return orjson.dumps(list(values)).decode()


def _from_json_list(raw: Any) -> tuple[str, ...]:
    return tuple(orjson.loads(raw or "[]"))


def _key_from_row(row: Sequence[Any]) -> KeyRecord:
    """Rebuild a key; roles and models are stored as JSON arrays."""
    return key_from_row(row, _from_json_list)


async def _enable_wal(conn: aiosqlite.Connection, attempts: int = 50) -> None:
    """Switch a file to WAL. Two processes opening a new file at once can both try; the switch
    takes an exclusive lock without waiting on the busy handler, so retry briefly."""
    for i in range(attempts):
        try:
            await conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or i == attempts - 1:
                raise
            await asyncio.sleep(0.02 * (i + 1))


class SQLiteStore:
    """``RecordStore`` on one SQLite file (or ``:memory:``)."""

    def __init__(self, path: str, *, busy_timeout_ms: int = 5000) -> None:
        self._path = path
        self._busy_timeout_ms = int(busy_timeout_ms)
        self._conn: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    @property
    def path(self) -> str:
        """Where the data lives, for logs and ``bastion check``."""
        return self._path

    def __repr__(self) -> str:
        return f"SQLiteStore({self._path!r})"

    # -- connection ------------------------------------------------------------------------------

    def _unavailable(self, exc: BaseException) -> StateUnavailable:
        return StateUnavailable("the record store is unreachable")  # the cause has the path

    async def _open(self) -> aiosqlite.Connection:
        """Connect lazily so ``open_store`` stays synchronous and cheap."""
        if self._path != MEMORY:
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(self._path, isolation_level=None)
        try:
            await conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            if self._path != MEMORY:
                await _enable_wal(conn)
            await conn.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            await conn.close()
            raise
        return conn

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[aiosqlite.Connection]:
        """Hold the connection alone, and turn outages into ``StateUnavailable``."""
        async with self._lock:
            if self._closed:
                raise StateUnavailable("the record store is closed")
            try:
                if self._conn is None:
                    self._conn = await self._open()
                yield self._conn
            except sqlite3.Error as exc:
                if _is_unavailable(exc):
                    raise self._unavailable(exc) from exc
                raise
            except OSError as exc:
                raise self._unavailable(exc) from exc

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """Run a write atomically, taking the write lock at BEGIN rather than mid-way."""
        async with self._session() as conn:
            try:
                await conn.execute(
                    "BEGIN IMMEDIATE"
                )  # inside the try: a cancel here still rolls back
                yield conn
                await conn.execute("COMMIT")
            except BaseException:
                # A failed COMMIT (busy, disk) leaves the transaction open; never reuse it so.
                if conn.in_transaction:
                    await conn.execute("ROLLBACK")
                raise

    async def _fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Sequence[Any]]:
        async with self._session() as conn:
            return list(await conn.execute_fetchall(sql, tuple(params)))

    # -- lifecycle -------------------------------------------------------------------------------

    async def migrate(self) -> None:
        """Apply missing migrations, each with its version row in one transaction."""
        async with self._session() as conn:
            await conn.execute(SQLITE_BOOTSTRAP)
            rows = await conn.execute_fetchall("SELECT version FROM schema_migrations")
            applied = {r[0] for r in rows}
        for migration in MIGRATIONS:
            if migration.version in applied:
                continue
            async with self._transaction() as conn:
                # Re-check under the write lock: another process may have applied it meanwhile.
                done = await conn.execute_fetchall(
                    "SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)
                )
                if list(done):
                    continue
                for statement in migration.sqlite:
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, time.time()),
                )

    async def ping(self) -> None:
        """Run a trivial query so readiness reflects a usable database file."""
        await self._fetchall("SELECT 1")

    async def __aenter__(self) -> SQLiteStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection; later calls raise ``StateUnavailable``."""
        async with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
            if conn is not None:
                await conn.close()

    # -- keys ------------------------------------------------------------------------------------

    async def create_key(self, key: KeyRecord) -> None:
        """Insert a key; duplicates of id, hash or active name are a ``Conflict``."""
        row = key_to_row(key, _json_list)
        try:
            async with self._transaction() as conn:
                await conn.execute(_KEY_INSERT, row)
        except sqlite3.IntegrityError as exc:
            raise Conflict(
                f"key {key.id!r} ({key.name!r}) conflicts with an existing key's id, name or secret"
            ) from exc

    async def get_key_by_hash(self, key_hash: str) -> KeyRecord | None:
        rows = await self._fetchall(
            f"{_KEY_SELECT} WHERE key_hash = ? AND revoked_at IS NULL", (key_hash,)
        )
        return _key_from_row(rows[0]) if rows else None

    async def get_key(self, key_id: str) -> KeyRecord | None:
        rows = await self._fetchall(f"{_KEY_SELECT} WHERE id = ?", (key_id,))
        return _key_from_row(rows[0]) if rows else None

    async def list_keys(self, include_revoked: bool = False) -> list[KeyRecord]:
        where = "" if include_revoked else " WHERE revoked_at IS NULL"
        rows = await self._fetchall(f"{_KEY_SELECT}{where} ORDER BY created_at, id")
        return [_key_from_row(r) for r in rows]

    async def update_key(self, key: KeyRecord) -> bool:
        """Store an active key's limits and metadata; False if it is unknown or revoked."""
        async with self._transaction() as conn:
            cur = await conn.execute(_KEY_UPDATE, (*key_mutable_values(key, _json_list), key.id))
            return cur.rowcount > 0

    async def revoke_key(self, id_or_name: str) -> bool:
        """Revoke by id first, then by name, so an id never revokes a differently named key."""
        now = time.time()
        async with self._transaction() as conn:
            for column in ("id", "name"):
                cur = await conn.execute(
                    f"UPDATE keys SET revoked_at = ? WHERE {column} = ? AND revoked_at IS NULL",
                    (now, id_or_name),
                )
                if cur.rowcount > 0:
                    return True
        return False

    # -- calls -----------------------------------------------------------------------------------

    async def insert_calls(self, records: Sequence[CallRecord]) -> int:
        rows = [call_to_row(r) for r in unique_by_request_id(records)]
        if not rows:
            return 0
        async with self._transaction() as conn:
            cur = await conn.executemany(_CALL_INSERT, rows)
            return max(cur.rowcount, 0)

    async def get_calls_by_trace(self, trace_id: str) -> list[CallRecord]:
        rows = await self._fetchall(
            f"{_CALL_SELECT} WHERE trace_id = ? ORDER BY ts, request_id", (trace_id,)
        )
        return [call_from_row(r) for r in rows]

    async def recent_calls(self, limit: int, feature: str | None = None) -> list[CallRecord]:
        if limit <= 0:
            return []
        params: tuple[Any, ...] = (limit,) if feature is None else (feature, limit)
        where = "" if feature is None else " WHERE feature = ?"
        rows = await self._fetchall(
            f"{_CALL_SELECT}{where} ORDER BY ts DESC, request_id DESC LIMIT ?", params
        )
        return [call_from_row(r) for r in rows]

    async def delete_call_bodies_before(self, ts: float) -> int:
        async with self._transaction() as conn:
            cur = await conn.execute(
                "UPDATE calls SET input_text = NULL, output_text = NULL "
                "WHERE ts < ? AND (input_text IS NOT NULL OR output_text IS NOT NULL)",
                (ts,),
            )
            return cur.rowcount

    async def delete_calls_before(self, ts: float) -> int:
        async with self._transaction() as conn:
            cur = await conn.execute("DELETE FROM calls WHERE ts < ?", (ts,))
            return cur.rowcount

    # -- ledger ----------------------------------------------------------------------------------

    async def insert_ledger(self, entries: Sequence[LedgerEntry]) -> int:
        rows = [ledger_to_row(e) for e in unique_by_request_id(entries)]
        if not rows:
            return 0
        async with self._transaction() as conn:
            cur = await conn.executemany(_LEDGER_INSERT, rows)
            return max(cur.rowcount, 0)

    async def spend_by_day(
        self, day: str, group_by: GroupBy | None = None
    ) -> dict[str | None, float]:
        if group_by is None:
            rows = await self._fetchall(
                "SELECT COALESCE(SUM(cost_usd), 0.0) FROM ledger WHERE day = ?", (day,)
            )
            return {None: float(rows[0][0])}
        column = group_column(group_by)
        rows = await self._fetchall(
            f"SELECT {column}, SUM(cost_usd) FROM ledger WHERE day = ? GROUP BY {column}", (day,)
        )
        return {r[0]: float(r[1]) for r in rows}

    async def spend_between(
        self, start: float, end: float, group_by: GroupBy | None = None
    ) -> dict[str | None, float]:
        where = "FROM ledger WHERE ts >= ? AND ts < ?"
        if group_by is None:
            rows = await self._fetchall(
                f"SELECT COALESCE(SUM(cost_usd), 0.0) {where}", (start, end)
            )
            return {None: float(rows[0][0])}
        column = group_column(group_by)
        rows = await self._fetchall(
            f"SELECT {column}, SUM(cost_usd) {where} GROUP BY {column}", (start, end)
        )
        return {r[0]: float(r[1]) for r in rows}

    # -- prompt registry -------------------------------------------------------------------------

    async def create_prompt_version(self, prompt: PromptVersion) -> bool:
        async with self._transaction() as conn:
            rows = list(
                await conn.execute_fetchall(
                    "SELECT instructions, spotlight FROM prompt_versions WHERE name = ? AND version = ?",
                    (prompt.name, prompt.version),
                )
            )
            if rows:
                if tuple(rows[0]) == (prompt.instructions, prompt.spotlight):
                    return False
                raise Conflict(
                    f"prompt {prompt.name}@{prompt.version} exists with other text; versions are immutable"
                )
            await conn.execute(
                "INSERT INTO prompt_versions (name, version, instructions, spotlight, created_at, created_by)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    prompt.name,
                    prompt.version,
                    prompt.instructions,
                    prompt.spotlight,
                    prompt.created_at or time.time(),
                    prompt.created_by,
                ),
            )
            return True

    async def get_prompt_version(self, name: str, version: int) -> PromptVersion | None:
        rows = await self._fetchall(
            "SELECT name, version, instructions, spotlight, created_at, created_by FROM prompt_versions"
            " WHERE name = ? AND version = ?",
            (name, version),
        )
        return _prompt(rows[0]) if rows else None

    async def latest_prompt_version(self, name: str) -> int | None:
        rows = await self._fetchall(
            "SELECT MAX(version) FROM prompt_versions WHERE name = ?", (name,)
        )
        return None if not rows or rows[0][0] is None else int(rows[0][0])

    async def set_prompt_label(self, name: str, label: str, version: int) -> None:
        async with self._transaction() as conn:
            found = list(
                await conn.execute_fetchall(
                    "SELECT 1 FROM prompt_versions WHERE name = ? AND version = ?", (name, version)
                )
            )
            if not found:
                raise NotFound(f"prompt {name}@{version} does not exist")
            await conn.execute(
                "INSERT INTO prompt_labels (name, label, version, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (name, label) DO UPDATE SET version = excluded.version,"
                " updated_at = excluded.updated_at",
                (name, label, version, time.time()),
            )

    async def prompt_label(self, name: str, label: str) -> int | None:
        rows = await self._fetchall(
            "SELECT version FROM prompt_labels WHERE name = ? AND label = ?", (name, label)
        )
        return int(rows[0][0]) if rows else None

    async def list_prompts(self) -> list[PromptVersion]:
        rows = await self._fetchall(
            "SELECT name, version, instructions, spotlight, created_at, created_by FROM prompt_versions"
            " ORDER BY name, version"
        )
        return [_prompt(r) for r in rows]


def _prompt(r: Sequence[Any]) -> PromptVersion:
    return PromptVersion(
        name=r[0],
        version=int(r[1]),
        instructions=r[2],
        spotlight=r[3],
        created_at=float(r[4]),
        created_by=r[5],
    )

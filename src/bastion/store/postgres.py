"""The scale-out record store on PostgreSQL, shared by every replica through an asyncpg pool.

Batches are written by ``COPY`` (one statement, so one transaction: the server's cheapest way
in); a batch holding a row that is already there (a replay) rolls back whole and is written
again with one ``INSERT ... SELECT FROM unnest(...) ON CONFLICT DO NOTHING``, which reports how
many rows were new. The call table is partitioned by UTC day (pg_partitions.py): ``migrate()``
creates the days ahead, a batch holding a day that has no partition yet creates it first (its
rows land in the default partition if that fails), and ``delete_calls_before`` drops whole
days. Calls are unique on (request_id, ts), since a partitioned table's unique constraints must
hold the partition key; a replay carries the record's own ts, so it is still skipped.

``migrate()`` holds a session advisory lock keyed by the current schema, so replicas starting
together apply each migration exactly once. Query parameters in the URL that asyncpg does not
know (``?search_path=x``) are sent as server settings, which is how tests isolate themselves
in a schema.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from bastion.errors import Conflict, NotFound, StateUnavailable
from bastion.store import pg_partitions
from bastion.store._rows import (
    CALL_COLUMNS,
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
from bastion.store.migrations import MIGRATIONS, POSTGRES_BOOTSTRAP
from bastion.store.models import CallRecord, GroupBy, KeyRecord, LedgerEntry, PromptVersion
from bastion.store.pg_statements import (
    CALL_INSERT,
    CALL_SELECT,
    KEY_INSERT,
    KEY_SELECT,
    KEY_UPDATE,
    LEDGER_INSERT,
)

# what a migration test builds the old (v5) call insert from, under the names it had here
from bastion.store.pg_statements import CALL_TYPES as _CALL_TYPES  # noqa: F401
from bastion.store.pg_statements import unnest_insert as _unnest_insert  # noqa: F401

__all__ = ["PostgresStore"]

log = logging.getLogger("bastion.store")

# First half of the two-int advisory lock; the second half is a hash of the schema name.
_MIGRATE_LOCK_CLASS: Final = 0x0BA5_7104

# Errors meaning "the server cannot be reached or used right now"; anything else is a bug.
_UNAVAILABLE: Final = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
)

# Partitions kept ahead of today, and how far from today a record's day is created on demand
# (older or later records wait in the default partition, so odd timestamps cannot make tables).
PARTITION_DAYS_AHEAD: Final = 7
_ON_DEMAND_PAST_DAYS: Final = 62
_ON_DEMAND_FUTURE_DAYS: Final = PARTITION_DAYS_AHEAD + 1
# After a day could not be created (lock timeout), batches leave it alone for this long.
_PARTITION_RETRY_SECONDS: Final = 60.0


def redact_url(url: str) -> str:
    """Drop the password from a DSN so it can appear in errors and logs."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        netloc = f"{parts.username or ''}:***@{host}"
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "postgresql://<unparseable url>"


def _count(status: str) -> int:
    """Read the row count from a command tag such as ``INSERT 0 3`` or ``UPDATE 2``."""
    try:
        return int(status.rsplit(" ", 1)[-1])
    except ValueError:
        return 0


def _text_array(values: tuple[str, ...]) -> list[str]:
    return list(values)


def _from_text_array(raw: Any) -> tuple[str, ...]:
    return tuple(raw or ())


def _key_from_row(row: Sequence[Any]) -> KeyRecord:
    """Rebuild a key; roles and models are TEXT[] columns."""
    return key_from_row(row, _from_text_array)


class PostgresStore:
    """``RecordStore`` on PostgreSQL through an asyncpg pool created on first use."""

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = 5.0,
        command_timeout: float | None = 30.0,
    ) -> None:
        self._url = url
        self._min_size = min_size
        self._max_size = max_size
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._pool: Any = None  # asyncpg.Pool; asyncpg ships no type information
        self._pool_lock = asyncio.Lock()
        self._closed = False
        self._days: set[int] | None = None  # call partitions known to exist (None: not read)
        self._day_retry: dict[int, float] = {}  # day -> monotonic time to try creating it again
        self._partition_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"PostgresStore({redact_url(self._url)!r})"

    # -- connection ------------------------------------------------------------------------------

    def _unavailable(self, exc: BaseException) -> StateUnavailable:
        # no URL, no driver message (it names host and port): clients see this; the cause has them
        return StateUnavailable("the record store is unreachable")

    async def _get_pool(self) -> Any:
        """Create the pool on first use so ``open_store`` stays synchronous; retry on failure."""
        if self._pool is not None:
            return self._pool
        async with self._pool_lock:
            if self._closed:
                raise StateUnavailable("the record store is closed")
            if self._pool is None:
                try:
                    self._pool = await asyncpg.create_pool(
                        self._url,
                        min_size=self._min_size,
                        max_size=self._max_size,
                        timeout=self._connect_timeout,
                        command_timeout=self._command_timeout,
                    )
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # any failure to connect (refused, auth, no database)
                    raise self._unavailable(exc) from exc
            return self._pool

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        """Borrow a pooled connection and turn outages into ``StateUnavailable``."""
        if self._closed:
            raise StateUnavailable("the record store is closed")
        pool = await self._get_pool()
        try:
            async with pool.acquire(timeout=self._connect_timeout) as conn:
                yield conn
        except _UNAVAILABLE as exc:
            raise self._unavailable(exc) from exc

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Any]:
        async with self._connection() as conn, conn.transaction():
            yield conn

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        async with self._connection() as conn:
            return list(await conn.fetch(sql, *args))

    async def _execute(self, sql: str, *args: Any) -> int:
        async with self._connection() as conn:
            return _count(await conn.execute(sql, *args))

    # -- lifecycle -------------------------------------------------------------------------------

    async def migrate(self) -> None:
        """Apply missing migrations under an advisory lock, each in its own transaction."""
        async with self._connection() as conn:
            lock_args = (_MIGRATE_LOCK_CLASS,)
            lock_key = "$1::int4, hashtext(coalesce(current_schema(), ''))"
            await conn.execute(f"SELECT pg_advisory_lock({lock_key})", *lock_args)
            try:
                await conn.execute(POSTGRES_BOOTSTRAP)
                applied = {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")}
                for migration in MIGRATIONS:
                    if migration.version in applied:
                        continue
                    async with conn.transaction():
                        for statement in migration.postgres:
                            await conn.execute(statement)
                        await conn.execute(
                            "INSERT INTO schema_migrations (version, name, applied_at) "
                            "VALUES ($1, $2, $3)",
                            migration.version,
                            migration.name,
                            time.time(),
                        )
            finally:
                try:
                    await conn.execute(f"SELECT pg_advisory_unlock({lock_key})", *lock_args)
                except Exception:
                    # The session may be broken; ending it is what releases the lock then.
                    conn.terminate()
        await self.ensure_call_partitions()

    # -- call partitions -------------------------------------------------------------------------

    async def ensure_call_partitions(
        self, days_ahead: int = PARTITION_DAYS_AHEAD, now: float | None = None
    ) -> list[int]:
        """Create the partitions of today and the next ``days_ahead`` days; returns those made."""
        today = pg_partitions.day_of(time.time() if now is None else now)
        if today is None:
            return []
        return await self._create_days(set(range(today, today + days_ahead + 1)), force=True)

    async def _create_days(self, days: set[int], *, force: bool = False) -> list[int]:
        """Create the missing ones of ``days``; a day that fails is left to the default partition."""
        async with self._partition_lock, self._connection() as conn:
            if self._days is None:
                self._days = await pg_partitions.attached_days(conn)
            clock = time.monotonic()
            made: list[int] = []
            for day in sorted(days - self._days):
                if not force and self._day_retry.get(day, 0.0) > clock:
                    continue
                try:
                    if await pg_partitions.create_day(conn, day):
                        made.append(day)
                except asyncpg.PostgresError as exc:  # lock timeout, or not partitioned yet
                    self._day_retry[day] = clock + _PARTITION_RETRY_SECONDS
                    log.warning(
                        "call partition %s not created now (%s: %s); its rows go to %s",
                        pg_partitions.partition_name(day),
                        type(exc).__name__,
                        exc,
                        pg_partitions.DEFAULT_PARTITION,
                    )
                    continue
                self._days.add(day)
                self._day_retry.pop(day, None)
            return made

    async def _partitions_for(self, records: Sequence[CallRecord]) -> None:
        """Make sure each record's day has its partition before the batch is written."""
        days = {d for d in (pg_partitions.day_of(r.ts) for r in records) if d is not None}
        known = self._days
        if known is not None and days <= known:
            return  # the common case: one or two days, both known
        today = pg_partitions.day_of(time.time())
        if today is None:
            return
        lo, hi = today - _ON_DEMAND_PAST_DAYS, today + _ON_DEMAND_FUTURE_DAYS
        wanted = {d for d in days if lo <= d <= hi}
        if known is None or not wanted <= known:
            # a new day: make it and keep the days ahead of it made too
            wanted |= set(range(today, today + PARTITION_DAYS_AHEAD + 1))
            await self._create_days(wanted)

    async def ping(self) -> None:
        """Run a trivial query so readiness reflects a usable server."""
        await self._fetch("SELECT 1")

    async def __aenter__(self) -> PostgresStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the pool; later calls raise ``StateUnavailable``."""
        async with self._pool_lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), timeout=self._connect_timeout)
            except (TimeoutError, *_UNAVAILABLE):
                pool.terminate()

    # -- keys ------------------------------------------------------------------------------------

    async def create_key(self, key: KeyRecord) -> None:
        """Insert a key; duplicates of id, hash or active name are a ``Conflict``."""
        try:
            await self._execute(KEY_INSERT, *key_to_row(key, _text_array))
        except asyncpg.UniqueViolationError as exc:
            raise Conflict(
                f"key {key.id!r} ({key.name!r}) conflicts with an existing key's id, name or secret"
            ) from exc

    async def get_key_by_hash(self, key_hash: str) -> KeyRecord | None:
        rows = await self._fetch(
            f"{KEY_SELECT} WHERE key_hash = $1 AND revoked_at IS NULL", key_hash
        )
        return _key_from_row(rows[0]) if rows else None

    async def get_key(self, key_id: str) -> KeyRecord | None:
        rows = await self._fetch(f"{KEY_SELECT} WHERE id = $1", key_id)
        return _key_from_row(rows[0]) if rows else None

    async def list_keys(self, include_revoked: bool = False) -> list[KeyRecord]:
        where = "" if include_revoked else " WHERE revoked_at IS NULL"
        rows = await self._fetch(f"{KEY_SELECT}{where} ORDER BY created_at, id")
        return [_key_from_row(r) for r in rows]

    async def update_key(self, key: KeyRecord) -> bool:
        """Store an active key's limits and metadata; False if it is unknown or revoked."""
        values = key_mutable_values(key, _text_array)
        return await self._execute(KEY_UPDATE, *values, key.id) > 0

    async def revoke_key(self, id_or_name: str) -> bool:
        """Revoke by id first, then by name, so an id never revokes a differently named key."""
        now = time.time()
        async with self._transaction() as conn:
            for column in ("id", "name"):
                status = await conn.execute(
                    f"UPDATE keys SET revoked_at = $1 WHERE {column} = $2 AND revoked_at IS NULL",
                    now,
                    id_or_name,
                )
                if _count(status) > 0:
                    return True
        return False

    # -- calls -----------------------------------------------------------------------------------

    async def insert_calls(self, records: Sequence[CallRecord]) -> int:
        rows = [call_to_row(r) for r in unique_by_request_id(records)]
        if not rows:
            return 0
        await self._partitions_for(records)
        return await self._write_batch("calls", CALL_COLUMNS, rows, CALL_INSERT)

    async def get_calls_by_trace(self, trace_id: str) -> list[CallRecord]:
        rows = await self._fetch(
            f"{CALL_SELECT} WHERE trace_id = $1 ORDER BY ts, request_id", trace_id
        )
        return [call_from_row(r) for r in rows]

    async def recent_calls(self, limit: int, feature: str | None = None) -> list[CallRecord]:
        if limit <= 0:
            return []
        order = "ORDER BY ts DESC, request_id DESC"
        if feature is None:
            rows = await self._fetch(f"{CALL_SELECT} {order} LIMIT $1", limit)
        else:
            rows = await self._fetch(
                f"{CALL_SELECT} WHERE feature = $1 {order} LIMIT $2", feature, limit
            )
        return [call_from_row(r) for r in rows]

    async def delete_call_bodies_before(self, ts: float) -> int:
        return await self._execute(
            "UPDATE calls SET input_text = NULL, output_text = NULL "
            "WHERE ts < $1 AND (input_text IS NOT NULL OR output_text IS NOT NULL)",
            ts,
        )

    async def delete_calls_before(self, ts: float) -> int:
        """Drop the day partitions that end by ``ts`` and delete the rest of what is before it."""
        async with self._partition_lock, self._connection() as conn:
            removed, dropped = await pg_partitions.drop_calls_before(conn, ts)
            if self._days is not None:
                self._days.difference_update(dropped)
        await self.ensure_call_partitions()  # retention's pass is also the partition maintenance
        return removed

    # -- ledger ----------------------------------------------------------------------------------

    async def insert_ledger(self, entries: Sequence[LedgerEntry]) -> int:
        rows = [ledger_to_row(e) for e in unique_by_request_id(entries)]
        if not rows:
            return 0
        return await self._write_batch("ledger", LEDGER_COLUMNS, rows, LEDGER_INSERT)

    async def _write_batch(
        self, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]], insert: str
    ) -> int:
        """COPY the batch (the server's cheapest way in); if a row is already there (a replay),
        the COPY rolls back whole and the batch goes in again through ``insert``, which skips
        the known rows. Returns how many rows are new."""
        async with self._connection() as conn:
            try:  # one statement, so one transaction of its own: no BEGIN/COMMIT round trips
                status = await conn.copy_records_to_table(table, records=rows, columns=columns)
                return _count(status)
            except asyncpg.UniqueViolationError:
                pass
            return _count(await conn.execute(insert, *[list(c) for c in zip(*rows, strict=True)]))

    async def spend_by_day(
        self, day: str, group_by: GroupBy | None = None
    ) -> dict[str | None, float]:
        if group_by is None:
            rows = await self._fetch(
                "SELECT COALESCE(SUM(cost_usd), 0.0) FROM ledger WHERE day = $1", day
            )
            return {None: float(rows[0][0])}
        column = group_column(group_by)
        rows = await self._fetch(
            f"SELECT {column}, SUM(cost_usd) FROM ledger WHERE day = $1 GROUP BY {column}", day
        )
        return {r[0]: float(r[1]) for r in rows}

    async def spend_between(
        self, start: float, end: float, group_by: GroupBy | None = None
    ) -> dict[str | None, float]:
        where = "FROM ledger WHERE ts >= $1 AND ts < $2"
        if group_by is None:
            rows = await self._fetch(f"SELECT COALESCE(SUM(cost_usd), 0.0) {where}", start, end)
            return {None: float(rows[0][0])}
        column = group_column(group_by)
        rows = await self._fetch(
            f"SELECT {column}, SUM(cost_usd) {where} GROUP BY {column}", start, end
        )
        return {r[0]: float(r[1]) for r in rows}

    # -- prompt registry -------------------------------------------------------------------------

    async def create_prompt_version(self, prompt: PromptVersion) -> bool:
        async with self._connection() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT instructions, spotlight FROM prompt_versions WHERE name = $1 AND version = $2"
                " FOR UPDATE",
                prompt.name,
                prompt.version,
            )
            if row is not None:
                if (row[0], row[1]) == (prompt.instructions, prompt.spotlight):
                    return False
                raise Conflict(
                    f"prompt {prompt.name}@{prompt.version} exists with other text; versions are immutable"
                )
            try:
                await conn.execute(
                    "INSERT INTO prompt_versions (name, version, instructions, spotlight, created_at,"
                    " created_by) VALUES ($1, $2, $3, $4, $5, $6)",
                    prompt.name,
                    prompt.version,
                    prompt.instructions,
                    prompt.spotlight,
                    prompt.created_at or time.time(),
                    prompt.created_by,
                )
            except asyncpg.UniqueViolationError:
                raise Conflict(
                    f"prompt {prompt.name}@{prompt.version} was created concurrently"
                ) from None
            return True

    async def get_prompt_version(self, name: str, version: int) -> PromptVersion | None:
        rows = await self._fetch(
            "SELECT name, version, instructions, spotlight, created_at, created_by FROM prompt_versions"
            " WHERE name = $1 AND version = $2",
            name,
            version,
        )
        return _prompt(rows[0]) if rows else None

    async def latest_prompt_version(self, name: str) -> int | None:
        rows = await self._fetch("SELECT MAX(version) FROM prompt_versions WHERE name = $1", name)
        return None if not rows or rows[0][0] is None else int(rows[0][0])

    async def set_prompt_label(self, name: str, label: str, version: int) -> None:
        async with self._connection() as conn, conn.transaction():
            found = await conn.fetchval(
                "SELECT 1 FROM prompt_versions WHERE name = $1 AND version = $2", name, version
            )
            if found is None:
                raise NotFound(f"prompt {name}@{version} does not exist")
            await conn.execute(
                "INSERT INTO prompt_labels (name, label, version, updated_at) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (name, label) DO UPDATE SET version = EXCLUDED.version,"
                " updated_at = EXCLUDED.updated_at",
                name,
                label,
                version,
                time.time(),
            )

    async def prompt_label(self, name: str, label: str) -> int | None:
        rows = await self._fetch(
            "SELECT version FROM prompt_labels WHERE name = $1 AND label = $2", name, label
        )
        return int(rows[0][0]) if rows else None

    async def list_prompts(self) -> list[PromptVersion]:
        rows = await self._fetch(
            "SELECT name, version, instructions, spotlight, created_at, created_by FROM prompt_versions"
            " ORDER BY name, version"
        )
        return [_prompt(r) for r in rows]


def _prompt(r: Any) -> PromptVersion:
    return PromptVersion(
        name=r[0],
        version=int(r[1]),
        instructions=r[2],
        spotlight=r[3],
        created_at=float(r[4]),
        created_by=r[5],
    )

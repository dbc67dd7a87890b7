"""Day partitions of the PostgreSQL call table: created ahead and on demand, dropped by retention.

Since migration 6 ``calls`` is ``PARTITIONED BY RANGE (ts)``: one partition per UTC day, named
``calls_pYYYYMMDD`` and covering ``[day start, next day start)`` in epoch seconds, plus
``calls_default``, which takes any row whose day has no partition, so a record is never
refused for want of one. Creating a day's partition moves that day's rows out of the default
partition in the same transaction (PostgreSQL would refuse the partition otherwise).

Partition DDL runs under a transaction-scoped advisory lock keyed by the schema, so replicas
creating or dropping the same day at once do it exactly once, and takes the parent's lock
first (with ``lock_timeout``), so it never deadlocks with a writer; a day that cannot be created
now is simply left to the default partition and tried again later.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any, Final

__all__ = [
    "DAY_SECONDS",
    "DEFAULT_PARTITION",
    "attached_days",
    "create_day",
    "day_of",
    "day_start",
    "drop_calls_before",
    "partition_name",
]

DAY_SECONDS: Final = 86400
PARENT: Final = "calls"
DEFAULT_PARTITION: Final = "calls_default"
# First half of the two-int advisory lock for partition DDL (migrate() uses another class).
_DDL_LOCK_CLASS: Final = 0x0BA5_7105
_LOCK: Final = "SELECT pg_advisory_xact_lock($1::int4, hashtext(coalesce(current_schema(), '')))"
# short: a waiting ACCESS EXCLUSIVE request queues every later reader and writer behind it
_LOCK_TIMEOUT: Final = "SET LOCAL lock_timeout = '1s'"
_NAME: Final = re.compile(r"calls_p(\d{8})")
_EPOCH: Final = dt.date(1970, 1, 1).toordinal()
# Days a partition can be named for: 1970-01-01 .. 9999-12-31; anything else stays in default.
_FIRST_DAY: Final = 0
_LAST_DAY: Final = dt.date(9999, 12, 31).toordinal() - _EPOCH


def day_of(ts: float) -> int | None:
    """The UTC day number (days since 1970-01-01) holding ``ts``; None if no partition can."""
    if not math.isfinite(ts):
        return None
    day = math.floor(ts / DAY_SECONDS)
    return day if _FIRST_DAY <= day <= _LAST_DAY else None


def day_start(day: int) -> float:
    """Epoch seconds at the start of a UTC day number."""
    return float(day * DAY_SECONDS)


def partition_name(day: int) -> str:
    """``calls_pYYYYMMDD`` for a UTC day number."""
    return "calls_p" + dt.date.fromordinal(_EPOCH + day).strftime("%Y%m%d")


def _day_of_name(name: str) -> int | None:
    m = _NAME.fullmatch(name)
    if m is None:
        return None
    try:
        return dt.datetime.strptime(m.group(1), "%Y%m%d").date().toordinal() - _EPOCH
    except ValueError:
        return None


async def attached_days(conn: Any) -> set[int]:
    """The days that have a partition attached to ``calls`` in the current schema."""
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass($1)",
        PARENT,
    )
    return {d for d in (_day_of_name(r[0]) for r in rows) if d is not None}


async def _exists(conn: Any, name: str) -> bool:
    found = await conn.fetchval(
        "SELECT 1 FROM pg_class WHERE relname = $1 AND relnamespace = current_schema()::regnamespace",
        name,
    )
    return found is not None


async def create_day(conn: Any, day: int) -> bool:
    """Create one day's partition, moving that day's rows out of the default partition.

    Returns False if it already existed. Raises asyncpg's error if the lock is not granted
    within ``lock_timeout`` (the caller leaves the day to the default partition then).
    """
    name = partition_name(day)
    lo, hi = day * DAY_SECONDS, (day + 1) * DAY_SECONDS
    bounds = f"FOR VALUES FROM ({lo}) TO ({hi})"
    async with conn.transaction():
        await conn.execute(_LOCK_TIMEOUT)
        await conn.execute(_LOCK, _DDL_LOCK_CLASS)
        if await _exists(conn, name):
            return False
        # the parent first: a writer holds it before any partition, so this order cannot deadlock
        await conn.execute(f"LOCK TABLE {PARENT} IN ACCESS EXCLUSIVE MODE")
        stray = await conn.fetchval(
            f"SELECT EXISTS (SELECT 1 FROM {DEFAULT_PARTITION} WHERE ts >= $1 AND ts < $2)",
            float(lo),
            float(hi),
        )
        if not stray:
            await conn.execute(f"CREATE TABLE {name} PARTITION OF {PARENT} {bounds}")
            return True
        await conn.execute(
            f"CREATE TABLE {name} (LIKE {PARENT} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        )
        await conn.execute(
            f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} WHERE ts >= $1 AND ts < $2 "
            f"RETURNING *) INSERT INTO {name} SELECT * FROM moved",
            float(lo),
            float(hi),
        )
        await conn.execute(f"ALTER TABLE {PARENT} ATTACH PARTITION {name} {bounds}")
        return True


async def drop_calls_before(conn: Any, ts: float) -> tuple[int, list[int]]:
    """Remove every call with ``ts`` before the cut-off: whole day partitions that end at or
    before it are dropped (their rows counted first); what is left before it (part of the
    cut-off's own day, rows in the default partition) is deleted row by row.

    Returns (rows removed, days dropped). A cut-off at midnight UTC, as retention uses, makes
    the row-by-row part only the default partition's strays.
    """
    removed = 0
    dropped: list[int] = []
    for day in sorted(await attached_days(conn)):
        if (day + 1) * DAY_SECONDS > ts:
            continue
        name = partition_name(day)
        async with conn.transaction():
            await conn.execute(_LOCK_TIMEOUT)
            await conn.execute(_LOCK, _DDL_LOCK_CLASS)
            if not await _exists(conn, name):
                continue  # another replica dropped it meanwhile
            # counted before the parent's lock, so writers are held only for the DROP itself
            removed += int(await conn.fetchval(f"SELECT count(*) FROM {name}"))
            await conn.execute(f"LOCK TABLE {PARENT} IN ACCESS EXCLUSIVE MODE")
            await conn.execute(f"DROP TABLE {name}")
        dropped.append(day)
    status = await conn.execute(f"DELETE FROM {PARENT} WHERE ts < $1", ts)
    removed += int(status.rsplit(" ", 1)[-1])
    return removed, dropped

"""One ordered list of schema changes, spelled for both dialects so the two stores never drift.

Migrations are append-only: a released migration's SQL is never edited; a change is a new
version. Each backend records applied versions in ``schema_migrations`` and applies the missing
ones in order, each in its own transaction together with its version row, so a crash leaves the
schema at a known version. Column names, order, nullability and defaults are the same in both
dialects; only the spelling of types differs (REAL/DOUBLE PRECISION, INTEGER 0-1/BOOLEAN,
JSON text/JSONB, JSON text/TEXT[] for roles). One step is physical only: migration 6
partitions the PostgreSQL call table by day (same columns; a no-op statement on SQLite).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "MIGRATIONS",
    "POSTGRES_BOOTSTRAP",
    "SQLITE_BOOTSTRAP",
    "Migration",
    "latest_version",
]


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step, spelled once per dialect so both stores move together."""

    version: int
    name: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]


SQLITE_BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at REAL NOT NULL
)
"""

POSTGRES_BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at DOUBLE PRECISION NOT NULL
)
"""


_V1_SQLITE = (
    """
    CREATE TABLE keys (
        id         TEXT PRIMARY KEY,
        name       TEXT NOT NULL,
        key_hash   TEXT NOT NULL,
        prefix     TEXT NOT NULL,
        feature    TEXT,
        user_id    TEXT,
        roles      TEXT NOT NULL DEFAULT '[]',
        created_at REAL NOT NULL,
        revoked_at REAL
    )
    """,
    "CREATE UNIQUE INDEX keys_key_hash ON keys (key_hash)",
    "CREATE UNIQUE INDEX keys_active_name ON keys (name) WHERE revoked_at IS NULL",
    """
    CREATE TABLE calls (
        request_id         TEXT PRIMARY KEY,
        trace_id           TEXT NOT NULL,
        ts                 REAL NOT NULL,
        api_format         TEXT NOT NULL,
        requested_model    TEXT NOT NULL,
        key_id             TEXT,
        user_id            TEXT,
        feature            TEXT,
        conversation_id    TEXT,
        served_model       TEXT,
        deployment         TEXT,
        provider           TEXT,
        prompt_name        TEXT,
        prompt_version     TEXT,
        stream             INTEGER NOT NULL DEFAULT 0 CHECK (stream IN (0, 1)),
        status             INTEGER NOT NULL,
        error_type         TEXT,
        input_text         TEXT,
        output_text        TEXT,
        input_tokens       INTEGER NOT NULL DEFAULT 0,
        output_tokens      INTEGER NOT NULL DEFAULT 0,
        cache_read_tokens  INTEGER NOT NULL DEFAULT 0,
        cache_write_tokens INTEGER NOT NULL DEFAULT 0,
        cost_usd           REAL NOT NULL DEFAULT 0,
        latency_ms         REAL NOT NULL DEFAULT 0,
        ttft_ms            REAL,
        attempts           INTEGER NOT NULL DEFAULT 0,
        failover           INTEGER NOT NULL DEFAULT 0 CHECK (failover IN (0, 1)),
        hedged             INTEGER NOT NULL DEFAULT 0 CHECK (hedged IN (0, 1)),
        degraded           INTEGER NOT NULL DEFAULT 0 CHECK (degraded IN (0, 1)),
        retried            INTEGER NOT NULL DEFAULT 0 CHECK (retried IN (0, 1)),
        flags              TEXT NOT NULL DEFAULT '{}',
        stages             TEXT NOT NULL DEFAULT '{}'
    )
    """,
    "CREATE INDEX calls_trace_id ON calls (trace_id)",
    "CREATE INDEX calls_ts ON calls (ts)",
    """
    CREATE TABLE ledger (
        request_id         TEXT PRIMARY KEY,
        ts                 REAL NOT NULL,
        day                TEXT NOT NULL,
        model              TEXT NOT NULL,
        key_id             TEXT,
        user_id            TEXT,
        feature            TEXT,
        input_tokens       INTEGER NOT NULL DEFAULT 0,
        output_tokens      INTEGER NOT NULL DEFAULT 0,
        cache_read_tokens  INTEGER NOT NULL DEFAULT 0,
        cache_write_tokens INTEGER NOT NULL DEFAULT 0,
        cost_usd           REAL NOT NULL DEFAULT 0
    )
    """,
    "CREATE INDEX ledger_day ON ledger (day)",
)

_V1_POSTGRES = (
    """
    CREATE TABLE keys (
        id         TEXT PRIMARY KEY,
        name       TEXT NOT NULL,
        key_hash   TEXT NOT NULL,
        prefix     TEXT NOT NULL,
        feature    TEXT,
        user_id    TEXT,
        roles      TEXT[] NOT NULL DEFAULT '{}',
        created_at DOUBLE PRECISION NOT NULL,
        revoked_at DOUBLE PRECISION
    )
    """,
    "CREATE UNIQUE INDEX keys_key_hash ON keys (key_hash)",
    "CREATE UNIQUE INDEX keys_active_name ON keys (name) WHERE revoked_at IS NULL",
    """
    CREATE TABLE calls (
        request_id         TEXT PRIMARY KEY,
        trace_id           TEXT NOT NULL,
        ts                 DOUBLE PRECISION NOT NULL,
        api_format         TEXT NOT NULL,
        requested_model    TEXT NOT NULL,
        key_id             TEXT,
        user_id            TEXT,
        feature            TEXT,
        conversation_id    TEXT,
        served_model       TEXT,
        deployment         TEXT,
        provider           TEXT,
        prompt_name        TEXT,
        prompt_version     TEXT,
        stream             BOOLEAN NOT NULL DEFAULT FALSE,
        status             INTEGER NOT NULL,
        error_type         TEXT,
        input_text         TEXT,
        output_text        TEXT,
        input_tokens       BIGINT NOT NULL DEFAULT 0,
        output_tokens      BIGINT NOT NULL DEFAULT 0,
        cache_read_tokens  BIGINT NOT NULL DEFAULT 0,
        cache_write_tokens BIGINT NOT NULL DEFAULT 0,
        cost_usd           DOUBLE PRECISION NOT NULL DEFAULT 0,
        latency_ms         DOUBLE PRECISION NOT NULL DEFAULT 0,
        ttft_ms            DOUBLE PRECISION,
        attempts           INTEGER NOT NULL DEFAULT 0,
        failover           BOOLEAN NOT NULL DEFAULT FALSE,
        hedged             BOOLEAN NOT NULL DEFAULT FALSE,
        degraded           BOOLEAN NOT NULL DEFAULT FALSE,
        retried            BOOLEAN NOT NULL DEFAULT FALSE,
        flags              JSONB NOT NULL DEFAULT '{}',
        stages             JSONB NOT NULL DEFAULT '{}'
    )
    """,
    "CREATE INDEX calls_trace_id ON calls (trace_id)",
    "CREATE INDEX calls_ts ON calls (ts)",
    """
    CREATE TABLE ledger (
        request_id         TEXT PRIMARY KEY,
        ts                 DOUBLE PRECISION NOT NULL,
        day                TEXT NOT NULL,
        model              TEXT NOT NULL,
        key_id             TEXT,
        user_id            TEXT,
        feature            TEXT,
        input_tokens       BIGINT NOT NULL DEFAULT 0,
        output_tokens      BIGINT NOT NULL DEFAULT 0,
        cache_read_tokens  BIGINT NOT NULL DEFAULT 0,
        cache_write_tokens BIGINT NOT NULL DEFAULT 0,
        cost_usd           DOUBLE PRECISION NOT NULL DEFAULT 0
    )
    """,
    "CREATE INDEX ledger_day ON ledger (day)",
)


_V2_COMMON = (
    """
    CREATE TABLE prompt_versions (
        name         TEXT NOT NULL,
        version      INTEGER NOT NULL,
        instructions TEXT NOT NULL,
        spotlight    TEXT,
        created_at   {real} NOT NULL,
        created_by   TEXT,
        PRIMARY KEY (name, version)
    )
    """,
    """
    CREATE TABLE prompt_labels (
        name       TEXT NOT NULL,
        label      TEXT NOT NULL,
        version    INTEGER NOT NULL,
        updated_at {real} NOT NULL,
        PRIMARY KEY (name, label)
    )
    """,
)
_V2_SQLITE = tuple(s.format(real="REAL") for s in _V2_COMMON)
_V2_POSTGRES = tuple(s.format(real="DOUBLE PRECISION") for s in _V2_COMMON)


# Bastion mints request_id; the client's X-Request-Id is kept beside it, never as the key.
_V3_COMMON = ("ALTER TABLE calls ADD COLUMN client_request_id TEXT",)

# Safety findings (detector, action, score, reasons, version) get their own column.
_V4_SQLITE = ("ALTER TABLE calls ADD COLUMN findings TEXT NOT NULL DEFAULT '[]'",)
_V4_POSTGRES = ("ALTER TABLE calls ADD COLUMN findings JSONB NOT NULL DEFAULT '[]'",)

# Keys as a product: budgets, rate limits, a model allow-list, expiry, team and owner.
_V5_COMMON = (
    "ALTER TABLE keys ADD COLUMN daily_usd {real}",
    "ALTER TABLE keys ADD COLUMN monthly_usd {real}",
    "ALTER TABLE keys ADD COLUMN rpm {real}",
    "ALTER TABLE keys ADD COLUMN tpm {int}",
    "ALTER TABLE keys ADD COLUMN models {list}",
    "ALTER TABLE keys ADD COLUMN expires_at {real}",
    "ALTER TABLE keys ADD COLUMN team TEXT",
    "ALTER TABLE keys ADD COLUMN owner TEXT",
)
_V5_SQLITE = tuple(
    s.format(real="REAL", int="INTEGER", list="TEXT NOT NULL DEFAULT '[]'") for s in _V5_COMMON
)
_V5_POSTGRES = tuple(
    s.format(real="DOUBLE PRECISION", int="BIGINT", list="TEXT[] NOT NULL DEFAULT '{}'")
    for s in _V5_COMMON
)


# PostgreSQL only: the call table becomes PARTITIONED BY RANGE (ts), one partition per UTC day
# (see pg_partitions.py), so retention drops a day instead of deleting its rows. A partitioned
# table's unique constraints must include the partition key, so the primary key becomes
# (request_id, ts): a replay carries the record's own ts, so it still conflicts and is skipped.
# Existing rows move in one transaction, day by day, under an exclusive lock on the old table
# (writers wait, readers go on); the new table takes the old names only once every row is in.
# Rows whose day cannot name a partition (before 1970, NaN) go to the default partition.
_V6_POSTGRES = (
    """
    DO $$
    DECLARE
        day_no bigint;
        part   text;
    BEGIN
        LOCK TABLE calls IN EXCLUSIVE MODE;
        CREATE TABLE calls_by_day (LIKE calls INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
            PARTITION BY RANGE (ts);
        CREATE TABLE calls_default PARTITION OF calls_by_day DEFAULT;
        FOR day_no IN
            SELECT DISTINCT floor(ts / 86400)::bigint FROM calls
            WHERE ts >= 0 AND ts < 253402300800 ORDER BY 1
        LOOP
            part := 'calls_p' || to_char(to_timestamp(day_no * 86400) AT TIME ZONE 'UTC', 'YYYYMMDD');
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF calls_by_day FOR VALUES FROM (%s) TO (%s)',
                part, day_no * 86400, (day_no + 1) * 86400);
            EXECUTE format(
                'INSERT INTO %I SELECT * FROM calls WHERE ts >= $1 AND ts < $2', part)
                USING (day_no * 86400)::float8, ((day_no + 1) * 86400)::float8;
        END LOOP;
        INSERT INTO calls_default
            SELECT * FROM calls WHERE NOT (ts >= 0 AND ts < 253402300800);
        DROP TABLE calls;
        ALTER TABLE calls_by_day RENAME TO calls;
        ALTER TABLE calls ADD CONSTRAINT calls_pkey PRIMARY KEY (request_id, ts);
        CREATE INDEX calls_trace_id ON calls (trace_id);
        CREATE INDEX calls_ts ON calls (ts);
    END
    $$
    """,
)
# Nothing changes on SQLite (one file, DELETE is its retention); a statement keeps the step.
_V6_SQLITE = ("SELECT 1",)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "keys, calls, ledger", sqlite=_V1_SQLITE, postgres=_V1_POSTGRES),
    Migration(2, "prompt registry", sqlite=_V2_SQLITE, postgres=_V2_POSTGRES),
    Migration(3, "client request id on calls", sqlite=_V3_COMMON, postgres=_V3_COMMON),
    Migration(4, "safety findings on calls", sqlite=_V4_SQLITE, postgres=_V4_POSTGRES),
    Migration(5, "key budgets, limits and metadata", sqlite=_V5_SQLITE, postgres=_V5_POSTGRES),
    Migration(6, "calls partitioned by day (PostgreSQL)", sqlite=_V6_SQLITE, postgres=_V6_POSTGRES),
)


def latest_version() -> int:
    """The version a fully migrated store reports, for readiness checks."""
    return MIGRATIONS[-1].version if MIGRATIONS else 0

"""The SQL the PostgreSQL record store sends, built once at import from the row layouts.

Column lists come from ``_rows.py`` (shared with SQLite), so a column added there is in every
statement here. Calls and ledger entries go in as whole batches: ``unnest_insert`` builds the
``INSERT ... SELECT FROM unnest($1::type[], ...) ON CONFLICT DO NOTHING`` a replayed batch is
written with (one array parameter per column, so the statement's text never depends on the batch
size); ``CALL_TYPES`` and ``LEDGER_TYPES`` are those arrays' PostgreSQL types. JSON columns are
cast to ``jsonb`` on the way in and back to text on the way out, so both backends hand
``_rows`` the same shapes.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from bastion.store._rows import (
    CALL_COLUMNS,
    CALL_JSON_COLUMNS,
    KEY_COLUMNS,
    KEY_MUTABLE_COLUMNS,
    LEDGER_COLUMNS,
)

__all__ = [
    "CALL_INSERT",
    "CALL_SELECT",
    "CALL_TYPES",
    "KEY_INSERT",
    "KEY_SELECT",
    "KEY_UPDATE",
    "LEDGER_INSERT",
    "LEDGER_TYPES",
    "unnest_insert",
]

CALL_TYPES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "request_id": "text",
        "trace_id": "text",
        "ts": "float8",
        "api_format": "text",
        "requested_model": "text",
        "key_id": "text",
        "user_id": "text",
        "feature": "text",
        "conversation_id": "text",
        "served_model": "text",
        "deployment": "text",
        "provider": "text",
        "prompt_name": "text",
        "prompt_version": "text",
        "stream": "bool",
        "status": "int4",
        "error_type": "text",
        "input_text": "text",
        "output_text": "text",
        "input_tokens": "int8",
        "output_tokens": "int8",
        "cache_read_tokens": "int8",
        "cache_write_tokens": "int8",
        "cost_usd": "float8",
        "latency_ms": "float8",
        "ttft_ms": "float8",
        "attempts": "int4",
        "failover": "bool",
        "hedged": "bool",
        "degraded": "bool",
        "retried": "bool",
        "flags": "text",  # cast to jsonb in the SELECT
        "stages": "text",
        "client_request_id": "text",
        "findings": "text",  # cast to jsonb in the SELECT
    }
)
LEDGER_TYPES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "request_id": "text",
        "ts": "float8",
        "day": "text",
        "model": "text",
        "key_id": "text",
        "user_id": "text",
        "feature": "text",
        "input_tokens": "int8",
        "output_tokens": "int8",
        "cache_read_tokens": "int8",
        "cache_write_tokens": "int8",
        "cost_usd": "float8",
    }
)


def unnest_insert(
    table: str,
    columns: tuple[str, ...],
    types: Mapping[str, str],
    json: frozenset[str],
    key: str = "request_id",
) -> str:
    """Build a whole-batch insert from column arrays that skips keys already present."""
    arrays = ", ".join(f"${i}::{types[c]}[]" for i, c in enumerate(columns, start=1))
    selected = ", ".join(f"{c}::jsonb" if c in json else c for c in columns)
    names = ", ".join(columns)
    return (
        f"INSERT INTO {table} ({names}) SELECT {selected} FROM unnest({arrays}) AS t ({names}) "
        f"ON CONFLICT ({key}) DO NOTHING"
    )


# Columns are selected with jsonb cast to text so both backends hand _rows the same shapes.
CALL_SELECT: Final = "SELECT {} FROM calls".format(
    ", ".join(f"{c}::text" if c in CALL_JSON_COLUMNS else c for c in CALL_COLUMNS)
)
CALL_INSERT: Final = unnest_insert(
    "calls", CALL_COLUMNS, CALL_TYPES, CALL_JSON_COLUMNS, key="request_id, ts"
)
LEDGER_INSERT: Final = unnest_insert("ledger", LEDGER_COLUMNS, LEDGER_TYPES, frozenset())
KEY_SELECT: Final = f"SELECT {', '.join(KEY_COLUMNS)} FROM keys"
KEY_INSERT: Final = (
    f"INSERT INTO keys ({', '.join(KEY_COLUMNS)}) "
    f"VALUES ({', '.join(f'${i}' for i in range(1, len(KEY_COLUMNS) + 1))})"
)
KEY_UPDATE: Final = "UPDATE keys SET {} WHERE id = ${} AND revoked_at IS NULL".format(
    ", ".join(f"{c} = ${i}" for i, c in enumerate(KEY_MUTABLE_COLUMNS, start=1)),
    len(KEY_MUTABLE_COLUMNS) + 1,
)

"""Record/row conversion shared by both backends, so a new column is read and written alike."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import fields
from operator import attrgetter
from typing import Any, Final, TypeVar

import orjson

from bastion.findings import findings_of
from bastion.store.models import CallRecord, GroupBy, KeyLimits, KeyRecord, LedgerEntry

# Column order equals dataclass field order equals table column order (see migrations).
CALL_COLUMNS: Final[tuple[str, ...]] = tuple(f.name for f in fields(CallRecord))
LEDGER_COLUMNS: Final[tuple[str, ...]] = tuple(f.name for f in fields(LedgerEntry))
KEY_COLUMNS: Final[tuple[str, ...]] = (
    "id",
    "name",
    "key_hash",
    "prefix",
    "feature",
    "user_id",
    "roles",
    "created_at",
    "revoked_at",
    "daily_usd",
    "monthly_usd",
    "rpm",
    "tpm",
    "models",
    "expires_at",
    "team",
    "owner",
)
# The columns an update may change: limits and metadata, never identity, secret or roles.
KEY_MUTABLE_COLUMNS: Final[tuple[str, ...]] = KEY_COLUMNS[9:]

CALL_BOOL_COLUMNS: Final[frozenset[str]] = frozenset(
    {"stream", "failover", "hedged", "degraded", "retried"}
)
CALL_JSON_COLUMNS: Final[frozenset[str]] = frozenset({"flags", "stages", "findings"})

# group_by values are interpolated into SQL, so only these exact names may reach a query.
GROUP_COLUMNS: Final[dict[GroupBy, str]] = {
    "feature": "feature",
    "user_id": "user_id",
    "key_id": "key_id",
    "model": "model",
}

_T = TypeVar("_T", CallRecord, LedgerEntry)

_FLAGS_INDEX: Final = CALL_COLUMNS.index("flags")
_STAGES_INDEX: Final = CALL_COLUMNS.index("stages")
_FINDINGS_INDEX: Final = CALL_COLUMNS.index("findings")
# every column's value in one C call (a getattr per column was most of a row's cost)
_CALL_VALUES: Final = attrgetter(*CALL_COLUMNS)
_LEDGER_VALUES: Final = attrgetter(*LEDGER_COLUMNS)


def group_column(group_by: GroupBy) -> str:
    """Map a group name to its column, refusing anything else before it can reach SQL."""
    try:
        return GROUP_COLUMNS[group_by]
    except KeyError:
        raise ValueError(
            f"group_by must be one of {sorted(GROUP_COLUMNS)} or None, not {group_by!r}"
        ) from None


def dump_json(value: Any) -> str:
    """Serialize guard verdicts without letting an odd value in them lose the whole record."""
    if not value and type(value) in (dict, list):
        return "{}" if type(value) is dict else "[]"  # what orjson writes for them
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def call_to_row(record: CallRecord) -> tuple[Any, ...]:
    """Flatten a call record in column order; JSON columns become text."""
    row = list(_CALL_VALUES(record))
    row[_FLAGS_INDEX] = dump_json(record.flags)
    row[_STAGES_INDEX] = dump_json(record.stages)
    found = record.findings
    row[_FINDINGS_INDEX] = dump_json([f.as_dict() for f in found]) if found else "[]"
    return tuple(row)


def call_from_row(row: Sequence[Any]) -> CallRecord:
    """Rebuild a call record from a row in column order, whatever the dialect's bool/JSON types."""
    values: dict[str, Any] = dict(zip(CALL_COLUMNS, row, strict=True))
    for name in CALL_BOOL_COLUMNS:
        values[name] = bool(values[name])
    raw = values.pop("findings")
    found = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
    values["findings"] = findings_of(found if isinstance(found, list) else ())
    for name in CALL_JSON_COLUMNS - {"findings"}:
        raw = values[name]
        values[name] = orjson.loads(raw) if isinstance(raw, str | bytes) else dict(raw or {})
    return CallRecord(**values)


def ledger_to_row(entry: LedgerEntry) -> tuple[Any, ...]:
    """Flatten a ledger entry in column order."""
    values: tuple[Any, ...] = _LEDGER_VALUES(entry)
    return values


def unique_by_request_id(items: Sequence[_T]) -> list[_T]:
    """Keep the first of repeated request_ids, as if the batch were sent row by row."""
    seen: set[str] = set()
    out: list[_T] = []
    for item in items:
        if item.request_id not in seen:
            seen.add(item.request_id)
            out.append(item)
    return out


def key_to_row(key: KeyRecord, as_list: Callable[[tuple[str, ...]], Any]) -> tuple[Any, ...]:
    """Flatten a key in ``KEY_COLUMNS`` order; ``as_list`` spells roles and models per dialect."""
    return (
        key.id,
        key.name,
        key.key_hash,
        key.prefix,
        key.feature,
        key.user,
        as_list(key.roles),
        key.created_at,
        key.revoked_at,
        *key_mutable_values(key, as_list),
    )


def key_mutable_values(
    key: KeyRecord, as_list: Callable[[tuple[str, ...]], Any]
) -> tuple[Any, ...]:
    """The values of ``KEY_MUTABLE_COLUMNS``, in order, for an update."""
    lim = key.limits
    return (
        lim.daily_usd,
        lim.monthly_usd,
        lim.rpm,
        lim.tpm,
        as_list(lim.models),
        lim.expires_at,
        key.team,
        key.owner,
    )


def key_from_row(row: Sequence[Any], from_list: Callable[[Any], tuple[str, ...]]) -> KeyRecord:
    """Rebuild a key from a row in ``KEY_COLUMNS`` order, whatever the dialect's list type."""
    v: dict[str, Any] = dict(zip(KEY_COLUMNS, row, strict=True))
    return KeyRecord(
        id=v["id"],
        name=v["name"],
        key_hash=v["key_hash"],
        prefix=v["prefix"],
        feature=v["feature"],
        user=v["user_id"],
        roles=from_list(v["roles"]),
        created_at=v["created_at"],
        revoked_at=v["revoked_at"],
        limits=KeyLimits(
            daily_usd=v["daily_usd"],
            monthly_usd=v["monthly_usd"],
            rpm=v["rpm"],
            tpm=v["tpm"],
            models=from_list(v["models"]),
            expires_at=v["expires_at"],
        ),
        team=v["team"],
        owner=v["owner"],
    )

"""The one record-store interface, so the gateway never knows which database is behind it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from bastion.store.models import CallRecord, GroupBy, KeyRecord, LedgerEntry, PromptVersion

__all__ = ["RecordStore"]


@runtime_checkable
class RecordStore(Protocol):
    """Keys, call log and spend ledger; connection failures raise ``StateUnavailable``."""

    # -- lifecycle -------------------------------------------------------------------------------

    async def migrate(self) -> None:
        """Bring the schema up to date; safe to run repeatedly and from several processes."""
        ...

    async def ping(self) -> None:
        """Prove the backend answers, for readiness checks; raises ``StateUnavailable`` if not."""
        ...

    async def close(self) -> None:
        """Release connections; the store cannot be used afterwards."""
        ...

    async def __aenter__(self) -> RecordStore:
        """Let ``async with open_store(url) as store:`` guarantee ``close()``."""
        ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    # -- keys ------------------------------------------------------------------------------------

    async def create_key(self, key: KeyRecord) -> None:
        """Store a key; raises ``Conflict`` if its id, hash or active name is taken."""
        ...

    async def get_key_by_hash(self, key_hash: str) -> KeyRecord | None:
        """Find the active key for an authenticating secret's hash; revoked keys are invisible."""
        ...

    async def get_key(self, key_id: str) -> KeyRecord | None:
        """Find a key by id, revoked or not, for administration."""
        ...

    async def list_keys(self, include_revoked: bool = False) -> list[KeyRecord]:
        """List keys oldest first, for administration."""
        ...

    async def update_key(self, key: KeyRecord) -> bool:
        """Store an active key's limits, team and owner; False if it is unknown or revoked."""
        ...

    async def revoke_key(self, id_or_name: str) -> bool:
        """Revoke the active key with this id or name; False if there was none."""
        ...

    # -- calls -----------------------------------------------------------------------------------

    async def insert_calls(self, records: Sequence[CallRecord]) -> int:
        """Write a batch in one transaction; known records are skipped (replay-safe).

        A record is known by its request_id (SQLite) or its (request_id, ts) (PostgreSQL, whose
        partitioned call table needs ts in every unique key); a replay carries both unchanged.
        """
        ...

    async def get_calls_by_trace(self, trace_id: str) -> list[CallRecord]:
        """Every call of one trace, oldest first."""
        ...

    async def recent_calls(self, limit: int, feature: str | None = None) -> list[CallRecord]:
        """The newest calls, newest first, optionally of one feature."""
        ...

    async def delete_call_bodies_before(self, ts: float) -> int:
        """Drop prompt and answer text of calls started before ``ts``, keeping their metadata."""
        ...

    async def delete_calls_before(self, ts: float) -> int:
        """Drop whole call records started before ``ts``; the spend ledger is kept."""
        ...

    # -- ledger ----------------------------------------------------------------------------------

    async def insert_ledger(self, entries: Sequence[LedgerEntry]) -> int:
        """Write spend entries in one transaction; known request_ids are skipped."""
        ...

    async def spend_by_day(
        self, day: str, group_by: GroupBy | None = None
    ) -> dict[str | None, float]:
        """Sum one day's spend, per group or (``group_by=None``) as ``{None: total}``."""
        ...

    async def spend_between(
        self, start: float, end: float, group_by: GroupBy | None = None
    ) -> dict[str | None, float]:
        """Sum the spend of entries with ``start <= ts < end``, like ``spend_by_day``."""
        ...

    # -- prompt registry -------------------------------------------------------------------------

    async def create_prompt_version(self, prompt: PromptVersion) -> bool:
        """Store an immutable version: True if new, False if the same text is already there;
        ``Conflict`` if that version exists with different text."""
        ...

    async def get_prompt_version(self, name: str, version: int) -> PromptVersion | None:
        """One version of a prompt."""
        ...

    async def latest_prompt_version(self, name: str) -> int | None:
        """The highest version of a prompt, if any."""
        ...

    async def set_prompt_label(self, name: str, label: str, version: int) -> None:
        """Point a label (``production``) at an existing version; ``NotFound`` otherwise."""
        ...

    async def prompt_label(self, name: str, label: str) -> int | None:
        """The version a label points at."""
        ...

    async def list_prompts(self) -> list[PromptVersion]:
        """Every version of every prompt, by name then version."""
        ...

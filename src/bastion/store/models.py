"""The records Bastion keeps, immutable so a record queued for writing cannot change under it."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from bastion.findings import Finding, findings_of
from bastion.providers.base import Format

__all__ = [
    "ApiFormat",
    "CallRecord",
    "GroupBy",
    "KeyLimits",
    "KeyRecord",
    "LedgerEntry",
    "PromptVersion",
    "hash_secret",
    "new_key_id",
]

ApiFormat = Format  # the one spelling of a wire format (a str: stored as its value)
GroupBy = Literal["feature", "user_id", "key_id", "model"]

KEY_PREFIX_CHARS = 12


def hash_secret(secret: str) -> str:
    """Hash a virtual key's secret so the store never holds anything that authenticates."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_key_id() -> str:
    """Make a key id that can be shown and logged, unlike the secret."""
    return "key_" + secrets.token_hex(6)


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyLimits:
    """What one key may spend and send; None (or no models) means no limit of the key's own.

    Budgets are caps in the same atomic reserve as every other cap (cost/key_caps.py); the
    day and the calendar month are those of the configured cost time zone.
    """

    daily_usd: float | None = None
    monthly_usd: float | None = None
    rpm: float | None = None
    tpm: int | None = None
    models: tuple[str, ...] = ()
    expires_at: float | None = None

    def expired(self, now: float) -> bool:
        """Whether the key stopped authenticating at ``expires_at``."""
        return self.expires_at is not None and now >= self.expires_at


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyRecord:
    """A virtual key: who may call and as what; the secret is kept only as its hash."""

    id: str
    name: str
    key_hash: str
    prefix: str
    created_at: float
    feature: str | None = None
    user: str | None = None
    roles: tuple[str, ...] = ()
    revoked_at: float | None = None
    limits: KeyLimits = KeyLimits()  # migration 5, with team and owner
    team: str | None = None
    owner: str | None = None

    @property
    def revoked(self) -> bool:
        """Whether the key no longer authenticates."""
        return self.revoked_at is not None

    @classmethod
    def from_secret(
        cls,
        secret: str,
        *,
        name: str,
        feature: str | None = None,
        user: str | None = None,
        roles: tuple[str, ...] = (),
        created_at: float | None = None,
        id: str | None = None,
        limits: KeyLimits | None = None,
        team: str | None = None,
        owner: str | None = None,
    ) -> KeyRecord:
        """Build the stored form of a new secret so callers cannot get hash or prefix wrong."""
        return cls(
            id=id or new_key_id(),
            name=name,
            key_hash=hash_secret(secret),
            prefix=secret[:KEY_PREFIX_CHARS],
            created_at=time.time() if created_at is None else created_at,
            feature=feature,
            user=user,
            roles=tuple(roles),
            limits=limits or KeyLimits(),
            team=team,
            owner=owner,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class CallRecord:
    """Everything worth keeping about one call; text arrives already scrubbed and truncated."""

    request_id: str
    trace_id: str
    ts: float
    api_format: ApiFormat
    requested_model: str
    key_id: str | None = None
    user_id: str | None = None
    feature: str | None = None
    conversation_id: str | None = None
    served_model: str | None = None
    deployment: str | None = None
    provider: str | None = None
    prompt_name: str | None = None
    prompt_version: str | None = None
    stream: bool = False
    status: int = 200
    error_type: str | None = None
    input_text: str | None = None
    output_text: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    attempts: int = 0
    failover: bool = False
    hedged: bool = False
    degraded: bool = False
    retried: bool = False
    flags: dict[str, Any] = field(default_factory=dict, hash=False)
    stages: dict[str, float] = field(default_factory=dict, hash=False)
    # The client's own X-Request-Id: stored to find a call by it, never a key (added in
    # migration 3, so it is the last column, as field order is column order).
    client_request_id: str | None = None
    # What the safety detectors concluded, with score, reasons and version (migration 4).
    findings: tuple[Finding, ...] = field(default=(), hash=False)

    def __post_init__(self) -> None:
        # a record read back from a journal or spill line holds the findings' dicts
        f = self.findings
        if not isinstance(f, tuple) or not all(isinstance(x, Finding) for x in f):
            kept = findings_of(f if isinstance(f, list | tuple) else ())
            object.__setattr__(self, "findings", kept)


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerEntry:
    """One call's spend, kept apart from the call log so retention never erases what was spent."""

    request_id: str
    ts: float
    day: str
    model: str
    key_id: str | None = None
    user_id: str | None = None
    feature: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class PromptVersion:
    """One immutable version of a named prompt template (labels point at versions)."""

    name: str
    version: int
    instructions: str
    spotlight: str | None = None
    created_at: float = 0.0
    created_by: str | None = None

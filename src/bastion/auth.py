"""Virtual keys: minted here, stored only as a SHA-256 hash, resolved to a ``Principal`` per call.

Resolution is cached for a short, configured time so the store is not on every
request's path; a revocation takes effect within that time on every replica.
When the record store is down, a key this process already resolved keeps
working for a bounded time (stale-while-error) so an outage of the store does
not take every caller down; a key it never saw fails closed, and a revocation is
honoured at the first lookup that succeeds again.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from .call import Principal
from .errors import AuthenticationFailed, InvalidRequest, StateUnavailable
from .store import KeyLimits, KeyRecord, RecordStore, hash_secret

KEY_PREFIX = "bst-"
DEFAULT_STALE_SECONDS = 300.0
_RETRY_FLOOR = 0.5  # during an outage, a stale key asks the store again at most this often

log = logging.getLogger("bastion.auth")


# The fields of a key an operator may set at creation and change later (CLI, admin API, page).
KEY_FIELDS = ("daily_usd", "monthly_usd", "rpm", "tpm", "models", "expires_at", "team", "owner")
_META_MAX = 200  # characters of a team or owner name
_MODELS_MAX = 100


def new_key(
    name: str,
    *,
    feature: str | None = None,
    user: str | None = None,
    roles: tuple[str, ...] = (),
    limits: KeyLimits | None = None,
    team: str | None = None,
    owner: str | None = None,
) -> tuple[str, KeyRecord]:
    """Mint a key: the secret is returned once and only its hash is kept."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    record = KeyRecord.from_secret(
        secret,
        name=name,
        feature=feature,
        user=user,
        roles=roles,
        limits=limits,
        team=team,
        owner=owner,
    )
    return secret, record


def _cleared(value: object) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in ("", "none"))


def _number(name: str, value: object, *, zero_ok: bool) -> float | None:
    if _cleared(value):
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidRequest(f"{name}: must be a number (or null to remove it)", param=name)
    try:
        n = float(value)
    except ValueError:
        raise InvalidRequest(f"{name}: {value!r} is not a number", param=name) from None
    if not math.isfinite(n) or n < 0 or (n == 0 and not zero_ok):
        bound = "zero or more" if zero_ok else "more than zero"
        raise InvalidRequest(f"{name}: must be {bound}, not {value!r}", param=name)
    return n


def _text(name: str, value: object) -> str | None:
    if _cleared(value):
        return None
    if not isinstance(value, str) or len(value.strip()) > _META_MAX:
        raise InvalidRequest(f"{name}: must be text of at most {_META_MAX} characters", param=name)
    return value.strip()


def _models(value: object) -> tuple[str, ...]:
    if _cleared(value):
        return ()
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(m, str) for m in items):
        raise InvalidRequest(
            "models: must be a list of model names (or a comma-separated string)", param="models"
        )
    names = tuple(dict.fromkeys(m.strip() for m in items if m.strip()))
    if len(names) > _MODELS_MAX or any(len(m) > _META_MAX for m in names):
        raise InvalidRequest(f"models: at most {_MODELS_MAX} names", param="models")
    return names


def parse_expiry(value: object, tz: str = "UTC") -> float | None:
    """An expiry as epoch seconds: a number, an ISO 8601 time, or a date (its midnight in ``tz``)."""
    if _cleared(value):
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _number("expires_at", value, zero_ok=False)
    if not isinstance(value, str):
        raise InvalidRequest("expires_at: must be an ISO 8601 date or time", param="expires_at")
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(tz)).timestamp()
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(
            f"expires_at: {text!r} is not an ISO 8601 date (2027-01-01) or time", param="expires_at"
        ) from None
    return (when if when.tzinfo else when.replace(tzinfo=ZoneInfo(tz))).timestamp()


def with_fields(record: KeyRecord, fields: Mapping[str, object], tz: str = "UTC") -> KeyRecord:
    """The key with the given limits and metadata set (None or "none" removes one).

    One validator for the CLI, the admin API and the dashboard, so each refuses the same
    values with the same message naming the field.
    """
    unknown = sorted(set(fields) - set(KEY_FIELDS))
    if unknown:
        raise InvalidRequest(
            f"unknown key field {unknown[0]!r}: use {', '.join(KEY_FIELDS)}", param=unknown[0]
        )
    lim = record.limits
    changes: dict[str, object] = {}
    for name in ("daily_usd", "monthly_usd"):
        if name in fields:
            changes[name] = _number(name, fields[name], zero_ok=True)
    if "rpm" in fields:
        changes["rpm"] = _number("rpm", fields["rpm"], zero_ok=False)
    if "tpm" in fields:
        tpm = _number("tpm", fields["tpm"], zero_ok=False)
        if tpm is not None and tpm != int(tpm):
            raise InvalidRequest("tpm: must be a whole number of tokens", param="tpm")
        changes["tpm"] = None if tpm is None else int(tpm)
    if "models" in fields:
        changes["models"] = _models(fields["models"])
    if "expires_at" in fields:
        changes["expires_at"] = parse_expiry(fields["expires_at"], tz)
    limits = replace(lim, **changes) if changes else lim  # type: ignore[arg-type]
    team = _text("team", fields["team"]) if "team" in fields else record.team
    owner = _text("owner", fields["owner"]) if "owner" in fields else record.owner
    return replace(record, limits=limits, team=team, owner=owner)


def iso_utc(ts: float | None) -> str | None:
    """A timestamp as ISO 8601 UTC, for messages and listings."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _expired(principal: Principal) -> AuthenticationFailed:
    exp = principal.limits.expires_at if principal.limits else None
    return AuthenticationFailed(f"API key {principal.key_id} expired at {iso_utc(exp)}")


def key_from_headers(headers: Mapping[str, str]) -> str | None:
    """The caller's key: ``x-api-key`` (Anthropic SDK) or ``Authorization: Bearer`` (OpenAI SDK)."""
    key = headers.get("x-api-key")
    if key:
        return key.strip()
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None


@dataclass(frozen=True, slots=True)
class _Known:
    """A key the store vouched for at ``checked``; served from cache until ``fresh_until``."""

    principal: Principal
    fresh_until: float
    checked: float


class KeyResolver:
    """Turns a presented secret into a ``Principal``: a short cache, and stale answers in an outage.

    Valid and invalid keys are cached apart, so a flood of bogus keys evicts only other bogus
    keys, never the known-good entries an outage would fall back on.
    """

    __slots__ = ("_bad", "_good", "_max", "_store", "_ttl", "stale")

    def __init__(
        self,
        store: RecordStore,
        *,
        ttl: float,
        stale: float = DEFAULT_STALE_SECONDS,
        max_entries: int = 10_000,
    ) -> None:
        self._store = store
        self._ttl = ttl
        self._max = max_entries
        self._good: dict[str, _Known] = {}
        self._bad: dict[str, float] = {}  # digest -> cached until (unknown or revoked)
        self.stale = stale  # seconds after its last good lookup a key survives a store outage

    async def resolve(self, secret: str | None) -> Principal:
        if not secret:
            raise AuthenticationFailed("missing API key: send x-api-key or Authorization: Bearer")
        digest = hash_secret(secret)
        now = time.monotonic()
        known = self._good.get(digest)
        if known is not None and known.fresh_until > now:
            return self._unexpired(known.principal)
        bad_until = self._bad.get(digest)
        if bad_until is not None and bad_until > now:
            raise AuthenticationFailed("invalid API key")
        try:
            rec = await self._store.get_key_by_hash(digest)
        except StateUnavailable as exc:
            return self._unexpired(self._stale(digest, exc))
        now = time.monotonic()
        if rec is None or rec.revoked_at is not None:
            self._good.pop(digest, None)
            if len(self._bad) >= self._max:
                self._bad.clear()
            self._bad[digest] = now + self._ttl
            raise AuthenticationFailed("invalid API key")
        principal = Principal(
            key_id=rec.id,
            name=rec.name,
            feature=rec.feature,
            user=rec.user,
            roles=tuple(rec.roles),
            limits=rec.limits,
            team=rec.team,
        )
        if digest not in self._good and len(self._good) >= self._max:
            self._evict(now)
        self._good[digest] = _Known(principal, now + self._ttl, now)
        return self._unexpired(principal)

    @staticmethod
    def _unexpired(principal: Principal) -> Principal:
        """Expiry is checked on every call, cached or not: a key stops at its minute, not later."""
        lim = principal.limits
        if lim is not None and lim.expires_at is not None and lim.expired(time.time()):
            raise _expired(principal)
        return principal

    def _stale(self, digest: str, exc: StateUnavailable) -> Principal:
        """The last good answer for a key while the store is down, if it is recent enough."""
        now = time.monotonic()
        known = self._good.get(digest)
        if known is None or known.checked + self.stale <= now:
            raise exc  # never seen (or too long ago): fail closed
        log.warning(
            "record store unavailable; serving key %s from a %.0fs old lookup (%s)",
            known.principal.key_id,
            now - known.checked,
            exc.__cause__ or exc,
        )
        # ask the store again soon, not on every call: each failed lookup may wait its timeout
        retry = now + max(self._ttl, _RETRY_FLOOR)
        self._good[digest] = _Known(known.principal, retry, known.checked)
        return known.principal

    def _evict(self, now: float) -> None:
        for d in [d for d, k in self._good.items() if k.checked + self.stale <= now]:
            del self._good[d]
        if len(self._good) >= self._max:
            self._good.clear()

    def invalidate(self) -> None:
        self._good.clear()
        self._bad.clear()

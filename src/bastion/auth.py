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
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass

from .call import Principal
from .errors import AuthenticationFailed, StateUnavailable
from .store import KeyRecord, RecordStore, hash_secret

KEY_PREFIX = "bst-"
DEFAULT_STALE_SECONDS = 300.0
_RETRY_FLOOR = 0.5  # during an outage, a stale key asks the store again at most this often

log = logging.getLogger("bastion.auth")


def new_key(
    name: str,
    *,
    feature: str | None = None,
    user: str | None = None,
    roles: tuple[str, ...] = (),
) -> tuple[str, KeyRecord]:
    """Mint a key: the secret is returned once and only its hash is kept."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    record = KeyRecord.from_secret(secret, name=name, feature=feature, user=user, roles=roles)
    return secret, record


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
            return known.principal
        bad_until = self._bad.get(digest)
        if bad_until is not None and bad_until > now:
            raise AuthenticationFailed("invalid API key")
        try:
            rec = await self._store.get_key_by_hash(digest)
        except StateUnavailable as exc:
            return self._stale(digest, exc)
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
        )
        if digest not in self._good and len(self._good) >= self._max:
            self._evict(now)
        self._good[digest] = _Known(principal, now + self._ttl, now)
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

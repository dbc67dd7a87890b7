"""Virtual keys: minted here, stored only as a SHA-256 hash, resolved to a ``Principal`` per call.

Resolution is cached for a short, configured time so the store is not on every
request's path; a revocation takes effect within that time on every replica.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping

from .call import Principal
from .errors import AuthenticationFailed
from .store import KeyRecord, RecordStore, hash_secret

KEY_PREFIX = "bst-"


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


class KeyResolver:
    """Turns a presented secret into a ``Principal`` with a short positive/negative cache."""

    __slots__ = ("_cache", "_max", "_store", "_ttl")

    def __init__(self, store: RecordStore, *, ttl: float, max_entries: int = 10_000) -> None:
        self._store = store
        self._ttl = ttl
        self._max = max_entries
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    async def resolve(self, secret: str | None) -> Principal:
        if not secret:
            raise AuthenticationFailed("missing API key: send x-api-key or Authorization: Bearer")
        digest = hash_secret(secret)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            principal = hit[1]
        else:
            rec = await self._store.get_key_by_hash(digest)
            principal = None
            if rec is not None and rec.revoked_at is None:
                principal = Principal(
                    key_id=rec.id,
                    name=rec.name,
                    feature=rec.feature,
                    user=rec.user,
                    roles=tuple(rec.roles),
                )
            if len(self._cache) >= self._max:
                self._cache.clear()
            self._cache[digest] = (now + self._ttl, principal)
        if principal is None:
            raise AuthenticationFailed("invalid API key")
        return principal

    def invalidate(self) -> None:
        self._cache.clear()

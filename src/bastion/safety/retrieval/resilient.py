"""Retrieval that answers within its budget even when the store is down, and screens what it returns.

Around any ``Retriever``: a short per-query cache (keyed by the normalized query AND the
caller's access set, so one caller's documents are never served to another), a timeout, a
circuit breaker in the counter store, and a graceful path: when the store fails, the last
chunks for that query and access set if they are recent enough (stale window), else no RAG
(no documents, ``degraded=True``). Every document is then screened: a defence-in-depth ACL
re-check, an injection score from a caller-supplied scanner, and its source against the
trusted list — each finding flagged or dropped as configured. Counter-store trouble never
blocks retrieval: breaker calls get a few milliseconds and are skipped when they fail.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from bastion.errors import ConfigError
from bastion.state import BreakerPolicy, CounterStore

from .base import AccessContext, Doc, Retriever, normalize_query

__all__ = ["INJECTION_FLAG", "UNTRUSTED_FLAG", "ResilientRetriever", "Retrieval"]

log = logging.getLogger(__name__)

Action = Literal["flag", "drop"]
INJECTION_FLAG = "injection_suspected"
UNTRUSTED_FLAG = "untrusted_source"
DEFAULT_BREAKER = BreakerPolicy(
    failure_threshold=3, error_rate=0.5, window_seconds=30.0, min_calls=10, cooldown_seconds=10.0
)


@dataclass(frozen=True, slots=True)
class Retrieval:
    """Documents for the prompt, and how they were obtained (for the call record)."""

    docs: tuple[Doc, ...]
    degraded: bool = False
    cached: bool = False
    stale: bool = False
    reason: str | None = None
    dropped: int = 0


@dataclass(slots=True)
class _Entry:
    at: float
    docs: tuple[Doc, ...]


_Key = tuple[str, tuple[str, tuple[str, ...], str | None], int]


class ResilientRetriever:
    """Wraps a retriever with cache, timeout, breaker, fallback and screening (see module doc)."""

    def __init__(
        self,
        inner: Retriever,
        state: CounterStore,
        *,
        name: str = "default",
        timeout: float = 0.3,
        cache_ttl: float = 30.0,
        stale_ttl: float = 300.0,
        max_entries: int = 2048,
        breaker: BreakerPolicy = DEFAULT_BREAKER,
        state_timeout: float = 0.05,
        scan: Callable[[str], float] | None = None,
        scan_threshold: float = 0.5,
        on_injection: Action = "flag",
        trusted_sources: Iterable[str] | None = None,
        on_untrusted: Action = "flag",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 10.0 <= cache_ttl <= 60.0:
            raise ConfigError(f"retrieval cache_ttl must be 10-60 seconds, got {cache_ttl}")
        if stale_ttl < cache_ttl:
            raise ConfigError("retrieval stale_ttl must be at least cache_ttl")
        if not timeout > 0 or max_entries < 1:
            raise ConfigError("retrieval timeout must be positive and max_entries >= 1")
        self.inner = inner
        self._state = state
        self._breaker_key = f"retrieval:{name}"
        self._timeout = timeout
        self._ttl = cache_ttl
        self._stale_ttl = stale_ttl
        self._max = max_entries
        self._policy = breaker
        self._state_timeout = state_timeout
        self._scan = scan
        self._threshold = scan_threshold
        self._on_injection = on_injection
        self._trusted = None if trusted_sources is None else tuple(trusted_sources)
        self._on_untrusted = on_untrusted
        self._clock = clock
        self._cache: OrderedDict[_Key, _Entry] = OrderedDict()

    async def search(self, query: str, access: AccessContext, k: int) -> list[Doc]:
        """The ``Retriever`` protocol: just the documents."""
        return list((await self.retrieve(query, access, k)).docs)

    async def retrieve(self, query: str, access: AccessContext, k: int = 5) -> Retrieval:
        """Documents within ``timeout``: fresh cache, else the store, else stale cache or none."""
        key: _Key = (normalize_query(query), access.cache_key(), k)
        entry = self._cache.get(key)
        if entry is not None and self._clock() - entry.at < self._ttl:
            self._cache.move_to_end(key)
            return Retrieval(entry.docs, cached=True)
        if not await self._allowed():
            return self._fallback(key, "breaker_open")
        try:
            async with asyncio.timeout(self._timeout):
                found = await self.inner.search(query, access, k)
        except TimeoutError:
            await self._record(False)
            return self._fallback(key, "timeout")
        except Exception as exc:
            log.warning("retrieval %s failed: %r", self._breaker_key, exc)
            await self._record(False)
            return self._fallback(key, "error")
        await self._record(True)
        docs, dropped = self._screen(found, access)
        self._store(key, docs)
        return Retrieval(docs, dropped=dropped)

    def _fallback(self, key: _Key, reason: str) -> Retrieval:
        entry = self._cache.get(key)
        if entry is not None and self._clock() - entry.at < self._stale_ttl:
            return Retrieval(entry.docs, degraded=True, cached=True, stale=True, reason=reason)
        return Retrieval((), degraded=True, reason=reason)

    def _store(self, key: _Key, docs: tuple[Doc, ...]) -> None:
        self._cache[key] = _Entry(self._clock(), docs)
        self._cache.move_to_end(key)
        while len(self._cache) > self._max:
            self._cache.popitem(last=False)

    def clear(self) -> None:
        """Forget every cached chunk (after an ACL change, say)."""
        self._cache.clear()

    async def _allowed(self) -> bool:
        try:
            async with asyncio.timeout(self._state_timeout):
                decision = await self._state.breaker_allow(self._breaker_key, self._policy)
        except Exception as exc:  # the counter store must not become retrieval's SPOF
            log.debug("retrieval breaker unavailable, trying the store: %r", exc)
            return True
        return decision.allowed

    async def _record(self, ok: bool) -> None:
        try:
            async with asyncio.timeout(self._state_timeout):
                await self._state.breaker_record(self._breaker_key, ok, self._policy)
        except Exception as exc:
            log.debug("retrieval breaker not updated: %r", exc)

    def _screen(self, found: Iterable[Doc], access: AccessContext) -> tuple[tuple[Doc, ...], int]:
        kept: list[Doc] = []
        dropped = 0
        for doc in found:
            if not doc.acl.visible_to(access):
                log.error("retriever returned doc %s outside the caller's access", doc.id)
                dropped += 1
                continue
            flags = set(doc.flags)
            if self._scan is not None and self._suspicious(doc):
                if self._on_injection == "drop":
                    dropped += 1
                    continue
                flags.add(INJECTION_FLAG)
            if self._trusted is not None and not _trusted(doc.source, self._trusted):
                if self._on_untrusted == "drop":
                    dropped += 1
                    continue
                flags.add(UNTRUSTED_FLAG)
            kept.append(dataclasses.replace(doc, flags=frozenset(flags)) if flags else doc)
        return tuple(kept), dropped

    def _suspicious(self, doc: Doc) -> bool:
        """A scanner that fails counts as a hit: an unscanned document is not trusted."""
        assert self._scan is not None
        try:
            return self._scan(doc.text) > self._threshold
        except Exception as exc:
            log.warning("injection scan failed on doc %s: %r", doc.id, exc)
            return True


def _trusted(source: str, trusted: tuple[str, ...]) -> bool:
    """Exact match, or prefix match for entries ending in ``*``."""
    return any(source.startswith(t[:-1]) if t.endswith("*") else source == t for t in trusted)

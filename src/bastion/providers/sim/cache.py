"""Prompt-cache accounting that behaves like the providers', so cache-aware code can be tested.

Token counts are estimates: ``ceil(utf-8 bytes / 4)`` of the prompt's text (system,
messages, and tool definitions as JSON). Prefixes are identified by an incremental
BLAKE2 digest of the request up to a boundary, salted with the model (and OpenAI's
``prompt_cache_key``), and kept on the ``Simulator`` instance with a TTL.

Anthropic: explicit ``cache_control`` breakpoints (at most 4). A breakpoint whose
prefix is shorter than the minimum cacheable length is not cached. A read looks
back up to 20 blocks before each breakpoint, as the API does; new prefixes at
breakpoints past the hit are written (``cache_creation_input_tokens``), and
``input_tokens`` counts only what follows the last breakpoint.

OpenAI: automatic for prompts of at least 1024 tokens, hits in 128-token steps,
reported as ``prompt_tokens_details.cached_tokens``; ``prompt_tokens`` counts all.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

LOOKBACK_BLOCKS = 20
OPENAI_STEP_TOKENS = 128
TTL_1H = 3600.0
DEFAULT_TTL = 0.0  # a breakpoint without ``ttl``: the simulator's configured TTL (5 min)


def tokens_of(nbytes: int) -> int:
    """The simulator's token estimate for a byte length: one token per 4 bytes, rounded up."""
    return (nbytes + 3) // 4


class PrefixCache:
    """Live prefix digests with expiry; bounded, evicting the least recently used."""

    __slots__ = ("_entries", "_max")

    def __init__(self, max_entries: int = 200_000) -> None:
        self._entries: OrderedDict[bytes, tuple[float, float]] = OrderedDict()
        self._max = max_entries

    def hit(self, key: bytes, now: float) -> bool:
        """Whether ``key`` is cached; a hit refreshes its TTL, as the providers do."""
        entry = self._entries.get(key)
        if entry is None:
            return False
        expires, ttl = entry
        if expires <= now:
            del self._entries[key]
            return False
        self._entries[key] = (now + ttl, ttl)
        self._entries.move_to_end(key)
        return True

    def put(self, key: bytes, ttl: float, now: float) -> None:
        self._entries[key] = (now + ttl, ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True, slots=True)
class Segment:
    """One cacheable unit of an Anthropic prompt (a tool, a system block, a content block)."""

    material: bytes
    weight: int
    ttl: float | None = None  # set when the block carries a cache_control breakpoint


@dataclass(frozen=True, slots=True)
class CacheUsage:
    """Input-token accounting of one request."""

    input_tokens: int
    cache_creation: int = 0
    cache_read: int = 0
    creation_5m: int = 0
    creation_1h: int = 0


def anthropic_usage(
    cache: PrefixCache,
    *,
    salt: bytes,
    segments: Sequence[Segment],
    min_tokens: int,
    ttl_5m: float,
    now: float,
) -> CacheUsage:
    """Read the longest cached prefix, write the breakpoints past it, count what is left."""
    hasher = hashlib.blake2b(salt, digest_size=16)
    digests: list[bytes] = []
    cums: list[int] = []
    total = 0
    for seg in segments:
        hasher.update(len(seg.material).to_bytes(8, "big"))
        hasher.update(seg.material)
        total += seg.weight
        digests.append(hasher.copy().digest())
        cums.append(total)
    total_tokens = tokens_of(total)
    points = [i for i, seg in enumerate(segments) if seg.ttl is not None]
    if not points:
        return CacheUsage(input_tokens=total_tokens)
    hit_at = -1
    for i in points:
        for j in range(i, max(-1, i - LOOKBACK_BLOCKS), -1):
            if j > hit_at and cache.hit(digests[j], now):
                hit_at = j
                break
    read = tokens_of(cums[hit_at]) if hit_at >= 0 else 0
    created_5m = created_1h = 0
    prev = read
    for i in points:
        tokens = tokens_of(cums[i])
        if i <= hit_at or tokens < min_tokens:
            continue
        ttl = segments[i].ttl or ttl_5m
        cache.put(digests[i], ttl, now)
        if ttl >= TTL_1H:
            created_1h += tokens - prev
        else:
            created_5m += tokens - prev
        prev = tokens
    creation = created_5m + created_1h
    return CacheUsage(
        input_tokens=max(0, total_tokens - read - creation),
        cache_creation=creation,
        cache_read=read,
        creation_5m=created_5m,
        creation_1h=created_1h,
    )


def openai_usage(
    cache: PrefixCache,
    *,
    salt: bytes,
    prompt: bytes,
    min_tokens: int,
    ttl: float,
    now: float,
) -> CacheUsage:
    """Automatic caching: the longest cached prefix in 128-token steps from ``min_tokens``."""
    total_tokens = tokens_of(len(prompt))
    if total_tokens < min_tokens:
        return CacheUsage(input_tokens=total_tokens)
    hasher = hashlib.blake2b(salt, digest_size=16)
    marks: list[tuple[int, bytes]] = []
    fed = 0
    for t in range(min_tokens, total_tokens + 1, OPENAI_STEP_TOKENS):
        end = min(len(prompt), t * 4)
        hasher.update(prompt[fed:end])
        fed = end
        marks.append((t, hasher.copy().digest()))
    cached = 0
    for t, digest in reversed(marks):
        if cache.hit(digest, now):
            cached = t
            break
    for t, digest in marks:
        if t > cached:
            cache.put(digest, ttl, now)
    return CacheUsage(input_tokens=total_tokens, cache_read=cached)

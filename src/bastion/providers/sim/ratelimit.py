"""A provider's request rate limit: fixed windows of R requests per W seconds, per fault string.

Real providers count requests per window and tell the client where it stands on every answer,
which is what a gateway needs to avoid sending requests that will be refused:

- OpenAI: ``x-ratelimit-limit-requests``, ``x-ratelimit-remaining-requests`` and
  ``x-ratelimit-reset-requests`` (a duration such as ``20ms``, ``1.5s``, ``6m0s``); a 429 adds
  ``retry-after`` (whole seconds) and ``retry-after-ms``.
- Anthropic: ``anthropic-ratelimit-requests-limit``, ``-remaining`` and ``-reset`` (an RFC 3339
  time); a 429 adds ``retry-after`` (whole seconds).

Times are rounded up to the millisecond (whole seconds for ``retry-after``), never down, so a
client that waits what it was told is not refused again.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from ..base import Format

__all__ = ["RateLimiter", "Verdict"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """One request's fate under the limit, and the headers that say where the client stands."""

    allowed: bool
    headers: dict[str, str]


class RateLimiter:
    """Fixed windows aligned to each key's first request; the clock is the simulator's."""

    __slots__ = ("_windows",)

    def __init__(self) -> None:
        self._windows: dict[str, tuple[float, int]] = {}  # key -> (window start, requests in it)

    def clear(self) -> None:
        self._windows.clear()

    def admit(self, key: str, limit: int, window_s: float, now: float, fmt: Format) -> Verdict:
        """Count this request if the window has room; refuse it (with the reset time) if not."""
        start, count = self._windows.get(key, (now, 0))
        if now - start >= window_s:
            start, count = now - (now - start) % window_s, 0
        reset_in = start + window_s - now
        allowed = count < limit
        if allowed:
            count += 1
        self._windows[key] = (start, count)
        return Verdict(allowed, limit_headers(fmt, limit, limit - count, reset_in, not allowed))


def limit_headers(
    fmt: Format, limit: int, remaining: int, reset_in: float, refused: bool
) -> dict[str, str]:
    """The provider's own rate-limit headers (plus Retry-After on a refusal)."""
    ms = max(1, math.ceil(reset_in * 1000))
    out: dict[str, str] = {}
    if refused:
        out["retry-after"] = str(math.ceil(ms / 1000))
    if fmt is Format.ANTHROPIC:
        out["anthropic-ratelimit-requests-limit"] = str(limit)
        out["anthropic-ratelimit-requests-remaining"] = str(remaining)
        out["anthropic-ratelimit-requests-reset"] = _rfc3339(math.ceil(time.time() * 1000) + ms)
    else:
        if refused:
            out["retry-after-ms"] = str(ms)
        out["x-ratelimit-limit-requests"] = str(limit)
        out["x-ratelimit-remaining-requests"] = str(remaining)
        out["x-ratelimit-reset-requests"] = _duration(ms)
    return out


def _rfc3339(epoch_ms: int) -> str:
    """RFC 3339 in UTC with milliseconds."""
    when = datetime.fromtimestamp(epoch_ms // 1000, tz=UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S") + f".{epoch_ms % 1000:03d}Z"


def _duration(ms: int) -> str:
    """OpenAI's reset format: ``20ms``, ``1.5s``, ``6m0s``."""
    if ms < 1000:
        return f"{ms}ms"
    minutes, rest = divmod(ms, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"

"""Days in the configured time zone: spend caps and day counters reset at its midnight."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo


class DayClock:
    """Maps wall-clock times to the cap day, and tells how long until the next one.

    The current day's bounds are cached: several guards ask on every call, and
    building a zone-aware datetime each time showed up in profiles.
    """

    __slots__ = ("_cached", "_tz")

    def __init__(self, tz: str = "UTC") -> None:
        self._tz = ZoneInfo(tz)
        self._cached: tuple[float, float, str] = (0.0, 0.0, "")  # [start, end) and its name

    def day(self, ts: float | None = None) -> str:
        t = time.time() if ts is None else ts
        start, end, name = self._cached
        if start <= t < end:
            return name
        now = datetime.fromtimestamp(t, self._tz)
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        following = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        name = now.strftime("%Y-%m-%d")
        self._cached = (midnight.timestamp(), following.timestamp(), name)
        return name

    def seconds_to_next_day(self, ts: float | None = None) -> float:
        now = datetime.fromtimestamp(time.time() if ts is None else ts, self._tz)
        nxt = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        return max(1.0, (nxt - now).total_seconds())

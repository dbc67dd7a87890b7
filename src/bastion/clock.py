"""Days in the configured time zone: spend caps and day counters reset at its midnight."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo


class DayClock:
    """Maps wall-clock times to the cap day, and tells how long until the next one."""

    __slots__ = ("_tz",)

    def __init__(self, tz: str = "UTC") -> None:
        self._tz = ZoneInfo(tz)

    def day(self, ts: float | None = None) -> str:
        return datetime.fromtimestamp(time.time() if ts is None else ts, self._tz).strftime(
            "%Y-%m-%d"
        )

    def seconds_to_next_day(self, ts: float | None = None) -> float:
        now = datetime.fromtimestamp(time.time() if ts is None else ts, self._tz)
        nxt = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        return max(1.0, (nxt - now).total_seconds())

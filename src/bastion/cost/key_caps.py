"""A key's own limits as ordinary caps and buckets, and its model allow-list as an admit guard.

A key's daily and monthly budgets are not a second spending path: they become ``Cap`` entries
in the call's ``budget_caps``, so every attempt reserves against them in the same atomic step
as the global, feature and user caps. The daily one shares its counter with the configured
``per_key_daily_usd`` (the tighter limit wins); the monthly one is counted per calendar month
of the configured cost time zone. RPM and TPM likewise tighten the per-key token buckets of
the rate limiter.
"""

from __future__ import annotations

from datetime import datetime
from fnmatch import fnmatchcase
from zoneinfo import ZoneInfo

from ..call import Call, Principal
from ..config import BucketConfig
from ..errors import PermissionDenied
from ..state import Cap

__all__ = [
    "MONTH_TTL",
    "KeyModelGuard",
    "key_bucket",
    "key_caps",
    "month_of",
    "seconds_to_next_month",
]

DAY_TTL = 2 * 86400.0
MONTH_TTL = 33 * 86400.0  # a month's counter outlives its month by a day or two, never less


def month_of(day: str) -> str:
    """The calendar month (``2026-12``) of a cap day (``2026-12-04``)."""
    return day[:7]


def seconds_to_next_month(ts: float, tz: str) -> float:
    """Seconds from ``ts`` to the first midnight of the next month in ``tz`` (at least 1)."""
    now = datetime.fromtimestamp(ts, ZoneInfo(tz))
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    nxt = datetime(year, month, 1, tzinfo=ZoneInfo(tz))
    return max(1.0, nxt.timestamp() - ts)


def _tighter(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


def key_caps(principal: Principal, day: str, per_key_daily_usd: float | None) -> list[Cap]:
    """The key's daily cap (the tighter of config and key) and its monthly cap, if any."""
    lim = principal.limits
    kid = principal.key_id
    caps: list[Cap] = []
    daily = _tighter(per_key_daily_usd, lim.daily_usd if lim else None)
    if daily is not None:
        caps.append(Cap(f"spend:{day}:key:{kid}", daily, DAY_TTL))
    if lim is not None and lim.monthly_usd is not None:
        caps.append(Cap(f"spend:{month_of(day)}:key:{kid}", lim.monthly_usd, MONTH_TTL))
    return caps


def key_bucket(configured: BucketConfig, principal: Principal) -> BucketConfig:
    """The per-key bucket for this key: the configured one, tightened by the key's RPM and TPM."""
    lim = principal.limits
    if lim is None or (lim.rpm is None and lim.tpm is None):
        return configured
    rpm = _tighter(configured.requests_per_minute, lim.rpm)
    tpm = _tighter(configured.tokens_per_minute, lim.tpm)
    return configured.model_copy(update={"requests_per_minute": rpm, "tokens_per_minute": tpm})


class KeyModelGuard:
    """Refuses a model outside the key's allow-list (names, or ``*`` patterns) before anything
    is counted or spent."""

    name = "key_models"

    async def before(self, call: Call) -> None:
        lim = call.principal.limits
        if lim is None or not lim.models or call.requested_model in lim.models:
            return
        # a pattern (``gpt-*``) admits a family; matching is case-sensitive, like model names
        if any(fnmatchcase(call.requested_model, p) for p in lim.models if "*" in p):
            return
        raise PermissionDenied(
            f"this key may not use model {call.requested_model!r}; "
            f"it may use: {', '.join(lim.models)}",
            param="model",
        )

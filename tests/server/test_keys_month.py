"""A key's monthly budget counts the calendar month of the configured cost timezone."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from bastion.call import Principal
from bastion.clock import DayClock
from bastion.cost.key_caps import key_caps, month_of, seconds_to_next_month
from bastion.store import KeyLimits

ZONES = st.sampled_from(["UTC", "Europe/Paris", "America/Los_Angeles", "Asia/Kolkata"])
TIMES = st.floats(min_value=1.7e9, max_value=2.2e9, allow_nan=False)


@given(ts=TIMES, tz=ZONES)
def test_the_month_and_its_end_are_the_cost_timezones(ts: float, tz: str) -> None:
    local = datetime.fromtimestamp(ts, ZoneInfo(tz))
    assert month_of(DayClock(tz).day(ts)) == local.strftime("%Y-%m")
    end = datetime.fromtimestamp(ts + seconds_to_next_month(ts, tz), ZoneInfo(tz))
    if seconds_to_next_month(ts, tz) > 1.0:  # at least a second, even in the last one
        assert (end.day, end.hour, end.minute) == (1, 0, 0)
        assert (end.year * 12 + end.month) - (local.year * 12 + local.month) == 1


def test_new_years_eve_in_paris_is_already_next_months_budget() -> None:
    ts = datetime(2026, 12, 31, 23, 30, tzinfo=ZoneInfo("UTC")).timestamp()
    p = Principal(key_id="k1", name="k", limits=KeyLimits(daily_usd=1.0, monthly_usd=9.0))
    caps = {c.key: c.limit for c in key_caps(p, DayClock("Europe/Paris").day(ts), None)}
    assert caps == {"spend:2027-01-01:key:k1": 1.0, "spend:2027-01:key:k1": 9.0}
    caps = {c.key: c.limit for c in key_caps(p, DayClock("UTC").day(ts), 0.5)}
    assert caps == {"spend:2026-12-31:key:k1": 0.5, "spend:2026-12:key:k1": 9.0}


def test_a_key_without_limits_adds_only_the_configured_daily_cap() -> None:
    p = Principal(key_id="k2", name="k")
    assert key_caps(p, "2026-12-04", None) == []
    assert [c.key for c in key_caps(p, "2026-12-04", 2.0)] == ["spend:2026-12-04:key:k2"]

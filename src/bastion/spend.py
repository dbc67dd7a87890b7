"""Spend by key, user, team, model or feature over the last N days, read from the spend ledger.

The ledger (not the call log) is the source: retention never erases what was spent. A team is
a key's metadata, so team spend is key spend summed through the keys table; a key deleted
from the table no longer has a team and its spend shows under ``(no team)``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Final, Literal, get_args
from zoneinfo import ZoneInfo

import typer

from .store import GroupBy, KeyRecord, RecordStore

__all__ = ["SpendBy", "SpendRow", "key_spend", "last_days", "spend_command", "spend_rows"]

SpendBy = Literal["key", "user", "team", "model", "feature"]
_COLUMN: Final[dict[SpendBy, GroupBy]] = {
    "key": "key_id",
    "user": "user_id",
    "team": "key_id",
    "model": "model",
    "feature": "feature",
}
MAX_DAYS = 366


@dataclass(frozen=True, slots=True)
class SpendRow:
    """One group's spend over the window; ``label`` names a key by its name as well."""

    group: str | None
    label: str
    spend_usd: float

    def as_json(self) -> dict[str, Any]:
        return {"group": self.group, "label": self.label, "spend_usd": self.spend_usd}


def last_days(days: int, tz: str, now: float | None = None) -> list[str]:
    """The cap days (``YYYY-MM-DD`` in ``tz``) of the last ``days`` days, today first."""
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be between 1 and {MAX_DAYS}, not {days}")
    today = datetime.fromtimestamp(time.time() if now is None else now, ZoneInfo(tz)).date()
    return [(today - timedelta(days=i)).isoformat() for i in range(days)]


def month_days(tz: str, now: float | None = None) -> list[str]:
    """The cap days of the current calendar month in ``tz`` so far, today first."""
    today = datetime.fromtimestamp(time.time() if now is None else now, ZoneInfo(tz)).date()
    return [today.replace(day=d).isoformat() for d in range(today.day, 0, -1)]


async def _sum(store: RecordStore, column: GroupBy, days: list[str]) -> dict[str | None, float]:
    out: dict[str | None, float] = {}
    for day in days:
        for group, usd in (await store.spend_by_day(day, column)).items():
            out[group] = out.get(group, 0.0) + usd
    return out


async def spend_rows(store: RecordStore, by: SpendBy, days: list[str]) -> list[SpendRow]:
    """Each group's spend over ``days``, largest first."""
    if by not in _COLUMN:
        raise ValueError(f"by must be one of {', '.join(_COLUMN)}, not {by!r}")
    sums = await _sum(store, _COLUMN[by], days)
    keys: dict[str, KeyRecord] = {}
    if by in ("key", "team"):
        keys = {k.id: k for k in await store.list_keys(include_revoked=True)}
    if by == "team":
        teams: dict[str | None, float] = {}
        for kid, usd in sums.items():
            team = keys[kid].team if kid in keys else None
            teams[team] = teams.get(team, 0.0) + usd
        sums = teams
    rows = []
    for group, usd in sums.items():
        if group is None:
            label = f"(no {by})"
        elif by == "key" and group in keys:
            label = f"{group} ({keys[group].name})"
        else:
            label = group
        rows.append(SpendRow(group, label, usd))
    return sorted(rows, key=lambda r: (-r.spend_usd, r.label))


async def key_spend(store: RecordStore, tz: str, now: float | None = None) -> dict[str, Any]:
    """Each key's spend today and this calendar month (the windows of its budgets)."""
    days = month_days(tz, now)
    today = await store.spend_by_day(days[0], "key_id")
    month = await _sum(store, "key_id", days)
    return {
        "day": days[0],
        "month": days[0][:7],
        "keys": {
            kid: {"today_usd": today.get(kid, 0.0), "month_usd": usd}
            for kid, usd in month.items()
            if kid is not None
        },
    }


def spend_command(
    by: Annotated[str, typer.Option(help="key | user | team | model | feature")] = "key",
    days: Annotated[int, typer.Option(help="how many days back, today included")] = 1,
    json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="YAML config file", envvar="BASTION_CONFIG"),
    ] = None,
) -> None:
    """Spend by key, user, team, model or feature over the last N days (from the ledger)."""
    import orjson

    from .cli_common import command_config as _load
    from .cli_common import run_coroutine as _run
    from .cli_common import with_store as _with_store

    if by not in get_args(SpendBy):
        typer.echo(f"error: --by must be one of {', '.join(get_args(SpendBy))}", err=True)
        raise typer.Exit(2)
    if not 1 <= days <= MAX_DAYS:
        typer.echo(f"error: --days must be between 1 and {MAX_DAYS}", err=True)
        raise typer.Exit(2)
    cfg = _load(config, need_store=True)
    window = last_days(days, cfg.cost.timezone)

    async def go(store: RecordStore) -> list[SpendRow]:
        return await spend_rows(store, by, window)  # type: ignore[arg-type]

    rows: list[SpendRow] = _run(_with_store(cfg, go))
    if json_out:
        payload = {
            "by": by,
            "from": window[-1],
            "to": window[0],
            "timezone": cfg.cost.timezone,
            "rows": [r.as_json() for r in rows],
            "total_usd": sum(r.spend_usd for r in rows),
        }
        typer.echo(orjson.dumps(payload).decode())
        return
    typer.echo(f"spend by {by}, {window[-1]} .. {window[0]} ({cfg.cost.timezone})")
    if not rows:
        typer.echo("no spend recorded in this window")
        return
    width = max(len(r.label) for r in rows)
    for r in rows:
        typer.echo(f"{r.label:<{width}}  ${r.spend_usd:.6f}")
    typer.echo(f"{'total':<{width}}  ${sum(r.spend_usd for r in rows):.6f}")

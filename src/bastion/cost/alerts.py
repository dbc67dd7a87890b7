"""Spend alerts: catch the runaway before the card maxes out.

A background check compares today's spend with a forecast (configured, or the
trailing 7-day average from the ledger) and with each cap, and posts a
Slack-compatible JSON payload to every webhook when a threshold is crossed —
once per threshold per day across all replicas (the claim is an atomic counter
in the shared state), with retries on the delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import aiohttp

from ..clock import DayClock
from ..config import AlertConfig, Config
from ..state import CounterStore
from ..store import RecordStore

log = logging.getLogger("bastion.alerts")


@dataclass(frozen=True, slots=True)
class Alert:
    key: str
    text: str
    spent_usd: float


class SpendAlerts:
    """Evaluates thresholds and delivers each alert at most once a day."""

    def __init__(
        self,
        config: Config,
        store: RecordStore,
        state: CounterStore,
        clock: DayClock,
        *,
        retries: int = 3,
        retry_delay: float = 0.5,
    ) -> None:
        self._cfg: AlertConfig = config.cost.alerts
        self._caps = config.cost.caps
        self._features = config.features
        self._store = store
        self._state = state
        self._clock = clock
        self._retries = retries
        self._retry_delay = retry_delay
        self._task: asyncio.Task[None] | None = None
        self.delivered: list[Alert] = []

    @property
    def active(self) -> bool:
        return bool(self._cfg.webhooks)

    async def forecast(self, day: str) -> float | None:
        """Configured, else the trailing 7-day average (None when there is no history)."""
        if self._cfg.forecast_usd is not None:
            return self._cfg.forecast_usd
        d = datetime.strptime(day, "%Y-%m-%d")
        totals = []
        for i in range(1, 8):
            prev = (d - timedelta(days=i)).strftime("%Y-%m-%d")
            spend = await self._store.spend_by_day(prev)
            total = sum(spend.values())
            if total > 0:
                totals.append(total)
        return sum(totals) / len(totals) if totals else None

    async def evaluate(self) -> list[Alert]:
        """The thresholds crossed today (not yet deduplicated)."""
        day = self._clock.day()
        by_feature = await self._store.spend_by_day(day, "feature")
        total = sum(by_feature.values())
        alerts: list[Alert] = []
        fc = await self.forecast(day)
        if fc and total > self._cfg.forecast_multiple * fc:
            alerts.append(
                Alert(
                    f"forecast:{self._cfg.forecast_multiple:g}x",
                    f":rotating_light: Bastion: spend today ${total:.2f} is over "
                    f"{self._cfg.forecast_multiple:g}x the forecast (${fc:.2f})",
                    total,
                )
            )
        caps: list[tuple[str, float, float]] = []
        if self._caps.global_daily_usd:
            caps.append(("global", self._caps.global_daily_usd, total))
        for name, f in self._features.items():
            if f.daily_budget_usd:
                caps.append((f"feature {name}", f.daily_budget_usd, by_feature.get(name, 0.0)))
        for scope, limit, spent in caps:
            for pct in sorted(self._cfg.cap_percent):
                if spent >= limit * pct / 100.0:
                    alerts.append(
                        Alert(
                            f"cap:{scope}:{pct:g}",
                            f":warning: Bastion: {scope} spend ${spent:.2f} has reached {pct:g}% "
                            f"of its ${limit:.2f} daily cap",
                            spent,
                        )
                    )
        return alerts

    async def check(self) -> list[Alert]:
        """Evaluate, claim each new alert once per day (across replicas), and deliver it."""
        day = self._clock.day()
        sent = []
        for alert in await self.evaluate():
            claim = await self._state.incr_if_below(
                f"alert:{day}:{alert.key}", 1.0, 1.0, 2 * 86400.0
            )
            if not claim.ok:
                continue
            await self.deliver(alert)
            sent.append(alert)
        return sent

    async def deliver(self, alert: Alert) -> None:
        payload: dict[str, object] = {
            "text": alert.text,
            "bastion": {"alert": alert.key, "spent_usd": round(alert.spent_usd, 4)},
        }
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
            for url in self._cfg.webhooks:
                await self._post(s, url, payload)
        self.delivered.append(alert)

    async def _post(self, s: aiohttp.ClientSession, url: str, payload: dict[str, object]) -> None:
        for attempt in range(self._retries):
            try:
                async with s.post(url, json=payload) as r:
                    if r.status < 300:
                        return
                    log.warning("alert webhook %s answered %d", url, r.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning("alert webhook %s failed: %r", url, exc)
            await asyncio.sleep(self._retry_delay * (2**attempt))
        log.error("alert not delivered to %s after %d attempts", url, self._retries)

    def start(self) -> None:
        if self.active and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="bastion-alerts")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._cfg.check_interval)
            try:
                await self.check()
            except Exception:  # an alerting failure must never take the gateway down
                log.exception("spend alert check failed")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def provider_cap_warnings(config: Config, providers_in_use: Sequence[str]) -> list[str]:
    """Belt and suspenders: the console cap cannot be set from code, so at least check it is declared."""
    out = []
    declared = config.cost.provider_caps_usd
    app_cap = config.cost.caps.global_daily_usd
    for name in providers_in_use:
        kind = config.providers[name].kind
        if kind == "sim":
            continue
        cap = declared.get(name)
        if cap is None:
            out.append(
                f"provider {name!r}: no provider-side spend cap declared; set one in its console "
                f"and record it under cost.provider_caps_usd.{name}"
            )
        elif app_cap is not None and app_cap > cap:
            out.append(
                f"provider {name!r}: the in-app daily cap ${app_cap:.2f} is higher than the "
                f"provider's console cap ${cap:.2f}; the provider will cut you off first"
            )
    return out

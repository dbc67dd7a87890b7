"""Spend alerts reach a local webhook once per threshold per day, with retries on a failing receiver."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from tests.conftest import sim_models

import bastion
from bastion.clock import DayClock
from bastion.config import load_config
from bastion.cost.alerts import provider_cap_warnings
from bastion.store import LedgerEntry


class Receiver:
    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        self.fail_first = 0

    async def handle(self, request: web.Request) -> web.Response:
        if self.fail_first > 0:
            self.fail_first -= 1
            return web.Response(status=500)
        self.payloads.append(await request.json())
        return web.Response(text="ok")


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield rec, f"http://127.0.0.1:{port}/hook"
    await runner.cleanup()


def _cfg(tmp: Path, hook: str, **cost: Any) -> dict[str, Any]:
    return {
        "store": {"url": f"sqlite:///{tmp / 'a.db'}"},
        "state": {"url": "memory://"},
        "observability": {"spill_path": str(tmp / "spill.jsonl")},
        "providers": {"sim": {"kind": "sim"}},
        "models": sim_models(),
        "features": {"default": {}, "drafts": {"daily_budget_usd": 1.0}},
        "cost": {"alerts": {"webhooks": [hook], "cap_percent": [50, 100], **cost}},
    }


async def _spend(gw: bastion.Gateway, feature: str, usd: float, day: str | None = None) -> None:
    await gw.store.insert_ledger(
        [
            LedgerEntry(
                request_id=f"r{time.monotonic_ns()}",
                ts=time.time(),
                day=day or DayClock().day(),
                model="claude-sonnet-5",
                feature=feature,
                cost_usd=usd,
            )
        ]
    )


async def test_cap_percentage_alert_fires_once_per_day(
    tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    rec, hook = receiver
    async with bastion.Gateway.from_config(None, **_cfg(tmp_path, hook)) as gw:
        await _spend(gw, "drafts", 0.6)
        sent = await gw.alerts.check()
        assert [a.key for a in sent] == ["cap:feature drafts:50"]
        assert await gw.alerts.check() == []  # once per threshold per day
        await _spend(gw, "drafts", 0.5)
        assert [a.key for a in await gw.alerts.check()] == ["cap:feature drafts:100"]
    assert len(rec.payloads) == 2
    assert "50% of its $1.00 daily cap" in rec.payloads[0]["text"]


async def test_forecast_multiple_alert_from_trailing_average(
    tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    rec, hook = receiver
    async with bastion.Gateway.from_config(None, **_cfg(tmp_path, hook, forecast_multiple=3)) as gw:
        from datetime import datetime, timedelta

        today = datetime.strptime(DayClock().day(), "%Y-%m-%d")
        for i in range(1, 4):
            await _spend(gw, "other", 1.0, (today - timedelta(days=i)).strftime("%Y-%m-%d"))
        assert await gw.alerts.forecast(DayClock().day()) == pytest.approx(1.0)
        await _spend(gw, "other", 2.5)
        assert await gw.alerts.check() == []  # 2.5 is under 3x the forecast
        await _spend(gw, "other", 1.0)
        assert [a.key for a in await gw.alerts.check()] == ["forecast:3x"]
    assert rec.payloads and "3x the forecast" in rec.payloads[-1]["text"]


async def test_delivery_retries_a_failing_webhook(
    tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    rec, hook = receiver
    rec.fail_first = 2
    async with bastion.Gateway.from_config(None, **_cfg(tmp_path, hook)) as gw:
        gw.alerts._retry_delay = 0.01
        await _spend(gw, "drafts", 0.7)
        await asyncio.wait_for(gw.alerts.check(), 10)
    assert len(rec.payloads) == 1


def test_provider_cap_attestation_warns(tmp_path: Path) -> None:
    cfg = load_config(
        None,
        overrides={
            "providers": {
                "anthropic": {"kind": "anthropic", "api_key_env": "X"},
                "openai": {"kind": "openai", "api_key_env": "Y"},
            },
            "models": {
                "m": {"deployments": [{"provider": "anthropic", "model": "claude-sonnet-5"}]}
            },
            "cost": {"caps": {"global_daily_usd": 100}, "provider_caps_usd": {"anthropic": 50}},
        },
    )
    warnings = provider_cap_warnings(cfg, ["anthropic", "openai"])
    assert any(
        "'anthropic'" in w and "higher than the provider's console cap" in w for w in warnings
    )
    assert any("'openai'" in w and "no provider-side spend cap declared" in w for w in warnings)

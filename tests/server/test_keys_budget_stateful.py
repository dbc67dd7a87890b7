"""A key's budget is one more cap in the atomic reserve: concurrent calls never overshoot it.

A hypothesis state machine drives batches of concurrent calls (both API formats, any
``max_tokens``) through the real ASGI app with a key holding a tiny daily and monthly budget,
and changes the budget between batches (as an admin would). After every batch, on the embedded
counter store and on the shared Redis (under a private prefix, removed key by key):

* every answer is a 200 or the key's 429, never anything else;
* the key's settled spend is at most the larger of what it was before the batch and the cap
  (a lowered cap stops further spend; it cannot undo spend), and nothing stays reserved;
* the month's counter moved by exactly as much as the day's (one reserve holds both);
* the spend ledger agrees with the counters, so what was settled is what was recorded.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from tests.cost._cost_support import (
    SHARED_REDIS,
    asgi_call,
    delete_prefix,
    inproc_config,
    unique_prefix,
)

from bastion.auth import new_key
from bastion.cost.key_caps import month_of
from bastion.gateway import Gateway
from bastion.store import KeyLimits

PRICE = {"input": 100.0, "output": 1000.0, "cache_write": 100.0, "cache_read": 100.0}
EPS = 1e-9
CAPS = st.sampled_from([0.0, 0.01, 0.03, 0.05, 0.08, 0.12])


class KeyBudgetMachine(RuleBasedStateMachine):
    backend = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.tmp = Path(tempfile.mkdtemp(prefix="keycap-"))
        self.prefix = unique_prefix()
        self.gw: Gateway | None = None
        self.served = 0

    def run(self, coro: Any) -> Any:
        return self.runner.run(coro)

    @initialize(daily=CAPS, monthly=CAPS)
    def start(self, daily: float, monthly: float) -> None:
        state: dict[str, Any] = {"url": "memory://"}
        if self.backend == "redis":
            state = {"url": SHARED_REDIS, "prefix": self.prefix}
        self.gw = Gateway(
            inproc_config(self.tmp, state=state, cost={"prices": {"claude-sonnet-5": PRICE}})
        )
        self.run(self.gw.start())
        self.secret, self.record = new_key(
            "tiny", limits=KeyLimits(daily_usd=daily, monthly_usd=monthly + 0.02)
        )
        self.run(self.gw.store.create_key(self.record))
        self.day = f"spend:{self.gw.clock.day()}:key:{self.record.id}"
        self.month = f"spend:{month_of(self.gw.clock.day())}:key:{self.record.id}"
        self.cap = daily

    async def _usage(self) -> tuple[float, float, float, float]:
        assert self.gw is not None
        d = await self.gw.state.usage(self.day)
        m = await self.gw.state.usage(self.month)
        return d.settled, d.reserved, m.settled, m.reserved

    @rule(
        n=st.integers(min_value=1, max_value=12),
        max_tokens=st.integers(min_value=1, max_value=60),
        openai=st.booleans(),
    )
    def fire(self, n: int, max_tokens: int, openai: bool) -> None:
        gw = self.gw
        assert gw is not None
        path = "/v1/chat/completions" if openai else "/v1/messages"
        body = {
            "model": "claude-sonnet-5",
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": "count to three"}],
        }
        before = self.run(self._usage())

        async def batch() -> list[int]:
            results = await asyncio.gather(
                *(asgi_call(gw, self.secret, path, body) for _ in range(n))
            )
            return [status for status, _, _ in results]

        statuses = self.run(batch())
        assert set(statuses) <= {200, 429}, statuses
        self.served += statuses.count(200)
        day, day_held, month, month_held = self.run(self._usage())
        assert day <= max(before[0], self.cap) + EPS, (day, before, self.cap)
        assert day_held == 0 and month_held == 0
        assert abs((month - before[2]) - (day - before[0])) < EPS

    @rule(cap=CAPS)
    def change_budget(self, cap: float) -> None:
        gw = self.gw
        assert gw is not None
        updated = replace(self.record, limits=replace(self.record.limits, daily_usd=cap))
        assert self.run(gw.store.update_key(updated))
        gw.keys.invalidate()  # as the admin API does on its replica
        self.record, self.cap = updated, cap

    @invariant()
    def ledger_matches_counters(self) -> None:
        gw = self.gw
        if gw is None:
            return

        async def check() -> None:
            await gw.recorder.flush()
            ledger = await gw.store.spend_by_day(gw.clock.day(), "key_id")
            settled = (await gw.state.usage(self.day)).settled
            assert abs(ledger.get(self.record.id, 0.0) - settled) < 1e-6, (ledger, settled)

        self.run(check())

    def teardown(self) -> None:
        try:
            if self.gw is not None:
                self.run(self.gw.aclose())
        finally:
            self.runner.close()
            shutil.rmtree(self.tmp, ignore_errors=True)
            if self.backend == "redis":
                delete_prefix(self.prefix)


class RedisKeyBudgetMachine(KeyBudgetMachine):
    backend = "redis"


SETTINGS = settings(
    max_examples=12,
    stateful_step_count=6,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.parametrize(
    "machine", [KeyBudgetMachine, RedisKeyBudgetMachine], ids=["embedded", "redis"]
)
def test_concurrent_calls_never_overshoot_a_keys_budget(machine: type[KeyBudgetMachine]) -> None:
    test = machine.TestCase
    test.settings = SETTINGS
    test().runTest()

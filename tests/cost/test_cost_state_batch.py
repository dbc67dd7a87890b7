"""A call's guards reach the counter store once to be admitted and once to settle.

Through the real gateway (in-process simulator) on Redis and on the memory store: the rate
limits, the deployment's breaker and the spend caps go in one ``admit`` batch, the settle,
the tokens-per-minute charge and the breaker's success in one ``finish`` batch; a refusal by
any guard takes nothing from the others (a budget refusal leaves the rate limit untouched);
an open breaker found in the batch sends the call to the next deployment with its limits
counted once.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis
from _cost_support import asgi_call, inproc_config, make_key, unique_prefix

from bastion.gateway import Gateway
from bastion.state import BreakerPolicy, CounterStore, open_state

REDIS_URL = "redis://127.0.0.1:6379/0"
MSG = [{"role": "user", "content": "Where is my parcel?"}]
TWO = {
    "claude-sonnet-5": {
        "deployments": [
            {"provider": "sim", "model": "claude-sonnet-5"},
            {"provider": "sim", "model": "claude-sonnet-5-b"},
        ]
    }
}


@pytest.fixture(params=["memory", "redis"])
async def state(request: pytest.FixtureRequest) -> AsyncIterator[CounterStore]:
    if request.param == "memory":
        store = open_state("memory://")
        yield store
        await store.close()
        return
    prefix = unique_prefix()
    store = open_state(REDIS_URL, prefix=prefix)
    yield store
    await store.close()
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def spy(store: CounterStore) -> Counter[str]:
    """Count the store's operations by name (the real store still does every one of them)."""
    seen: Counter[str] = Counter()
    for name in ("admit", "finish", "reserve", "settle", "release", "take", "charge", "incr",
                 "incr_if_below", "breaker_allow", "breaker_record"):  # fmt: skip
        real = getattr(store, name)

        async def counted(*a: Any, _real: Any = real, _name: str = name, **kw: Any) -> Any:
            seen[_name] += 1
            return await _real(*a, **kw)

        setattr(store, name, counted)
    return seen


def config(tmp: Path, **cost: Any) -> Any:
    limits = {"requests_per_minute": 600, "tokens_per_minute": 10**7, "calls_per_day": 1000}
    return inproc_config(
        tmp,
        models=TWO,
        cost={"rate_limits": {"global": limits}, **cost},
    )


async def call(gw: Gateway, key: str) -> tuple[int, Any]:
    body = {"model": "claude-sonnet-5", "max_tokens": 20, "messages": MSG}
    status, _, out = await asgi_call(gw, key, "/v1/messages", body)
    return status, out


def today(gw: Gateway) -> str:
    return gw.clock.day(time.time())


async def test_one_admit_and_one_finish_per_call(tmp_path: Path, state: CounterStore) -> None:
    cfg = config(tmp_path, caps={"global_daily_usd": 100.0, "per_user_daily_usd": 50.0})
    async with Gateway(cfg, state=state) as gw:
        key = await make_key(gw)
        await call(gw, key)  # warm
        seen = spy(state)
        for _ in range(5):
            status, out = await call(gw, key)
            assert status == 200, out
    assert seen == Counter({"admit": 5, "finish": 5})


async def test_a_budget_refusal_takes_nothing_from_the_rate_limits(
    tmp_path: Path, state: CounterStore
) -> None:
    cfg = config(tmp_path, caps={"per_user_daily_usd": 0.000001})
    async with Gateway(cfg, state=state) as gw:
        status, out = await call(gw, await make_key(gw))
        assert status == 429 and out["error"]["scope"].startswith("user:"), out  # the spend cap
        # neither the daily count nor the minute's bucket was charged for the refused call
        assert await state.get(f"calls:{today(gw)}:global:all") == 0.0
        bucket = await state.take("rpm:global:all", 10.0, 100.0, 0.0)  # burst 100 (600/6)
        assert bucket.remaining == pytest.approx(100.0)


async def test_a_rate_limit_refusal_names_its_guard_and_holds_nothing(
    tmp_path: Path, state: CounterStore
) -> None:
    cfg = inproc_config(
        tmp_path,
        cost={
            "rate_limits": {"global": {"calls_per_day": 1}},
            "caps": {"global_daily_usd": 50.0},
        },
    )
    async with Gateway(cfg, state=state) as gw:
        key = await make_key(gw)
        assert (await call(gw, key))[0] == 200
        status, out = await call(gw, key)
        assert status == 429 and out["error"]["scope"] == "global_calls_per_day", out
        assert gw.simulator.request_count() == 1
        cap = f"spend:{today(gw)}:global"
        assert (await state.usage(cap)).reserved == 0.0  # the refused call held nothing


async def test_an_open_breaker_found_in_the_batch_fails_over_and_counts_once(
    tmp_path: Path, state: CounterStore
) -> None:
    cfg = config(tmp_path, caps={"global_daily_usd": 100.0})
    async with Gateway(cfg, state=state) as gw:
        first = gw.router.resolve("claude-sonnet-5")[0].name
        b = cfg.reliability.breaker
        policy = BreakerPolicy(
            failure_threshold=b.failure_threshold,
            error_rate=b.error_rate,
            window_seconds=b.window_seconds,
            min_calls=b.min_calls,
            cooldown_seconds=b.cooldown_seconds,
        )
        for _ in range(max(b.failure_threshold, 1)):
            await state.breaker_record("breaker:" + first, False, policy)
        key = await make_key(gw)
        seen = spy(state)
        status, out = await call(gw, key)
        assert status == 200, out
        assert gw.simulator.request_count() == 1
        assert await state.get(f"calls:{today(gw)}:global:all") == 1.0  # counted once, not twice
        # the refused batch (breaker open) and the next deployment's, then the settle
        assert seen == Counter({"admit": 2, "finish": 1})
        assert not (await state.breaker_peek("breaker:" + first)).allowed  # still open


async def test_a_call_refused_by_every_breaker_still_counts_its_limits(
    tmp_path: Path, state: CounterStore
) -> None:
    """No deployment is tried (both breakers open, found in the batches): nothing upstream,
    nothing held, and the call still counts against the daily call limit, once."""
    cfg = config(tmp_path, caps={"global_daily_usd": 100.0})
    async with Gateway(cfg, state=state) as gw:
        b = cfg.reliability.breaker
        policy = BreakerPolicy(
            failure_threshold=b.failure_threshold,
            error_rate=b.error_rate,
            window_seconds=b.window_seconds,
            min_calls=b.min_calls,
            cooldown_seconds=b.cooldown_seconds,
        )
        for dep in gw.router.resolve("claude-sonnet-5"):
            for _ in range(max(b.failure_threshold, 1)):
                await state.breaker_record("breaker:" + dep.name, False, policy)
        status, out = await call(gw, await make_key(gw))
        assert status >= 500, out
        assert gw.simulator.request_count() == 0
        assert await state.get(f"calls:{today(gw)}:global:all") == 1.0
        assert (await state.usage(f"spend:{today(gw)}:global")).total == 0.0

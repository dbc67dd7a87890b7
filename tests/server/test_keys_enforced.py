"""A key's own limits are enforced on the real ASGI app: budgets (day and calendar month), the
model allow-list, expiry, RPM and TPM, each refused in the caller's API format."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tests.cost._cost_support import asgi_call, inproc_config

from bastion.auth import new_key
from bastion.cost.key_caps import month_of, seconds_to_next_month
from bastion.gateway import Gateway
from bastion.store import KeyLimits

PRICE = {"input": 100.0, "output": 1000.0, "cache_write": 100.0, "cache_read": 100.0}
MODELS = {
    name: {"deployments": [{"provider": "sim", "model": name}]}
    for name in ("claude-sonnet-5", "gpt-4.1-mini")
}
ASK: dict[str, Any] = {
    "model": "claude-sonnet-5",
    "max_tokens": 20,
    "messages": [{"role": "user", "content": "hello there"}],
}


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    g = Gateway(
        inproc_config(
            tmp_path,
            models=MODELS,
            cost={"prices": {"claude-sonnet-5": PRICE, "gpt-4.1-mini": PRICE}},
        )
    )
    await g.start()
    try:
        yield g
    finally:
        await g.aclose()


async def key_with(gw: Gateway, **limits: Any) -> tuple[str, str]:
    secret, rec = new_key("k-" + str(time.monotonic_ns()), limits=KeyLimits(**limits))
    await gw.store.create_key(rec)
    return secret, rec.id


def openai_body(model: str = "claude-sonnet-5") -> dict[str, Any]:
    return {**ASK, "model": model}


async def test_a_daily_key_budget_refuses_with_429_naming_the_key(gw: Gateway) -> None:
    secret, kid = await key_with(gw, daily_usd=0.05)
    statuses = []
    for _ in range(6):
        status, _headers, body = await asgi_call(gw, secret, "/v1/messages", ASK)
        statuses.append(status)
        if status == 429:
            break
    assert statuses[0] == 200 and statuses[-1] == 429, (statuses, body)
    assert body["error"]["type"] == "rate_limit_error"
    assert f"daily spend cap reached for key:{kid}" in body["error"]["message"]
    assert "limit $0.05" in body["error"]["message"]  # the caller's own key: figures shown
    usage = await gw.state.usage(f"spend:{gw.clock.day()}:key:{kid}")
    assert 0 < usage.settled <= 0.05
    assert usage.reserved == 0


async def test_a_monthly_key_budget_is_its_own_cap_reset_at_the_month(gw: Gateway) -> None:
    secret, kid = await key_with(gw, monthly_usd=0.05)  # a call holds up to $0.032
    status, _, _ = await asgi_call(gw, secret, "/v1/messages", ASK)
    assert status == 200
    status, headers, body = await asgi_call(gw, secret, "/v1/chat/completions", openai_body())
    assert status == 429
    assert body["error"]["code"] == "budget_exceeded"  # OpenAI's shape for the OpenAI route
    assert f"monthly spend cap reached for key:{kid}" in body["error"]["message"]
    wait = float(headers["retry-after"])
    assert abs(wait - seconds_to_next_month(time.time(), "UTC")) < 5
    month = await gw.state.usage(f"spend:{month_of(gw.clock.day())}:key:{kid}")
    assert 0 < month.settled <= 0.05
    # no daily cap of the key's own: the day counter is not even kept
    assert (await gw.state.usage(f"spend:{gw.clock.day()}:key:{kid}")).total == 0


async def test_a_model_outside_the_allow_list_is_403_in_each_format_and_costs_nothing(
    gw: Gateway,
) -> None:
    secret, kid = await key_with(gw, models=("gpt-4.1-mini",), daily_usd=1.0, rpm=600)
    status, _, body = await asgi_call(gw, secret, "/v1/messages", ASK)
    assert status == 403
    assert body["error"]["type"] == "permission_error"
    assert "may not use model 'claude-sonnet-5'" in body["error"]["message"]
    assert "gpt-4.1-mini" in body["error"]["message"]
    status, _, body = await asgi_call(gw, secret, "/v1/chat/completions", openai_body())
    assert status == 403
    assert body["error"]["code"] == "permission_denied" and body["error"]["param"] == "model"
    # refused before the cost gate: nothing reserved or settled, no request token taken
    assert (await gw.state.usage(f"spend:{gw.clock.day()}:key:{kid}")).total == 0
    status, _, _ = await asgi_call(gw, secret, "/v1/chat/completions", openai_body("gpt-4.1-mini"))
    assert status == 200


async def test_an_allow_list_pattern_admits_a_model_family_and_nothing_else(gw: Gateway) -> None:
    secret, _ = await key_with(gw, models=("gpt-*",))
    ok, _, _ = await asgi_call(gw, secret, "/v1/chat/completions", openai_body("gpt-4.1-mini"))
    refused, _, body = await asgi_call(gw, secret, "/v1/chat/completions", openai_body())
    assert (ok, refused) == (200, 403), body


async def test_an_expired_key_is_401_with_a_clear_message(gw: Gateway) -> None:
    secret, kid = await key_with(gw, expires_at=time.time() - 60)
    status, _, body = await asgi_call(gw, secret, "/v1/messages", ASK)
    assert status == 401
    assert body["error"]["type"] == "authentication_error"
    assert f"API key {kid} expired at" in body["error"]["message"]


async def test_a_cached_key_stops_at_its_expiry_not_at_the_cache_end(gw: Gateway) -> None:
    secret, _kid = await key_with(gw, expires_at=time.time() + 0.5)
    status, _, _ = await asgi_call(gw, secret, "/v1/messages", ASK)
    assert status == 200  # resolved and cached while still valid
    await asyncio.sleep(0.6)
    status, _, body = await asgi_call(gw, secret, "/v1/messages", ASK)
    assert status == 401, body
    assert "expired" in body["error"]["message"]


async def test_a_keys_rpm_is_its_request_bucket(gw: Gateway) -> None:
    secret, _ = await key_with(gw, rpm=1)
    first, _, _ = await asgi_call(gw, secret, "/v1/messages", ASK)
    second, headers, body = await asgi_call(gw, secret, "/v1/messages", ASK)
    assert (first, second) == (200, 429)
    assert "1 requests/minute" in body["error"]["message"]
    assert 1 <= float(headers["retry-after"]) <= 61
    other, _ = await key_with(gw, rpm=1)  # a bucket per key: another key still gets through
    status, _, _ = await asgi_call(gw, other, "/v1/messages", ASK)
    assert status == 200


async def test_a_keys_tpm_counts_the_tokens_its_calls_used(gw: Gateway) -> None:
    secret, _ = await key_with(gw, tpm=10)
    first, _, _ = await asgi_call(gw, secret, "/v1/messages", ASK)  # uses more than 10 tokens
    second, _, body = await asgi_call(gw, secret, "/v1/messages", ASK)
    assert (first, second) == (200, 429)
    assert "tokens-per-minute" in body["error"]["message"]


async def test_a_configured_per_key_cap_and_the_keys_own_budget_share_one_counter(
    tmp_path: Path,
) -> None:
    g = Gateway(
        inproc_config(
            tmp_path,
            models=MODELS,
            cost={"prices": {"claude-sonnet-5": PRICE}, "caps": {"per_key_daily_usd": 0.05}},
        )
    )
    await g.start()
    try:
        secret, kid = await key_with(g, daily_usd=5.0)  # looser than config: config wins
        statuses = [(await asgi_call(g, secret, "/v1/messages", ASK))[0] for _ in range(3)]
        assert statuses[0] == 200 and 429 in statuses
        assert (await g.state.usage(f"spend:{g.clock.day()}:key:{kid}")).settled <= 0.05
    finally:
        await g.aclose()


async def test_a_key_budget_with_an_unpriced_model_refuses_rather_than_runs_uncapped(
    tmp_path: Path,
) -> None:
    vendor = {"vendor": {"kind": "openai-compatible", "base_url": "http://127.0.0.1:9/v1"}}
    models = {"mystery": {"deployments": [{"provider": "vendor", "model": "acme-llm-1"}]}}
    # no cap in the config: it starts although the model has no price
    g = Gateway(inproc_config(tmp_path, providers=vendor, models=models))
    await g.start()
    try:
        capped, _ = await key_with(g, daily_usd=1.0)
        free, _ = await key_with(g)
        body = {**ASK, "model": "mystery"}
        status, _, err = await asgi_call(g, capped, "/v1/chat/completions", body)
        assert status == 429 and "no known price" in err["error"]["message"]
        # without a budget the call is sent (and fails upstream: nothing listens on port 9)
        status, _, err = await asgi_call(g, free, "/v1/chat/completions", body)
        assert status >= 500, err
    finally:
        await g.aclose()

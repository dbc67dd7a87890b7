"""Refusals as the official SDKs see them: budget caps and per-user rate limits answer 429 in the
caller's format, name the cap, carry an honest Retry-After, and never spill onto other users."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from _cost_support import asgi_call, inproc_config, make_key
from tests.conftest import RunningGateway, start_gateway, stop, write_config

from bastion.clock import DayClock
from bastion.gateway import Gateway

MODELS = {
    "claude-sonnet-5": {"deployments": [{"provider": "sim", "model": "claude-sonnet-5"}]},
    "gpt-4.1-mini": {"deployments": [{"provider": "sim", "model": "gpt-4.1-mini"}]},
}
MSG: list[Any] = [{"role": "user", "content": "hello"}]


def _uid(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def _retry_after(resp: Any) -> int:
    value = resp.headers.get("retry-after")
    assert value is not None, "a refusal must say when to come back"
    return int(value)


# -- budget refusals -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def budget_gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    gw = start_gateway(
        write_config(
            tmp_path_factory.mktemp("budget429"),
            models=MODELS,
            features={"default": {}, "broke": {"daily_budget_usd": 0.0}},
            # about one $0.0034 worst case (max_tokens=300) per user; max_tokens=1000 never fits
            cost={"caps": {"per_user_daily_usd": 0.005, "end_user_caps": True}},
        ),
        roles="admin,end_users",  # a key allowed to name its end users
    )
    yield gw
    stop(gw.proc)


def test_anthropic_sdk_gets_rate_limit_error_naming_the_feature_cap(
    budget_gw: RunningGateway,
) -> None:
    client = anthropic.Anthropic(base_url=budget_gw.url, api_key=budget_gw.key, max_retries=0)
    with pytest.raises(anthropic.RateLimitError) as ei:
        client.messages.create(
            model="claude-sonnet-5",
            max_tokens=100,
            messages=MSG,
            extra_headers={"X-Bastion-Feature": "broke"},
        )
    expected = DayClock().seconds_to_next_day()
    err = ei.value
    assert err.status_code == 429
    body = err.response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "rate_limit_error"
    assert body["error"]["scope"] == "feature:broke"
    assert "daily spend cap" in body["error"]["message"]
    assert abs(_retry_after(err.response) - expected) <= 5

    # the same call outside the broke feature is served: the refusal was the cap, not the key
    ok = client.messages.create(model="claude-sonnet-5", max_tokens=100, messages=MSG)
    assert ok.content[0].type == "text"


def test_openai_sdk_gets_rate_limit_error_naming_the_user_cap(budget_gw: RunningGateway) -> None:
    client = openai.OpenAI(base_url=budget_gw.url + "/v1", api_key=budget_gw.key, max_retries=0)
    bob, carol = _uid("bob"), _uid("carol")
    first = client.chat.completions.create(
        model="claude-sonnet-5", max_tokens=300, messages=MSG, user=bob
    )
    assert first.choices[0].message.content
    with pytest.raises(openai.RateLimitError) as ei:
        client.chat.completions.create(
            model="claude-sonnet-5", max_tokens=1000, messages=MSG, user=bob
        )
    expected = DayClock().seconds_to_next_day()
    err = ei.value
    assert err.status_code == 429
    assert err.code == "budget_exceeded"
    # the end user is counted within the key that named it
    assert isinstance(err.body, dict) and err.body["scope"].startswith("user:key:")
    assert err.body["scope"].endswith(f"/{bob}")
    assert err.body["type"] == "rate_limit_error"
    assert abs(_retry_after(err.response) - expected) <= 5

    # another user's cap is untouched by bob's spending
    other = client.chat.completions.create(
        model="claude-sonnet-5", max_tokens=300, messages=MSG, user=carol
    )
    assert other.choices[0].message.content


# -- per-user rate limits ------------------------------------------------------------------

RPM = 60  # one request a second per user, with a burst of two
BURST = 2


@pytest.fixture(scope="module")
def rl_gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    gw = start_gateway(
        write_config(
            tmp_path_factory.mktemp("ratelimit"),
            models=MODELS,
            cost={
                "rate_limits": {"per_user": {"requests_per_minute": RPM, "burst": BURST}},
                "caps": {"end_user_caps": True},
            },
        ),
        roles="admin,end_users",
    )
    yield gw
    stop(gw.proc)


@dataclass
class Outcome:
    status: int
    retry_after: int | None = None
    body: Any = None


Send = Callable[[str], Awaitable[object]]


async def _outcome(send: Send, user: str) -> Outcome:
    try:
        await send(user)
    except (anthropic.RateLimitError, openai.RateLimitError) as exc:
        return Outcome(429, _retry_after(exc.response), exc.response.json())
    return Outcome(200)


async def _hammer(send: Send) -> tuple[list[Outcome], list[Outcome], Outcome]:
    """User A at 10 requests/s (10x its limit) for 1 s; user B makes two calls meanwhile."""
    a, b = _uid("a"), _uid("b")
    got_a: list[Outcome] = []
    got_b: list[Outcome] = []
    t0 = time.monotonic()
    for i in range(10):
        await asyncio.sleep(max(0.0, t0 + i * 0.1 - time.monotonic()))
        got_a.append(await _outcome(send, a))
        if i in (2, 7):
            got_b.append(await _outcome(send, b))
    wait = max(o.retry_after or 0 for o in got_a)
    await asyncio.sleep(wait)  # Retry-After is honest: after it, A is served again
    after = await _outcome(send, a)
    return got_a, got_b, after


def _check_isolation(
    result: tuple[list[Outcome], list[Outcome], Outcome], scope_in: Callable[[Any], Any]
) -> None:
    got_a, got_b, after = result
    refused = [o for o in got_a if o.status == 429]
    served = [o for o in got_a if o.status == 200]
    # at most the burst plus ~1 s of refill, of 10 attempts
    assert len(served) <= BURST + 2, [o.status for o in got_a]
    assert len(refused) >= 6, [o.status for o in got_a]
    for o in refused:
        assert o.retry_after is not None and 1 <= o.retry_after <= 2
        assert scope_in(o.body) == "user_requests_per_minute"
    assert [o.status for o in got_b] == [200, 200], "user B was limited by user A's traffic"
    assert after.status == 200, "still refused after waiting the advertised Retry-After"


async def test_per_user_rate_limit_isolates_users_across_identification_methods(
    rl_gw: RunningGateway,
) -> None:
    ac = anthropic.AsyncAnthropic(base_url=rl_gw.url, api_key=rl_gw.key, max_retries=0)
    oc = openai.AsyncOpenAI(base_url=rl_gw.url + "/v1", api_key=rl_gw.key, max_retries=0)

    async def via_openai_user(user: str) -> object:
        return await oc.chat.completions.create(
            model="gpt-4.1-mini", max_tokens=20, messages=MSG, user=user
        )

    async def via_anthropic_metadata(user: str) -> object:
        return await ac.messages.create(
            model="claude-sonnet-5", max_tokens=20, messages=MSG, metadata={"user_id": user}
        )

    async def via_header(user: str) -> object:
        return await ac.messages.create(
            model="claude-sonnet-5",
            max_tokens=20,
            messages=MSG,
            extra_headers={"X-Bastion-User": user},
        )

    try:
        r_openai, r_meta, r_header = await asyncio.gather(
            _hammer(via_openai_user), _hammer(via_anthropic_metadata), _hammer(via_header)
        )
    finally:
        await ac.close()
        await oc.close()
    _check_isolation(r_openai, lambda b: b["error"]["scope"])
    assert all(
        o.body["error"]["code"] == "rate_limit_exceeded" for o in r_openai[0] if o.status == 429
    )
    _check_isolation(r_meta, lambda b: b["error"]["scope"])
    assert all(o.body["error"]["type"] == "rate_limit_error" for o in r_meta[0] if o.status == 429)
    _check_isolation(r_header, lambda b: b["error"]["scope"])


# -- calls per day (in-process: no cross-process property) ---------------------------------


async def test_calls_per_day_refuses_the_user_until_the_next_day_only(tmp_path: Path) -> None:
    cfg = inproc_config(
        tmp_path,
        cost={"rate_limits": {"per_user": {"calls_per_day": 3}}, "caps": {"end_user_caps": True}},
    )
    async with Gateway(cfg) as gw:
        key = await make_key(gw)
        body = {"model": "claude-sonnet-5", "max_tokens": 20, "messages": MSG}
        c, d = _uid("c"), _uid("d")
        statuses = []
        for _ in range(5):
            status, headers, out = await asgi_call(
                gw, key, "/v1/messages", body, {"x-bastion-user": c}
            )
            statuses.append(status)
        assert statuses == [200, 200, 200, 429, 429]
        assert out["error"]["type"] == "rate_limit_error"
        assert out["error"]["scope"] == "user_calls_per_day"
        assert abs(int(headers["retry-after"]) - DayClock().seconds_to_next_day()) <= 5
        assert gw.simulator.request_count() == 3  # refused calls never went upstream

        # same limit, another user, the same day: untouched (OpenAI format, `user` field)
        obody = {"model": "claude-sonnet-5", "max_tokens": 20, "messages": MSG, "user": d}
        for _ in range(3):
            status, _, out = await asgi_call(gw, key, "/v1/chat/completions", obody)
            assert status == 200, out
        status, _, out = await asgi_call(gw, key, "/v1/chat/completions", obody)
        assert status == 429
        assert out["error"]["code"] == "rate_limit_exceeded"
        assert out["error"]["scope"] == "user_calls_per_day"


async def test_an_unconfigured_feature_name_does_not_escape_the_default_budget(
    tmp_path: Path,
) -> None:
    cfg = inproc_config(tmp_path, features={"default": {"daily_budget_usd": 0.0}})
    async with Gateway(cfg) as gw:
        key = await make_key(gw)
        body = {"model": "claude-sonnet-5", "max_tokens": 20, "messages": MSG}
        status, _, out = await asgi_call(gw, key, "/v1/messages", body)
        assert status == 429 and out["error"]["scope"] == "feature:default"
        # every other guard treats an unknown feature as the default one; the budget must too
        status, _, out = await asgi_call(
            gw, key, "/v1/messages", body, {"x-bastion-feature": "no-such-feature"}
        )
        assert status == 429, "the default feature's $0 budget was bypassed by a header"
        assert gw.simulator.request_count() == 0

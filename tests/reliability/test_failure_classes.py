"""Failure classes through the gateway: a silent deployment is left within its share of the
deadline, rate limiting is not an outage, exhaustion keeps its meaning, and provider request
ids reach the caller."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from tests.cost._cost_support import PRINCIPAL, inproc_config

from bastion.dialects import ANTHROPIC
from bastion.errors import UpstreamExhausted
from bastion.gateway import Gateway
from bastion.providers.base import Format

MSG = [{"role": "user", "content": "hello"}]


def dep(model: str, fault: str | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"provider": "sim", "model": model}
    if fault:
        d["headers"] = {"x-sim-fault": fault}
    return d


def _body(model: str, fmt: Format, stream: bool = False) -> bytes:
    return json.dumps(
        {"model": model, "max_tokens": 30, "messages": MSG, "stream": stream}
    ).encode()


async def _drain(reply: Any) -> bytes:
    if reply.stream is None:
        return bytes(reply.body or b"")
    return b"".join([c async for c in reply.stream])


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize("fmt", [Format.ANTHROPIC, Format.OPENAI], ids=["anthropic", "openai"])
async def test_a_silent_deployment_is_left_within_its_share_of_the_deadline(
    tmp_path: Path, fmt: Format, stream: bool
) -> None:
    # default timeouts (15 s to first token, 600 s total): only the deadline share bounds it
    cfg = inproc_config(
        tmp_path,
        models={"m": {"deployments": [dep("claude-sonnet-5", "silence"), dep("claude-haiku-5-5")]}},
        features={"default": {"deadline": 4.0}},
    )
    async with Gateway(cfg) as gw:
        t0 = time.monotonic()
        reply = await gw.handle(fmt, _body("m", fmt, stream), {}, principal=PRINCIPAL)
        data = await _drain(reply)
        elapsed = time.monotonic() - t0
        assert reply.status == 200
        assert reply.call is not None and reply.call.deployment is not None
        assert reply.call.deployment.startswith("sim/claude-haiku")
        assert b"error" not in data
        # the silent one had half of the 4 s deadline, the fallback the rest
        assert 1.8 <= elapsed < 3.8, elapsed
        assert [a.kind for a in reply.call.attempts] == ["first", "failover"]


@pytest.mark.parametrize(
    ("fault", "bound"),
    [
        # every other request refused (a counter, not a clock): one retry per refused call is
        # the floor, 39 for 20, as LiteLLM needed; nothing is wasted beyond it
        ("fail_every:2;status:429", 39),
        # refused at random half the time: every call still served, one request per refusal
        ("fail_rate:0.5;seed:7;status:429", None),
    ],
    ids=["alternating", "random"],
)
async def test_a_deployment_rate_limited_half_the_time_serves_every_call(
    tmp_path: Path, fault: str, bound: int | None
) -> None:
    cfg = inproc_config(
        tmp_path,
        models={"m": {"deployments": [dep("claude-sonnet-5", fault)]}},
        reliability={"retry": {"backoff_base": 0.01, "backoff_max": 0.05}},
    )
    async with Gateway(cfg) as gw:
        limited = 0
        for _ in range(20):
            reply = await gw.handle(
                Format.ANTHROPIC, _body("m", Format.ANTHROPIC), {}, principal=PRINCIPAL
            )
            assert reply.status == 200 and reply.call is not None
            limited += sum(a.status == 429 for a in reply.call.attempts)
        assert limited > 0  # the provider really did refuse
        # every 429 cost exactly one more request and nothing else (no breaker opened on it)
        assert len(gw.simulator.requests) == 20 + limited
        if bound is not None:
            assert len(gw.simulator.requests) <= bound


@pytest.mark.parametrize(
    ("fault", "status", "anthropic_type"),
    [
        ("status:429;retry_after:40", 429, "rate_limit_error"),
        ("status:529", 529, "overloaded_error"),
    ],
)
async def test_every_deployment_limited_answers_a_limit_in_the_callers_format(
    tmp_path: Path, fault: str, status: int, anthropic_type: str
) -> None:
    cfg = inproc_config(
        tmp_path,
        models={
            "m": {"deployments": [dep("claude-sonnet-5", fault), dep("claude-haiku-5-5", fault)]}
        },
        reliability={"retry": {"backoff_base": 0.01, "backoff_max": 0.02, "max_attempts": 4}},
    )
    async with Gateway(cfg) as gw:
        with pytest.raises(UpstreamExhausted) as err:
            await gw.handle(Format.ANTHROPIC, _body("m", Format.ANTHROPIC), {}, principal=PRINCIPAL)
        e = err.value
        assert e.http_status() == status
        body = json.loads(ANTHROPIC.render_error(e))
        assert body["error"]["type"] == anthropic_type
        if status == 429:
            assert e.headers()["retry-after"] == "40"  # the soonest the providers gave
            assert e.headers()["x-should-retry"] == "true"


async def test_a_primary_failing_before_the_hedge_delay_still_fails_over(tmp_path: Path) -> None:
    cfg = inproc_config(
        tmp_path,
        models={
            "m": {"deployments": [dep("claude-sonnet-5", "status:500"), dep("claude-haiku-5-5")]}
        },
        features={"default": {"hedge_delay": 2.0}},
        reliability={"retry": {"backoff_base": 0.01, "backoff_max": 0.02}},
    )
    async with Gateway(cfg) as gw:
        t0 = time.monotonic()
        reply = await gw.handle(
            Format.ANTHROPIC, _body("m", Format.ANTHROPIC), {}, principal=PRINCIPAL
        )
        assert reply.status == 200
        assert reply.call is not None and reply.call.deployment is not None
        assert reply.call.deployment.startswith("sim/claude-haiku")
        assert time.monotonic() - t0 < 1.5  # no waiting out the hedge delay either


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
async def test_the_providers_request_id_reaches_the_caller_and_the_record(
    tmp_path: Path, stream: bool
) -> None:
    cfg = inproc_config(tmp_path)
    async with Gateway(cfg) as gw:
        reply = await gw.handle(
            Format.ANTHROPIC,
            _body("claude-sonnet-5", Format.ANTHROPIC, stream),
            {},
            principal=PRINCIPAL,
        )
        await _drain(reply)
        rid = reply.headers.get("request-id")
        assert rid and rid != reply.headers["x-request-id"]
        assert reply.call is not None
        assert reply.call.flags["provider_request_ids"] == [rid]
        oreply = await gw.handle(
            Format.OPENAI, _body("claude-sonnet-5", Format.OPENAI, stream), {}, principal=PRINCIPAL
        )
        await _drain(oreply)
        # OpenAI's x-request-id stays Bastion's (the record key); the provider's rides beside it
        assert oreply.headers.get("x-upstream-request-id")
        assert oreply.headers["x-request-id"].startswith("req_")


async def test_reasoning_models_get_the_only_token_limit_field_they_accept(tmp_path: Path) -> None:
    cfg = inproc_config(
        tmp_path,
        providers={"sim": {"kind": "sim"}},
        models={"o4-mini": {"deployments": [{"provider": "sim", "model": "o4-mini"}]}},
    )
    async with Gateway(cfg) as gw:
        raw = json.dumps({"model": "o4-mini", "max_tokens": 40, "messages": MSG}).encode()
        await gw.handle(Format.OPENAI, raw, {}, principal=PRINCIPAL)
        sent = gw.simulator.requests[-1].body
        assert "max_tokens" not in sent and sent["max_completion_tokens"] == 40


async def test_when_every_deployment_is_resting_a_call_waits_for_the_soonest(
    tmp_path: Path,
) -> None:
    # one request per window each: 3 s on the primary, 1 s on the fallback
    cfg = inproc_config(
        tmp_path,
        models={
            "m": {
                "deployments": [
                    dep("claude-sonnet-5", "rate_limit:1;rate_window:3"),
                    dep("claude-haiku-5-5", "rate_limit:1;rate_window:1"),
                ]
            }
        },
    )
    async with Gateway(cfg) as gw:
        served: list[tuple[str, float]] = []
        for _ in range(3):
            t0 = time.monotonic()
            reply = await gw.handle(
                Format.ANTHROPIC, _body("m", Format.ANTHROPIC), {}, principal=PRINCIPAL
            )
            assert reply.status == 200 and reply.call is not None
            assert reply.call.deployment is not None
            served.append((reply.call.deployment.split("#")[0], time.monotonic() - t0))
        # the primary's window is full after one call: the second goes to the fallback at
        # once, the third waits for the fallback's window (the soonest), not the primary's
        assert [d for d, _ in served] == [
            "sim/claude-sonnet-5",
            "sim/claude-haiku-5-5",
            "sim/claude-haiku-5-5",
        ]
        assert served[1][1] < 0.5
        assert 0.5 < served[2][1] < 2.0, served
        assert len(gw.simulator.requests) == 3  # nothing was sent only to be refused

"""A deployment behind a real, time-based rate limit (R requests per fixed window of W seconds,
answered 429 with the provider's own headers) serves every call through the official SDKs, and
Bastion sends it almost nothing it would refuse: a call waits for the window instead, on the
replica that learnt the window and on another one sharing its counter store.

The simulator runs over HTTP in this process (so its request count is read directly) behind a
real ``bastion serve``; the gateway's default config, the SDKs with their own retries off."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import redis.asyncio
import uvicorn
from tests.conftest import start_gateway, stop, write_config
from tests.cost._cost_support import PRINCIPAL, inproc_config

from bastion.gateway import Gateway
from bastion.providers.base import Format
from bastion.providers.sim import Simulator, create_app

LIMIT, WINDOW = 4, 1.0
FAULT = f"rate_limit:{LIMIT};rate_window:{WINDOW:g}"
MSG: Any = [{"role": "user", "content": "What is the refund policy?"}]


@pytest.fixture
async def sim() -> AsyncIterator[tuple[Simulator, str]]:
    s = Simulator()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        create_app(s), http="httptools", lifespan="off", access_log=False, log_level="warning"
    )
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    await server.startup(sockets=[sock])
    try:
        yield s, f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        await server.shutdown()


def _caller(sdk: str, url: str, key: str) -> Callable[[], Awaitable[str]]:
    if sdk == "anthropic":
        ac = anthropic.AsyncAnthropic(base_url=url, api_key=key, max_retries=0)

        async def ask_anthropic() -> str:
            msg = await ac.messages.create(model="limited", max_tokens=50, messages=MSG)
            return "".join(b.text for b in msg.content if b.type == "text")

        return ask_anthropic
    oc = openai.AsyncOpenAI(base_url=url + "/v1", api_key=key, max_retries=0)

    async def ask_openai() -> str:
        r = await oc.chat.completions.create(model="limited", max_tokens=50, messages=MSG)
        return r.choices[0].message.content or ""

    return ask_openai


@pytest.mark.parametrize("sdk", ["anthropic", "openai"])
async def test_a_rate_limited_deployment_serves_every_call_without_wasted_requests(
    tmp_path: Path, sim: tuple[Simulator, str], sdk: str
) -> None:
    simulator, sim_url = sim
    kind, model, base = (
        ("anthropic", "claude-sonnet-5", sim_url)
        if sdk == "anthropic"
        else ("openai", "gpt-4.1", sim_url + "/v1")
    )
    cfg = write_config(
        tmp_path,
        providers={"up": {"kind": kind, "base_url": base}},
        models={
            "limited": {
                "deployments": [
                    {"provider": "up", "model": model, "headers": {"x-sim-fault": FAULT}}
                ]
            }
        },
    )
    gw = await asyncio.to_thread(start_gateway, cfg)
    try:
        ask = _caller(sdk, gw.url, gw.key)
        answers: list[str] = []
        # a burst that fits the first window, a burst into a full window, then one at a time
        answers += await asyncio.gather(*(ask() for _ in range(LIMIT)))
        answers += await asyncio.gather(*(ask() for _ in range(2 * LIMIT)))
        for _ in range(20 - 3 * LIMIT):
            answers.append(await ask())
    finally:
        stop(gw.proc)
    assert len(answers) == 20 and all(a.strip() for a in answers), "every call is served"
    sent = [r for r in simulator.requests if r.path.endswith(("/messages", "/chat/completions"))]
    times = [r.time for r in sent]
    windows = int((max(times) - min(times)) // WINDOW) + 1
    # the provider allows LIMIT per window: 20 calls need at least 5 windows, so calls waited
    assert windows >= 20 // LIMIT
    # at most one refused request per window (a request that straddles a window's turn), far
    # below the one retry per refusal a gateway without the windows needs
    assert len(sent) <= 20 + windows, (len(sent), windows)
    assert len(sent) < 39


async def test_a_replica_waits_for_a_window_another_replica_used_up(
    tmp_path: Path, sim: tuple[Simulator, str]
) -> None:
    """Two gateways sharing Redis, one provider limit (2 requests per 2 s): the second replica
    never sent anything to this deployment, yet it waits instead of being refused."""
    simulator, sim_url = sim
    prefix = "bastiontest-" + uuid.uuid4().hex[:10]
    cfg = inproc_config(
        tmp_path,
        state={"url": "redis://127.0.0.1:6379/0", "prefix": prefix},
        providers={"up": {"kind": "anthropic", "base_url": sim_url}},
        models={
            "limited": {
                "deployments": [
                    {
                        "provider": "up",
                        "model": "claude-sonnet-5",
                        "headers": {"x-sim-fault": "rate_limit:2;rate_window:2"},
                    }
                ]
            }
        },
    )
    body = json.dumps({"model": "limited", "max_tokens": 30, "messages": MSG}).encode()
    try:
        async with Gateway(cfg) as a, Gateway(cfg) as b:
            for _ in range(2):  # the second answer says none is left until the window turns
                assert (
                    await a.handle(Format.ANTHROPIC, body, {}, principal=PRINCIPAL)
                ).status == 200
            t0 = time.monotonic()
            reply = await b.handle(Format.ANTHROPIC, body, {}, principal=PRINCIPAL)
            waited = time.monotonic() - t0
    finally:
        r = redis.asyncio.Redis(host="127.0.0.1", port=6379)
        async for k in r.scan_iter(match=f"{prefix}*", count=1000):
            await r.delete(k)
        await r.aclose()
    assert reply.status == 200
    assert reply.call is not None and [a.status for a in reply.call.attempts] == [200]
    statuses = [r for r in simulator.requests if r.path.endswith("/messages")]
    assert len(statuses) == 3, "the second replica sent a request only to be refused"
    assert waited > 1.0  # it waited for the window the first replica had used up

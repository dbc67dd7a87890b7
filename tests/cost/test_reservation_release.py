"""A budget reservation never outlives its call: released on upstream errors and disconnects,
and, when the gateway process dies, counted until its lease ends and not after."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from _cost_support import (
    PRINCIPAL,
    SHARED_REDIS,
    RecordingState,
    delete_prefix,
    inproc_config,
    open_stream,
    post,
    unique_prefix,
)
from tests.conftest import RunningGateway, start_gateway, stop, write_config

from bastion.clock import DayClock
from bastion.errors import BastionError, RateLimited
from bastion.gateway import Gateway
from bastion.providers.base import Format
from bastion.state import MemoryCounterStore, Usage, open_state

# claude-sonnet-5 costs $2/$10 per million (cache writes $2.5): with max_tokens=1000 the worst
# case of one short call is about $0.0104, so this cap holds one call's reservation, not two.
ONE_CALL_CAP = 0.015
MSG = [{"role": "user", "content": "hello"}]


def _cap_key(user: str | None = None, prefix: str | None = None) -> str:
    """The global cap, or one end user's (tests sharing a gateway each watch their own user's
    cap; an end user is counted within the key that named it, so its cap key holds the key id)."""
    day = DayClock().day()
    if user is None:
        return f"spend:{day}:global"
    assert prefix is not None
    r = redis.Redis.from_url(SHARED_REDIS)
    try:
        pattern = f"{prefix}:{{{prefix}}}:cap:spend:{day}:user:key:*/{user}"
        found = [k.decode() for k in r.scan_iter(match=pattern, count=1000)]
    finally:
        r.close()
    head = f"{prefix}:{{{prefix}}}:cap:"
    return found[0][len(head) :] if found else f"spend:{day}:user:{user}"


# -- upstream error ------------------------------------------------------------------------


async def test_upstream_error_releases_the_reservation_and_settles_nothing(tmp_path: Path) -> None:
    cfg = inproc_config(
        tmp_path,
        models={
            "broken": {
                "deployments": [
                    {
                        "provider": "sim",
                        "model": "claude-sonnet-5",
                        "headers": {"x-sim-fault": "status:500"},
                    }
                ]
            },
            "ok": {"deployments": [{"provider": "sim", "model": "claude-sonnet-5"}]},
        },
        cost={"caps": {"global_daily_usd": ONE_CALL_CAP}},
        # one upstream attempt per call, and no breaker: every call really reaches the fault
        reliability={"retry": {"attempts_per_deployment": 1}, "breaker": {"enabled": False}},
    )
    state = RecordingState(MemoryCounterStore())
    async with Gateway(cfg, state=state) as gw:  # type: ignore[arg-type]
        cap = f"spend:{gw.clock.day()}:global"
        for i in range(3):
            raw = json.dumps({"model": "broken", "max_tokens": 1000, "messages": MSG}).encode()
            with pytest.raises(BastionError) as err:
                await gw.handle(
                    Format.ANTHROPIC, raw, {"x-request-id": f"fail-{i}"}, principal=PRINCIPAL
                )
            # the upstream failure, not a 429: the previous failure's hold did not stay on the cap
            assert not isinstance(err.value, RateLimited), err.value
            assert "HTTP 500" in err.value.message
            assert await state.usage(cap) == Usage(0.0, 0.0)
        assert gw.simulator.request_count() == 3
        # each failed attempt was reserved under its own server-minted id, then released
        assert [op for op, _, _ in state.log] == ["reserve", "release"] * 3, state.log
        for held, freed in zip(state.log[::2], state.log[1::2], strict=True):
            assert held[1] == freed[1] and not held[1].startswith("fail-")
            assert held[2] is not None and held[2] > 0.01  # the worst case really was held
        assert not [e for e in state.log if e[0] == "settle"]

        # only one worst case fits the cap: any leaked hold would refuse this call
        raw = json.dumps({"model": "ok", "max_tokens": 1000, "messages": MSG}).encode()
        reply = await gw.handle(
            Format.ANTHROPIC, raw, {"x-request-id": "ok-1"}, principal=PRINCIPAL
        )
        assert reply.status == 200
        u = await state.usage(cap)
        assert u.reserved == 0.0 and 0 < u.settled < 0.001


# -- client disconnect ---------------------------------------------------------------------

SLOW = {
    "provider": "sim",
    "model": "claude-sonnet-5",
    # 30 chunks, 300 ms apart: the stream lasts about 9 s unless someone stops it
    "headers": {"x-sim-chunk-ms": "300", "x-sim-reply-tokens": "30"},
}
FAST = {"provider": "sim", "model": "claude-sonnet-5"}


@pytest.fixture(scope="module")
def redis_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway, str]]:
    tmp = tmp_path_factory.mktemp("release")
    prefix = unique_prefix()
    gw = start_gateway(
        write_config(
            tmp,
            models={"slow": {"deployments": [SLOW]}, "fast": {"deployments": [FAST]}},
            state={"url": SHARED_REDIS, "prefix": prefix},
            cost={"caps": {"per_user_daily_usd": 100.0, "end_user_caps": True}},
        ),
        roles="admin,end_users",
    )
    try:
        yield gw, prefix
    finally:
        # SIGKILL, not a graceful stop: a graceful stop would wait for orphaned slow streams
        gw.proc.kill()
        gw.proc.wait(timeout=10)
        delete_prefix(prefix)


async def _wait_released(
    prefix: str, bound_s: float, user: str | None = None
) -> tuple[float, Usage]:
    """Seconds until the cap holds no reservation (or ``bound_s`` if it never happens)."""
    st = open_state(SHARED_REDIS, prefix=prefix)
    try:
        t0 = time.monotonic()
        u = await st.usage(_cap_key(user, prefix))
        while u.reserved > 0 and time.monotonic() - t0 < bound_s:
            await asyncio.sleep(0.05)
            u = await st.usage(_cap_key(user, prefix))
        return time.monotonic() - t0, u
    finally:
        await st.close()


async def _usage(prefix: str, user: str | None = None) -> Usage:
    st = open_state(SHARED_REDIS, prefix=prefix)
    try:
        return await st.usage(_cap_key(user, prefix))
    finally:
        await st.close()


async def test_completed_stream_settles_its_reservation(
    redis_gateway: tuple[RunningGateway, str],
) -> None:
    gw, prefix = redis_gateway
    user = "done-" + uuid.uuid4().hex[:8]
    body: dict[str, Any] = {
        "model": "fast",
        "max_tokens": 1000,
        "stream": True,
        "messages": MSG,
        "metadata": {"user_id": user},
    }
    reader, writer, got = await open_stream(gw.url, gw.key, body)
    try:
        async with asyncio.timeout(10):
            while b"event: message_stop" not in got:
                chunk = await reader.read(4096)
                assert chunk, got
                got += chunk
    finally:
        writer.close()
    waited, after = await _wait_released(prefix, 3.0, user)
    assert after.reserved == 0.0, f"still reserved {after.reserved} after {waited:.1f}s"
    assert 0 < after.settled < 0.001  # the real cost, far below the $0.0104 worst case


async def test_client_disconnect_mid_stream_releases_the_reservation_promptly(
    redis_gateway: tuple[RunningGateway, str],
) -> None:
    gw, prefix = redis_gateway
    user = "gone-" + uuid.uuid4().hex[:8]
    body: dict[str, Any] = {
        "model": "slow",
        "max_tokens": 1000,
        "stream": True,
        "messages": MSG,
        "metadata": {"user_id": user},
    }
    _reader, writer, _ = await open_stream(gw.url, gw.key, body)
    held = await _usage(prefix, user)
    assert held.reserved > 0.01, "the stream's worst case should be held while it runs"
    writer.close()  # the client goes away after its first chunk, ~8 s before the stream ends
    await writer.wait_closed()
    waited, after = await _wait_released(prefix, 2.0, user)
    assert after.reserved == 0.0, (
        f"reservation of ${after.reserved:.4f} still held {waited:.1f}s after the client left"
    )


# -- process kill --------------------------------------------------------------------------


async def test_killed_gateway_reservation_counts_until_its_lease_expires(tmp_path: Path) -> None:
    """Two replicas on one Redis; the one holding a reservation is SIGKILLed mid-stream."""
    prefix = unique_prefix()
    sections: dict[str, Any] = {
        "models": {"slow": {"deployments": [SLOW]}, "fast": {"deployments": [FAST]}},
        "state": {"url": SHARED_REDIS, "prefix": prefix},
        # lease = call deadline (2 s) + grace (1 s)
        "features": {"default": {"deadline": 2.0}},
        "cost": {"caps": {"global_daily_usd": ONE_CALL_CAP}, "lease_grace_seconds": 1.0},
    }
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    victim = start_gateway(write_config(tmp_path / "a", **sections))
    survivor = start_gateway(write_config(tmp_path / "b", **sections))
    check = {"model": "fast", "max_tokens": 1000, "messages": MSG}
    try:
        t0 = time.monotonic()
        body = {"model": "slow", "max_tokens": 1000, "stream": True, "messages": MSG}
        _reader, writer, _ = await open_stream(victim.url, victim.key, body)
        held = await _usage(prefix)
        assert held.reserved > 0.01

        victim.proc.kill()  # SIGKILL by PID: no settle, no release, no shutdown hook
        victim.proc.wait(timeout=10)
        writer.close()
        right_after = await _usage(prefix)
        assert right_after.reserved == pytest.approx(held.reserved)

        # the dead call's hold still counts for the other replica: the cap fits only one
        status, _, err = await post(survivor.url, "/v1/messages", survivor.key, check)
        assert status == 429, err
        assert err["error"]["scope"] == "global"
        assert time.monotonic() - t0 < 2.5, "too slow to observe the hold before its lease ends"

        waited, after = await _wait_released(prefix, 8.0)
        released_at = time.monotonic() - t0
        assert after.reserved == 0.0, f"orphaned reservation never expired ({waited:.1f}s)"
        assert after.settled == 0.0  # nothing was spent on its behalf
        assert 2.5 <= released_at <= 5.5, f"lease of ~3 s ended after {released_at:.2f}s"

        status, _, ok = await post(survivor.url, "/v1/messages", survivor.key, check)
        assert status == 200, ok
    finally:
        stop(survivor.proc)
        if victim.proc.poll() is None:
            victim.proc.kill()
            victim.proc.wait(timeout=10)
        delete_prefix(prefix)

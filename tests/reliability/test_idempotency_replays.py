"""Idempotency through ``Gateway.handle`` with the in-process simulator's faults.

Only a completed success is kept for replays. Each test here is one way the old store went
wrong: failures replayed for a day, a stream that ended in an error event replayed with the
same error, a degraded stand-in replayed without its header, replays served under the kill
switch and never recorded.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from tests.conftest import sim_models

from bastion.auth import new_key
from bastion.call import Principal
from bastion.config import load_config
from bastion.engine import Reply
from bastion.errors import AIUnavailable, AuthenticationFailed, BastionError
from bastion.gateway import Gateway
from bastion.providers.base import Format
from bastion.providers.sim import Simulator
from bastion.reliability.idempotency import REPLAY_HEADER
from bastion.reliability.killswitch import set_kill
from bastion.store import CallRecord

A = Principal(key_id="k-idem-a", name="a")
AV = {"anthropic-version": "2023-06-01"}


def _config(tmp: Path, **default: Any) -> Any:
    models = sim_models(
        {
            # the primary is cut after a few chunks; the answer is carried on at the fallback
            "cut-then-continue": {
                "deployments": [
                    {
                        "provider": "sim",
                        "model": "cutter",
                        "headers": {"x-sim-fault": "cut_after:6"},
                    },
                    {"provider": "sim", "model": "carrier"},
                ]
            }
        }
    )
    return load_config(
        None,
        env={},
        overrides={
            "store": {"url": f"sqlite:///{tmp / 'bastion.db'}"},
            "state": {"url": "memory://"},
            "observability": {"spill_path": str(tmp / "spill.jsonl")},
            "providers": {"sim": {"kind": "sim"}},
            "models": models,
            "reliability": {
                "retry": {"attempts_per_deployment": 1, "backoff_base": 0.0, "backoff_max": 0.0},
            },
            "features": {"default": default},
        },
    )


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    async with Gateway(_config(tmp_path), simulator=Simulator(reply_tokens=12)) as g:
        yield g


@pytest.fixture
async def degrading_gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    cfg = _config(tmp_path, degraded={"mode": "message", "message": "Please reply manually."})
    async with Gateway(cfg, simulator=Simulator(reply_tokens=12)) as g:
        yield g


def _body(model: str = "sim-pay", *, stream: bool = False, text: str = "pay") -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": 30,
        "stream": stream,
        "messages": [{"role": "user", "content": text}],
    }


async def _send(
    gw: Gateway,
    body: dict[str, Any],
    idem: str,
    who: Principal | None = A,
    headers: dict[str, str] | None = None,
) -> tuple[Reply, bytes]:
    """One call with an Idempotency-Key; a stream is read to its end."""
    hs = {**AV, "idempotency-key": idem, **(headers or {})}
    reply = await gw.handle(Format.ANTHROPIC, orjson.dumps(body), hs, principal=who)
    if reply.stream is None:
        return reply, reply.body or b""
    chunks = [c async for c in reply.stream]
    return reply, b"".join(chunks)


async def _records(gw: Gateway, n: int = 50) -> list[CallRecord]:
    await gw.recorder.flush()
    recs: list[CallRecord] = await gw.store.recent_calls(n)
    return recs


def _key() -> str:
    return "idem-" + uuid.uuid4().hex


# -- only completed successes are stored --------------------------------------------------


async def test_an_upstream_failure_is_not_stored_and_the_retry_runs(gw: Gateway) -> None:
    body = _body("sim-flaky+fault=fail_first:1")
    key = _key()
    with pytest.raises(AIUnavailable):
        await _send(gw, body, key)
    before = gw.simulator.request_count()
    reply, raw = await _send(gw, body, key)
    assert reply.status == 200 and REPLAY_HEADER not in reply.headers
    assert gw.simulator.request_count() == before + 1, "the retry was not run"
    # the success is what is kept now
    again, raw2 = await _send(gw, body, key)
    assert again.headers[REPLAY_HEADER] == "true" and raw2 == raw
    assert gw.simulator.request_count() == before + 1


async def test_a_stream_that_ended_in_an_error_event_is_not_replayed(gw: Gateway) -> None:
    body = _body("sim-err+fault=error_after:6", stream=True)
    key = _key()
    _, raw = await _send(gw, body, key)
    assert b"event: error" in raw
    before = gw.simulator.request_count()
    retry, _ = await _send(gw, body, key)
    assert REPLAY_HEADER not in retry.headers, "the error event was replayed"
    assert gw.simulator.request_count() == before + 1


async def test_a_cut_stream_is_not_replayed(gw: Gateway) -> None:
    body = _body("sim-cut+fault=cut_after:6", stream=True)
    key = _key()
    first, _ = await _send(gw, body, key)
    assert first.call is not None and "stream_cut" in first.call.flags
    before = gw.simulator.request_count()
    retry, _ = await _send(gw, body, key)
    assert REPLAY_HEADER not in retry.headers
    assert gw.simulator.request_count() == before + 1


async def test_a_cut_stream_carried_on_at_a_fallback_is_a_success_and_replayed(
    gw: Gateway,
) -> None:
    body = _body("cut-then-continue", stream=True)
    key = _key()
    first, raw = await _send(gw, body, key)
    assert first.call is not None and first.call.flags.get("continued")
    assert b"event: error" not in raw and b"message_stop" in raw
    before = gw.simulator.request_count()
    replay, replayed = await _send(gw, body, key)
    assert replay.headers[REPLAY_HEADER] == "true" and replayed == raw
    assert gw.simulator.request_count() == before


async def test_a_stream_the_client_left_is_not_stored(gw: Gateway) -> None:
    body = _body("slow-stream", stream=True)
    key = _key()
    reply = await gw.handle(
        Format.ANTHROPIC, orjson.dumps(body), {**AV, "idempotency-key": key}, principal=A
    )
    stream = reply.stream
    assert isinstance(stream, AsyncGenerator)
    await stream.__anext__()
    await stream.aclose()  # the client went away after the first chunk
    before = gw.simulator.request_count()
    retry, raw = await _send(gw, body, key)
    assert REPLAY_HEADER not in retry.headers and b"message_stop" in raw
    assert gw.simulator.request_count() == before + 1


async def test_a_degraded_answer_is_not_stored(degrading_gw: Gateway) -> None:
    gw = degrading_gw
    body = _body("sim-down+fault=status:503")
    key = _key()
    first, raw = await _send(gw, body, key)
    assert first.headers.get("x-bastion-degraded") and b"Please reply manually." in raw
    before = gw.simulator.request_count()
    retry, _ = await _send(gw, body, key)
    assert REPLAY_HEADER not in retry.headers, "a canned stand-in was replayed as the answer"
    assert retry.headers.get("x-bastion-degraded")
    assert gw.simulator.request_count() == before + 1


# -- a replay is the original, seen and switched off like any call ------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_a_replay_carries_the_original_headers_and_is_recorded(
    gw: Gateway, stream: bool
) -> None:
    body = _body(stream=stream)
    key = _key()
    first, raw = await _send(gw, body, key, headers={"x-request-id": "client-1"})
    original = first.headers["x-request-id"]
    replay, replayed = await _send(gw, body, key, headers={"x-request-id": "client-2"})
    assert replayed == raw
    assert replay.headers[REPLAY_HEADER] == "true"
    for h in ("x-request-id", "x-bastion-deployment", "x-bastion-attempts"):
        assert replay.headers[h] == first.headers[h], h
    # this delivery's own trace and client id, not the original's
    assert replay.headers["x-client-request-id"] == "client-2"
    assert replay.headers["traceparent"] != first.headers["traceparent"]
    recs = {r.request_id: r for r in await _records(gw)}
    assert original in recs
    (rec,) = [r for r in recs.values() if r.flags.get("replay_of") == original]
    assert rec.request_id != original and rec.status == 200 and rec.key_id == A.key_id
    assert rec.input_tokens == 0 and rec.cost_usd == 0  # nothing was sent upstream


async def test_a_replay_is_not_served_while_the_kill_switch_is_on(degrading_gw: Gateway) -> None:
    gw = degrading_gw
    body = _body()
    key = _key()
    first, raw = await _send(gw, body, key)
    await set_kill(gw.state, True, who="oncall", key_id=A.key_id)
    gw.kill_switch.invalidate()
    killed, answer = await _send(gw, body, key)
    assert REPLAY_HEADER not in killed.headers and answer != raw
    assert killed.headers.get("x-bastion-degraded") == "kill_switch"
    assert b"Please reply manually." in answer
    recs = await _records(gw)
    assert any(r.flags.get("replay_withheld") == first.headers["x-request-id"] for r in recs)
    # the stored answer is still there once the switch is off
    await set_kill(gw.state, False, who="oncall", key_id=A.key_id)
    gw.kill_switch.invalidate()
    back, replayed = await _send(gw, body, key)
    assert back.headers[REPLAY_HEADER] == "true" and replayed == raw


async def test_a_replay_under_the_kill_switch_without_a_degraded_message_is_refused(
    gw: Gateway,
) -> None:
    body = _body()
    key = _key()
    await _send(gw, body, key)
    await set_kill(gw.state, True, who="oncall")
    gw.kill_switch.invalidate()
    with pytest.raises(AIUnavailable):
        await _send(gw, body, key)


async def test_a_revoked_key_gets_401_even_with_a_stored_replay(gw: Gateway) -> None:
    secret, record = new_key("soon-revoked")
    await gw.store.create_key(record)
    body = _body()
    key = _key()
    first, _ = await _send(gw, body, key, who=None, headers={"x-api-key": secret})
    assert first.status == 200
    await gw.store.revoke_key(record.id)
    gw.keys.invalidate()  # the resolver's short cache; a revocation takes effect within its ttl
    with pytest.raises(AuthenticationFailed) as ei:
        await _send(gw, body, key, who=None, headers={"x-api-key": secret})
    assert ei.value.http_status() == 401


async def test_the_client_key_is_scoped_to_the_calling_key(gw: Gateway) -> None:
    b = Principal(key_id="k-idem-b", name="b")
    key = "same-key\x00" + "é" * 300  # odd bytes and length: only ever hashed
    _, raw = await _send(gw, _body(), key)
    other, other_raw = await _send(gw, _body(), key, who=b)
    assert REPLAY_HEADER not in other.headers and other_raw != raw
    # another body under the same client key is B's own request, not a 422 from A's use
    third, _ = await _send(gw, _body(text="something else"), "shared-" + key, who=A)
    fourth, _ = await _send(gw, _body(text="another thing"), "shared-" + key, who=b)
    assert third.status == fourth.status == 200
    with pytest.raises(BastionError) as ei:
        await _send(gw, _body(text="changed"), key, who=b)
    assert ei.value.http_status() == 422  # B's own reuse with another body is still refused

"""The relay's reads are bounded by one watchdog timer per stream instead of a timeout scope
per chunk; it must cut exactly what the scope cut, and nothing else.

- a stalled upstream is cut at its idle bound (not before) and the client gets the
  ``STALLED`` error event;
- a stream whose chunks keep coming within the bound is never cut, however long it runs
  in total;
- a cancellation from outside (the client went away) during a read stays a
  cancellation: it is never taken for a timeout.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from tests.reliability._recovery_fakes import ANT, OAI, Script, ScriptedSimulator, config, dep, run

from bastion.config import Config
from bastion.gateway import Gateway
from bastion.library import LIBRARY_PRINCIPAL
from bastion.providers.base import Format
from bastion.recovery import STALLED

ANSWER = "one two three four five six seven eight nine ten eleven twelve"
IDLE = 0.4


def _gateway(tmp: Path, scripts: dict[str, Script], models: dict[str, Any]) -> Gateway:
    return Gateway(Config.model_validate(config(tmp, models)), simulator=ScriptedSimulator(scripts))


def _models(names: list[str]) -> dict[str, Any]:
    return {n: {"deployments": [dep("sim", n, timeouts={"idle": IDLE})]} for n in names}


@pytest.mark.parametrize("fmt", [ANT, OAI])
async def test_a_stall_is_cut_at_the_idle_bound_and_not_before(tmp_path: Path, fmt: Format) -> None:
    scripts = {"stall": Script(ANSWER, stall_after=3)}
    async with _gateway(tmp_path, scripts, _models(["stall"])) as gw:
        t0 = time.monotonic()
        got = await run(gw, fmt, "stall")
        took = time.monotonic() - t0
    assert got.errored and got.error_message == STALLED
    assert got.call.flags["stream_error"] == STALLED
    assert IDLE <= took < IDLE + 2.0, took


@pytest.mark.parametrize("fmt", [ANT, OAI])
async def test_a_stream_slower_in_total_than_the_bound_is_never_cut(
    tmp_path: Path, fmt: Format
) -> None:
    # the real simulator: 12 chunks 0.1 s apart, 1.2 s in all, three times the idle bound,
    # each gap a quarter of it
    scripts: dict[str, Script] = {}
    model = "claude-sonnet-5" if fmt is ANT else "gpt-4.1"
    headers = {"x-sim-chunk-ms": "100", "x-sim-reply-tokens": "12"}
    models = {
        "slow": {"deployments": [dep("sim", model, timeouts={"idle": IDLE}, headers=headers)]}
    }
    async with _gateway(tmp_path, scripts, models) as gw:
        got = await run(gw, fmt, "slow")
    assert got.clean_end and not got.errored, got.raw[-300:]
    assert "stream_error" not in got.call.flags


async def test_a_cancel_from_outside_during_a_read_stays_a_cancel(tmp_path: Path) -> None:
    scripts = {"stall": Script(ANSWER, stall_after=2)}
    async with _gateway(tmp_path, scripts, _models(["stall"])) as gw:
        body = {
            "model": "stall",
            "max_tokens": 100,
            "stream": True,
            "messages": [{"role": "user", "content": "tell me"}],
        }
        reply = await gw.handle(ANT, orjson.dumps(body), {}, principal=LIBRARY_PRINCIPAL)
        assert reply.stream is not None and reply.call is not None
        stream = reply.stream

        async def consume() -> None:
            async for _ in stream:
                pass

        task = asyncio.ensure_future(consume())
        await asyncio.sleep(IDLE / 4)  # the relay is now waiting in a read of the stalled body
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(IDLE * 1.5)  # past the bound: a stale watchdog must do nothing
        call = reply.call
        assert call.flags.get("client_disconnected") is True
        assert call.status == 499
        assert "stream_error" not in call.flags  # not reported as a stall

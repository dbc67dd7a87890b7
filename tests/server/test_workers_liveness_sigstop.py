"""`bastion serve --workers 2`: a worker that is alive but answers nothing is replaced.

A SIGSTOPped worker keeps its SO_REUSEPORT socket, so the kernel keeps handing it about half of
the new connections, which hang; its process never exits, so only the supervisor's pings
(``worker_ping.py``) can tell. With the default ping settings a worker paused for less than
the window is left alone (a merely slow worker is not killed), and one that stays stopped is
killed and restarted, after which every new call succeeds; workers kept CPU-bound by 32
clients for 8 s (~6000 calls) are never killed. Real processes on Redis state.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
from tests.conftest import sim_models
from tests.server._workers_redis import Workers, cleanup, running, start_workers, wait_for

_UNRESPONSIVE = re.compile(
    r"worker (\d+) \(pid (\d+)\) answered none of its last (\d+) pings \(silent ([0-9.]+)s"
    r"[^)]*\); killed; restarted as pid (\d+)"
)
CALLS = 16


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    w = start_workers(tmp_path, 2, models=sim_models())
    try:
        yield w
    finally:
        cleanup(w)


def _call(w: Workers) -> int:
    """One call on a new connection (the kernel picks the worker), bounded so none can hang."""
    r = httpx.post(
        w.url + "/v1/messages",
        json={
            "model": "claude-sonnet-5",
            "max_tokens": 20,
            "messages": [{"role": "user", "content": "are you there"}],
        },
        headers={"x-api-key": w.key, "anthropic-version": "2023-06-01", "connection": "close"},
        timeout=10,
    )
    return r.status_code


def _both_up(w: Workers) -> bool:
    try:
        return w.per_worker("bastion_worker_up") == {"0": 1.0, "1": 1.0}
    except httpx.HTTPError:  # a scrape that landed on the new worker still starting
        return False


@pytest.mark.timeout(60)
def test_a_stopped_worker_is_killed_and_replaced_and_a_short_pause_is_not(
    workers: Workers,
) -> None:
    first, second = workers.pids()
    stopped: list[int] = []
    try:
        # a pause well inside the window (5 missed 1 s pings of 2 s each): left alone
        os.kill(second, signal.SIGSTOP)
        stopped.append(second)
        time.sleep(2.5)
        os.kill(second, signal.SIGCONT)
        stopped.remove(second)

        os.kill(first, signal.SIGSTOP)
        stopped.append(first)
        t0 = time.monotonic()
        wait_for(
            lambda: _UNRESPONSIVE.search(workers.log()) is not None,
            20,
            "the supervisor replacing the stopped worker\n" + workers.log(),
        )
        detected = time.monotonic() - t0
        m = _UNRESPONSIVE.search(workers.log())
        assert m is not None
        wid, old, misses, silent, new = m.groups()
        assert (int(wid), int(old), int(misses)) == (0, first, 5)
        assert 4.0 <= detected <= 12.0, detected  # the window: neither hasty nor lax
        assert float(silent) >= 4.0  # how long it had answered nothing
        wait_for(lambda: not running(first), 5, "the stopped worker gone")
        stopped.remove(first)
        assert running(int(new)) and running(second)  # the short pause cost no restart
        assert len(_UNRESPONSIVE.findall(workers.log())) == 1
        assert "exited unexpectedly" not in workers.log()

        # once the new worker answers a scrape, every new call succeeds: none lands on a
        # socket nobody reads
        wait_for(
            lambda: _both_up(workers),
            30,
            "the new worker answering",
        )
        statuses = [_call(workers) for _ in range(CALLS)]
        assert statuses == [200] * CALLS
        assert workers.proc.poll() is None
    finally:
        for pid in stopped:  # let a still-stopped worker drain when the test stops it
            if running(pid):
                os.kill(pid, signal.SIGCONT)


@pytest.mark.timeout(60)
async def test_workers_busy_serving_are_not_killed(workers: Workers) -> None:
    """Both workers CPU-bound on calls (more clients than the box has cores) for several ping
    windows: their loops still answer the pings in time, so neither is killed."""
    body = {
        "model": "claude-sonnet-5",
        "max_tokens": 200,
        "messages": [{"role": "user", "content": "keep the loop busy " * 50}],
    }
    headers = {"x-api-key": workers.key, "anthropic-version": "2023-06-01"}
    end = time.monotonic() + 8.0
    done = 0

    async def client() -> None:
        nonlocal done
        async with httpx.AsyncClient(base_url=workers.url, timeout=30) as c:
            while time.monotonic() < end:
                r = await c.post("/v1/messages", json=body, headers=headers)
                assert r.status_code == 200, r.text[:300]
                done += 1

    await asyncio.wait_for(asyncio.gather(*(client() for _ in range(32))), 45)
    assert done > 50
    time.sleep(1.0)
    assert _UNRESPONSIVE.search(workers.log()) is None, workers.log()
    assert "restarted" not in workers.log()
    assert all(running(p) for p in workers.pids())

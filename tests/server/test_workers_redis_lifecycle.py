"""`bastion serve --workers 2` on Redis: the supervisor's part, on real processes.

SIGTERM to the supervisor drains every worker (calls in flight on both finish, none is a 5xx,
every record is written, exit 0); a worker killed from outside is restarted and serves; workers
that keep dying make the supervisor give up with a non-zero exit instead of looping.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.conftest import BIN, free_port, sim_models, stop, write_config
from tests.server._workers_redis import (
    REDIS_URL,
    Workers,
    cleanup,
    drop_prefix,
    running,
    start_workers,
    wait_for,
)

from bastion.server.workers import RestartBudget

CHUNK_MS = 200
TOKENS = 15
PACED = {
    "deployments": [
        {
            "provider": "sim",
            "model": "paced",
            "headers": {"x-sim-chunk-ms": str(CHUNK_MS), "x-sim-reply-tokens": str(TOKENS)},
        }
    ]
}


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    w = start_workers(
        tmp_path, 2, models=sim_models({"paced": PACED}), server={"shutdown_drain_seconds": 30}
    )
    try:
        yield w
    finally:
        cleanup(w)


def _body(stream: bool) -> dict[str, Any]:
    return {
        "model": "paced",
        "max_tokens": 500,
        "stream": stream,
        "messages": [{"role": "user", "content": "Tell me about draining"}],
    }


async def _call(w: Workers, stream: bool, started: asyncio.Event) -> tuple[int, str, list[str]]:
    """One call on its own connection: status, request id, the stream's event names."""
    headers = {"x-api-key": w.key, "anthropic-version": "2023-06-01"}
    events: list[str] = []
    async with httpx.AsyncClient(base_url=w.url, timeout=60) as client:
        if not stream:
            started.set()
            r = await client.post("/v1/messages", json=_body(False), headers=headers)
            return r.status_code, r.headers.get("x-request-id", ""), events
        async with client.stream("POST", "/v1/messages", json=_body(True), headers=headers) as r:
            async for line in r.aiter_lines():
                if line.startswith("event: "):
                    events.append(line[7:])
                    started.set()
            return r.status_code, r.headers.get("x-request-id", ""), events


def _connected(pid: int, port: int) -> int:
    """Connections this worker holds from clients of the gateway's port."""
    return sum(
        1
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED
    )


def _recorded(db: Path, ids: list[str]) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        marks = ",".join("?" * len(ids))
        rows = conn.execute(
            f"SELECT request_id, status FROM calls WHERE request_id IN ({marks})", ids
        ).fetchall()
    return {r[0]: r[1] for r in rows}


async def test_sigterm_drains_calls_in_flight_on_every_worker_and_writes_every_record(
    workers: Workers, tmp_path: Path
) -> None:
    port = int(workers.url.rsplit(":", 1)[1])
    pids = workers.pids()
    events = [asyncio.Event() for _ in range(16)]
    calls = [
        asyncio.ensure_future(_call(workers, i % 4 != 0, events[i])) for i in range(len(events))
    ]
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), 20)
    # both workers hold calls in flight when the signal comes
    held = [await asyncio.to_thread(_connected, pid, port) for pid in pids]
    assert all(n > 0 for n in held), held
    workers.proc.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(workers.proc.wait, 60)
    results = await asyncio.wait_for(asyncio.gather(*calls), 30)
    assert code == 0, workers.log()
    for status, _, evs in results:
        assert status == 200
        if evs:  # a stream: whole, ended cleanly
            assert evs[-1] == "message_stop" and evs.count("content_block_delta") == TOKENS
    ids = [rid for _, rid, _ in results]
    assert all(ids) and _recorded(tmp_path / "bastion.db", ids) == dict.fromkeys(ids, 200)
    assert not any(running(pid) for pid in pids)
    assert "draining 2 workers" in workers.log()


def test_a_killed_worker_is_restarted_and_serves(workers: Workers) -> None:
    victim, other = workers.pids()
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: workers.restarts() != [], 10, "the supervisor restarting the worker")
    [(wid, old, code, new)] = workers.restarts()
    assert (wid, old, code) == (0, victim, -signal.SIGKILL)
    assert running(new) and running(other)
    # the new worker is up once it answers for itself in a scrape
    wait_for(
        lambda: workers.per_worker("bastion_worker_up") == {"0": 1.0, "1": 1.0},
        60,
        "the restarted worker answering",
    )
    before = workers.per_worker("bastion_requests_total", status="2xx")
    deadline = time.monotonic() + 30
    while workers.per_worker("bastion_requests_total", status="2xx").get("0", 0.0) <= before.get(
        "0", 0.0
    ):
        assert time.monotonic() < deadline, "the restarted worker served no call"
        r = httpx.post(
            workers.url + "/v1/messages",
            json=_body(False) | {"model": "sim-after"},
            headers={"x-api-key": workers.key, "connection": "close"},
            timeout=30,
        )
        assert r.status_code == 200
    assert workers.proc.poll() is None


def test_workers_that_keep_dying_make_the_supervisor_exit_non_zero(workers: Workers) -> None:
    killed: set[int] = set()
    deadline = time.monotonic() + 60
    while workers.proc.poll() is None and time.monotonic() < deadline:
        current = {new for *_, new in workers.restarts()} | set(workers.pids())
        for pid in current - killed:
            if running(pid):
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
        time.sleep(0.05)
    assert workers.proc.wait(5) == 1
    assert "giving up" in workers.log()
    assert len(workers.restarts()) == 5  # the bound: 5 restarts a minute
    assert not any(running(pid) for pid in killed | {new for *_, new in workers.restarts()})


@pytest.mark.parametrize("socket_mode", ["--reuse-port", "--no-reuse-port"])
def test_the_supervisor_makes_the_first_key_once_and_every_worker_accepts_it(
    tmp_path: Path, socket_mode: str
) -> None:
    prefix = "bastiontest-wk" + uuid.uuid4().hex[:8]
    config = write_config(tmp_path, state={"url": REDIS_URL, "prefix": prefix})
    port = free_port()
    log = tmp_path / "serve.log"
    argv = [str(BIN / "bastion"), "serve", "--config", str(config), "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*argv, "--workers", "3", socket_mode], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_for(lambda: "workers on one port" in log.read_text(errors="replace"), 90, "start")
        text = log.read_text(errors="replace")
        mode = "SO_REUSEPORT" if socket_mode == "--reuse-port" else "one shared socket"
        assert f"3 workers on one port ({mode})" in text
        assert (
            text.count("a first key was created") == 1 and text.count("Bastion is listening") == 1
        )
        key = re.search(r"^  (bst-\S+)$", text, re.M)
        assert key is not None, text
        with sqlite3.connect(tmp_path / "bastion.db") as conn:
            assert conn.execute("SELECT count(*) FROM keys").fetchone() == (1,)
        # the one key works on every worker (fresh connections reach all three)
        for _ in range(12):
            r = httpx.get(
                f"http://127.0.0.1:{port}/v1/models",
                headers={"x-api-key": key.group(1), "connection": "close"},
                timeout=10,
            )
            assert r.status_code == 200
        metrics = httpx.get(
            f"http://127.0.0.1:{port}/metrics", headers={"x-api-key": key.group(1)}, timeout=10
        ).text
        assert all(f'bastion_worker_up{{worker="{w}"}} 1.0' in metrics for w in range(3))
    finally:
        stop(proc)
        drop_prefix(prefix)
    assert proc.returncode == 0


@settings(max_examples=200, deadline=None)
@given(
    limit=st.integers(1, 6),
    window=st.floats(0.5, 100.0),
    gaps=st.lists(st.floats(0.0, 50.0), max_size=40),
)
def test_the_restart_budget_allows_exactly_limit_restarts_in_any_window(
    limit: int, window: float, gaps: list[float]
) -> None:
    budget = RestartBudget(limit, window)
    now, accepted = 0.0, []
    for gap in gaps:
        now += gap
        recent = [t for t in accepted if now - t < window]
        ok = budget.take(now)
        assert ok == (len(recent) < limit)  # refused exactly when the window is full
        if ok:
            accepted.append(now)
    for t in accepted:
        assert sum(1 for u in accepted if t <= u < t + window) <= limit


async def test_a_second_signal_ends_every_worker_at_once(workers: Workers) -> None:
    started = asyncio.Event()
    streams = [asyncio.ensure_future(_call(workers, True, started)) for _ in range(4)]
    await asyncio.wait_for(started.wait(), 20)
    pids = workers.pids()
    workers.proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.3)
    assert workers.proc.poll() is None  # draining: the streams take 3 s
    workers.proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    code = await asyncio.to_thread(workers.proc.wait, 10)
    assert time.monotonic() - t0 < 2.0
    assert code == 1  # the workers did not drain cleanly, and the supervisor says so
    assert "workers exited uncleanly" in workers.log()
    assert not any(running(pid) for pid in pids)
    for s in streams:
        s.cancel()
    await asyncio.gather(*streams, return_exceptions=True)

"""`bastion serve --workers 2` on SQLite state: the state host's crash, restart and shutdown.

Real processes. A state host killed with SIGKILL fails the calls waiting on it closed (503,
never served unguarded), the supervisor restarts it, and the workers reconnect on their next
call; the spend it had flushed is still counted against the cap. On SIGTERM the supervisor
drains the workers, then stops the host, whose close flushes the spend into the state file.
A host that is alive but stopped (SIGSTOP) is found by the supervisor's pings, killed and
restarted. A host that keeps dying spends the workers' restart budget and ends the supervisor with 1; one
that cannot open its state fails the start before any worker runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import anthropic
import pytest
from tests.conftest import stop
from tests.server._workers_redis import Workers, running, wait_for
from tests.server._workers_statehost import host_pids, start_embedded

MSG = [{"role": "user", "content": "hello"}]
PER_CALL_USD = 0.01  # 10 output tokens at $1000 per million, input free
SECTIONS: dict[str, Any] = {
    "cost": {"prices": {"sim-cap": {"input": 0.0, "output": 1000.0}}},
    "features": {"capped": {"daily_budget_usd": PER_CALL_USD * 5}},
}


def _call(w: Workers) -> Any:
    client = anthropic.Anthropic(base_url=w.url, api_key=w.key, max_retries=0, timeout=30)
    try:
        return client.messages.create(
            model="sim-cap",
            max_tokens=10,
            messages=MSG,  # type: ignore[arg-type]
            extra_headers={"x-bastion-feature": "capped"},
        )
    except anthropic.APIStatusError as exc:
        return exc


def _spent(state_db: Path) -> float:
    with sqlite3.connect(state_db) as db:
        rows = db.execute("SELECT key, settled FROM caps").fetchall()
    return sum(settled for key, settled in rows if "capped" in key)


@pytest.fixture
def workers(tmp_path: Path) -> Any:
    w = start_embedded(tmp_path, 2, **SECTIONS)
    try:
        yield w
    finally:
        stop(w.proc)


def test_a_killed_state_host_fails_calls_closed_and_is_restarted(
    workers: Workers, tmp_path: Path
) -> None:
    for _ in range(2):
        assert isinstance(_call(workers), anthropic.types.Message)
    time.sleep(1.0)  # past the host's write-behind interval: these two are on disk
    (host,) = host_pids(workers)
    os.kill(host, signal.SIGSTOP)  # calls now wait on the host ...
    results: list[Any] = [None] * 4
    threads = [
        threading.Thread(target=lambda i=i: results.__setitem__(i, _call(workers)))
        for i in range(4)
    ]
    for t in threads:
        t.start()
    time.sleep(1.5)
    os.kill(host, signal.SIGKILL)  # ... and its death breaks their connections
    for t in threads:
        t.join(30)
    assert all(isinstance(r, anthropic.APIStatusError) and r.status_code == 503 for r in results), (
        results
    )  # fail closed: none was served without its cap
    assert workers.log().count("error=StateUnavailable") == 4
    wait_for(lambda: len(host_pids(workers)) == 2, 30, "the supervisor restarts the state host")
    new = host_pids(workers)[-1]
    assert new != host and running(new) and not running(host)
    assert workers.proc.poll() is None and all(running(p) for p in workers.pids())
    # the workers reconnect; the restarted host read the two flushed calls back from the file
    ok = [_call(workers) for _ in range(5)]
    served = [r for r in ok if isinstance(r, anthropic.types.Message)]
    refused = [r for r in ok if isinstance(r, anthropic.APIStatusError)]
    assert len(served) == 3, ok  # 5 allowed, 2 spent before the crash
    assert all(r.status_code == 429 for r in refused), refused


def test_sigterm_drains_then_the_host_flushes_the_spend_into_the_state_file(
    workers: Workers, tmp_path: Path
) -> None:
    host = host_pids(workers)[0]
    results = [_call(workers) for _ in range(3)]
    assert all(isinstance(r, anthropic.types.Message) for r in results), results
    workers.proc.send_signal(signal.SIGTERM)  # at once: within the host's flush interval
    assert workers.proc.wait(timeout=60) == 0, workers.log()
    assert not running(host)
    assert "state host exited" not in workers.log()
    assert _spent(tmp_path / "state.db") == pytest.approx(3 * PER_CALL_USD)


def test_a_state_host_that_keeps_dying_ends_the_supervisor_with_1(workers: Workers) -> None:
    """Its restarts count against the workers' budget (5 in 60 s): a crash loop ends."""
    pids = workers.pids()
    for kills in range(1, 7):
        os.kill(host_pids(workers)[-1], signal.SIGKILL)
        if kills < 6:
            wait_for(lambda k=kills: len(host_pids(workers)) == k + 1, 30, f"restart {kills}")
    assert workers.proc.wait(timeout=60) == 1, workers.log()
    assert "5 restarts in 60s already, giving up" in workers.log()
    wait_for(lambda: not any(running(p) for p in pids), 30, "the workers are stopped too")


def test_a_state_host_that_cannot_start_fails_the_start_before_any_worker(tmp_path: Path) -> None:
    """A state file it cannot open: exit 1 with the host's reason, and no worker ran."""
    with pytest.raises(RuntimeError, match="exited early with 1"):
        start_embedded(tmp_path, 2, state_url="sqlite:////nonexistent-dir/x/state.db")
    (log_path,) = tmp_path.glob("serve-*.log")
    log = log_path.read_text(errors="replace")
    assert "the state host exited with 2 during start-up" in log, log
    assert "state host: " in log  # the host's own message says what it could not open
    assert "workers on one port" not in log


def test_a_stopped_state_host_is_found_by_the_pings_killed_and_restarted(
    workers: Workers,
) -> None:
    assert isinstance(_call(workers), anthropic.types.Message)
    (host,) = host_pids(workers)
    os.kill(host, signal.SIGSTOP)  # alive, its socket open, answering nothing
    try:
        wait_for(lambda: len(host_pids(workers)) == 2, 40, "the stopped host is replaced")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(host, signal.SIGCONT)
    assert "answered none of its last 5 pings" in workers.log()
    assert not running(host)
    assert isinstance(_call(workers), anthropic.types.Message)  # the workers reconnected

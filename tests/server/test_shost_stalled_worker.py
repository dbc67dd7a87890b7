"""`bastion serve --workers 2` on SQLite: a worker stopped (SIGSTOP) while the state host restarts.

Real processes. Slow calls hold a $ cap's whole room, spread over both workers. One worker is
stopped, then the host is killed and restarted. The stopped worker cannot give its holds back
to the new host until it runs again, yet its calls are still under way (upstream) and will
settle. Before, the restarted host held new reservations back for a fixed 2 s only, then the
other worker admitted new calls into the stopped worker's room: served past the cap, and the
cap overshot once the stopped worker went on. Now the hold lasts until every worker that was
alive at the restart has given its holds back or died (the supervisor's pings kill a worker
stopped for good, and a dead worker's holds die with it); it is bounded by the ping window.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import anthropic
from tests.conftest import sim_models, stop
from tests.server._workers_redis import Workers, wait_for
from tests.server._workers_statehost import (
    PER_CALL_USD,
    capped_call,
    host_pids,
    in_flight,
    start_embedded,
)

from bastion.state.remote import ping_sync

CAP_CALLS = 5  # (six of 0.01 add up past 0.06 in floats)
SLOW_MS = 40000


def _connections(port: int, pid: int) -> int:
    """How many established TCP connections on ``port`` process ``pid`` holds."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for row in f.read().splitlines()[1:]:
                cols = row.split()
                if int(cols[1].rsplit(":", 1)[1], 16) == port and cols[3] == "01":
                    inodes.add(cols[9])
    held = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            held += 1
    return held


def _new_host_socket(w: Workers, old: int) -> str:
    """The socket of the state host the supervisor started after ``old``."""
    end = time.monotonic() + 30
    while time.monotonic() < end:
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == old:
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv = f.read().decode().split("\0")
            except (OSError, ValueError, IndexError):
                continue
            if ppid == w.proc.pid and "bastion.state.host" in argv:
                return argv[argv.index("--socket") + 1]
        time.sleep(0.05)
    raise AssertionError("no new state host")


def test_a_worker_stopped_through_a_host_restart_keeps_its_room(tmp_path: Path) -> None:
    slow = {"provider": "sim", "model": "sim-slow", "headers": {"x-sim-ttft-ms": str(SLOW_MS)}}
    w = start_embedded(
        tmp_path,
        2,
        models=sim_models({"sim-slow": {"deployments": [slow]}}),
        cost={"prices": {m: {"input": 0.0, "output": 1000.0} for m in ("sim-cap", "sim-slow")}},
        features={"capped": {"daily_budget_usd": PER_CALL_USD * CAP_CALLS}},
        # the pings would kill the stopped worker after ~60 s: it is resumed long before
        server={"max_body_bytes": 200_000, "worker_ping_misses": 60},
    )
    port = int(w.url.rsplit(":", 1)[1])
    try:
        threads, results = in_flight(w, CAP_CALLS)
        wait_for(
            lambda: sum(_connections(port, pid) for pid in w.pids()) >= CAP_CALLS,
            60,
            "every slow call reached a worker",
        )
        start = time.monotonic()
        time.sleep(1.0)  # all admitted: the cap's room is held, they wait upstream
        assert not results
        held = {pid: _connections(port, pid) for pid in w.pids()}
        stopped = max(held, key=lambda p: held[p])
        assert held[stopped] > 0, held  # its calls hold part of the room
        os.kill(stopped, signal.SIGSTOP)
        try:
            (old,) = host_pids(w)
            os.kill(old, signal.SIGKILL)
            # the restart is logged once the new host admits again: here only after the stopped
            # worker is back, so the new host is found as the supervisor's child
            sock = _new_host_socket(w, old)
            wait_for(lambda: ping_sync(sock, 1.0), 30, "the state host restarted")
            time.sleep(2.5)  # past the old fixed hold
            # the other worker must not admit into the stopped one's room (503 while held);
            # calls handed to the stopped worker hang (timed out: not served either)
            late: list[Any] = [None] * 6
            probes = [
                threading.Thread(
                    target=lambda i=i: late.__setitem__(i, capped_call(w, "sim-cap", timeout=8.0))
                )
                for i in range(6)
            ]
            for p in probes:
                p.start()
            for p in probes:
                p.join(20)
            assert time.monotonic() - start < SLOW_MS / 1000 - 3, "the slow calls ended first"
            assert not any(isinstance(r, anthropic.types.Message) for r in late), late
        finally:
            os.kill(stopped, signal.SIGCONT)
        for t in threads:
            t.join(60)
        assert len(results) == CAP_CALLS
        assert all(isinstance(r, anthropic.types.Message) for r in results), results
        time.sleep(1.0)
        # every slow call's spend counted, and nothing more got in: the cap is spent, not passed
        after = [capped_call(w, "sim-cap") for _ in range(2)]
        assert all(getattr(r, "status_code", None) == 429 for r in after), after
        spent = w.per_worker("bastion_cost_usd_total", feature="capped")
        assert sum(spent.values()) <= PER_CALL_USD * CAP_CALLS + 1e-9, spent
    finally:
        stop(w.proc)

"""`bastion serve --workers 2` on SQLite: a state host killed while calls hold the whole cap.

Real processes. Five slow calls hold a $ cap's whole room in the state host when it is killed
with SIGKILL; the supervisor restarts it. The new host must not admit a call into that room
(before, it started with no reservation, so calls after the restart passed the cap), and the
five calls' spend must count when they end (before, their settles named reservations the new
host had never seen and were dropped). The workers give their live holds back to the new host.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import anthropic
from tests.conftest import sim_models, stop
from tests.server._workers_redis import wait_for
from tests.server._workers_statehost import (
    PER_CALL_USD,
    capped_call,
    host_pids,
    in_flight,
    start_embedded,
)

CAP_CALLS = 5
SLOW_MS = 6000


def test_calls_in_flight_keep_their_room_and_their_spend_across_a_host_crash(
    tmp_path: Path,
) -> None:
    slow = {"provider": "sim", "model": "sim-slow", "headers": {"x-sim-ttft-ms": str(SLOW_MS)}}
    w = start_embedded(
        tmp_path,
        2,
        models=sim_models({"sim-slow": {"deployments": [slow]}}),
        cost={"prices": {m: {"input": 0.0, "output": 1000.0} for m in ("sim-cap", "sim-slow")}},
        features={"capped": {"daily_budget_usd": PER_CALL_USD * CAP_CALLS}},
    )
    try:
        threads, results = in_flight(w, CAP_CALLS)
        start = time.monotonic()
        time.sleep(1.5)  # all five admitted: the cap's room is held, they wait upstream
        assert not results
        (old,) = host_pids(w)
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: len(host_pids(w)) == 2, 30, "the state host restarted")
        # after the restart: the room is still held, so no call gets in (429, or 503 while
        # the new host waits for the workers to give their holds back)
        late = [capped_call(w, "sim-cap") for _ in range(3)]
        assert time.monotonic() - start < SLOW_MS / 1000, "the slow calls ended first"
        assert all(isinstance(r, anthropic.APIStatusError) for r in late), late
        assert {r.status_code for r in late} <= {429, 503}, late
        for t in threads:
            t.join(60)
        assert len(results) == CAP_CALLS
        assert all(isinstance(r, anthropic.types.Message) for r in results), results
        # their spend counted on the new host: the cap is spent, not open again
        time.sleep(2.5)  # past the new host's restore grace
        after = [capped_call(w, "sim-cap") for _ in range(2)]
        assert all(getattr(r, "status_code", None) == 429 for r in after), after
        spent = w.per_worker("bastion_cost_usd_total", feature="capped")
        assert sum(spent.values()) <= PER_CALL_USD * CAP_CALLS + 1e-9
    finally:
        stop(w.proc)

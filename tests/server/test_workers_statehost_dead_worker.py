"""`bastion serve --workers 2` on SQLite: a worker killed mid-call gives its cap room back.

Real processes. Two slow calls hold a $ cap's whole room when both workers are killed with
SIGKILL; the supervisor restarts them. One process that dies takes its reservations with it,
so a call after the restarts is admitted at once. Before, the dead workers' holds stayed in
the state host until their lease ran out (the call's deadline plus a minute): 429 meanwhile.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import anthropic
from tests.conftest import sim_models, stop
from tests.server._workers_redis import wait_for
from tests.server._workers_statehost import PER_CALL_USD, capped_call, in_flight, start_embedded


def test_killed_workers_release_their_holds_at_once(tmp_path: Path) -> None:
    slow = {"provider": "sim", "model": "sim-slow", "headers": {"x-sim-ttft-ms": "20000"}}
    w = start_embedded(
        tmp_path,
        2,
        models=sim_models({"sim-slow": {"deployments": [slow]}}),
        cost={"prices": {m: {"input": 0.0, "output": 1000.0} for m in ("sim-cap", "sim-slow")}},
        features={"capped": {"daily_budget_usd": PER_CALL_USD * 2}},
    )
    try:
        threads, results = in_flight(w, 2)
        time.sleep(1.5)  # both admitted: the cap's whole room is held
        full = capped_call(w, "sim-cap")
        assert getattr(full, "status_code", None) == 429, full
        for pid in w.pids():
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: len(w.restarts()) == 2, 30, "both workers restarted")
        for t in threads:
            t.join(30)
        assert all(isinstance(r, anthropic.APIConnectionError) for r in results), results
        late = None
        for _ in range(20):  # the new workers may take a moment to listen
            late = capped_call(w, "sim-cap")
            if not isinstance(late, anthropic.APIConnectionError):
                break
            time.sleep(0.25)
        assert isinstance(late, anthropic.types.Message), late  # the room is back
    finally:
        stop(w.proc)

"""`bastion serve --workers 2` on the embedded (SQLite) state: the state host keeps it exact.

The same real-process checks as on Redis (test_workers_redis_guarantees.py, whose test bodies
run here against this module's ``workers`` fixture): one supervisor, two workers on one port,
every call on its own connection so the kernel spreads them over both, and through the
per-worker series of ``/metrics`` each test checks that both workers served its calls. The
counters live in the one state host process, so a $ cap and a rate limit admit exactly what
they allow, the kill switch (set through the admin API, lifted by the CLI on the state file)
stops both, an idempotency key sent to both runs one upstream call, and a breaker opened by
failures is open for both. Without the state host each worker would keep its own counters
and these would admit about twice as much.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.conftest import sim_models
from tests.server._workers_redis import Workers
from tests.server._workers_statehost import embedded_fixture, host_pids
from tests.server.test_workers_redis_guarantees import (
    CAP_CALLS,
    PER_CALL_USD,
    test_a_breaker_opened_by_failures_is_open_for_both_workers,
    test_a_rate_limit_admits_exactly_its_requests_across_workers,
    test_a_spend_cap_admits_exactly_what_it_allows_across_workers,
    test_an_idempotency_key_replayed_on_both_workers_makes_one_upstream_call,
    test_the_kill_switch_set_through_the_api_stops_both_workers_and_the_cli_lifts_it,
)

__all__ = [
    "test_a_breaker_opened_by_failures_is_open_for_both_workers",
    "test_a_rate_limit_admits_exactly_its_requests_across_workers",
    "test_a_spend_cap_admits_exactly_what_it_allows_across_workers",
    "test_an_idempotency_key_replayed_on_both_workers_makes_one_upstream_call",
    "test_the_kill_switch_set_through_the_api_stops_both_workers_and_the_cli_lifts_it",
]


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    tmp = tmp_path_factory.mktemp("workers_sh")
    models = sim_models(
        {
            "flappy": {
                "deployments": [
                    {
                        "provider": "sim",
                        "model": "primary",
                        "headers": {"x-sim-fault": "status:503"},
                    },
                    {"provider": "sim", "model": "fallback"},
                ]
            }
        }
    )
    yield from embedded_fixture(
        tmp,
        2,
        models=models,
        cost={"prices": {"sim-cap": {"input": 0.0, "output": 1000.0}}},
        features={"capped": {"daily_budget_usd": PER_CALL_USD * CAP_CALLS}},
        reliability={
            "retry": {"attempts_per_deployment": 1, "backoff_base": 0.01, "backoff_max": 0.02},
            "breaker": {"failure_threshold": 2, "cooldown_seconds": 60.0, "min_calls": 50},
        },
    )


def test_the_workers_use_one_state_host_not_their_own_counters(workers: Workers) -> None:
    """The supervisor started one host, and neither worker opened the state file itself."""
    (host,) = host_pids(workers)
    for pid in workers.pids():
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        assert b"--state-socket" in argv, argv
    with open(f"/proc/{host}/cmdline", "rb") as f:
        assert b"bastion.state.host" in f.read()

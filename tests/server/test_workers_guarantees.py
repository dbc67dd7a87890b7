"""`bastion serve --workers 2`: what holds across replicas holds across workers, on both states.

One real supervisor with two workers on one port, once on Redis state and once on the embedded
(SQLite) state, where one state host process owns the counters and the workers reach it over a
Unix socket; every test runs on both (ids ``[redis]`` and ``[statehost]``). Every call opens
its own connection through the official SDK, so the kernel hands the calls to both workers;
each test checks, through the per-worker series of ``/metrics``, that both workers served its
calls, and that the guarantee held over all of them: a $ cap and a rate limit admit exactly
what they allow, the kill switch (set through the admin API, lifted by the CLI) stops both, an
idempotency key replayed on both runs one upstream call, and a breaker opened by failures is
open for both. Were the workers to keep counters of their own, these would admit about twice
as much. Redis must be up at 127.0.0.1:6379: without it the Redis half fails (never skips).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2 as httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.conftest import sim_models
from tests.server._workers_redis import Workers, fixture, key_create
from tests.server._workers_statehost import embedded_fixture, host_pids

from bastion.server.worker_metrics import merge

MSG = [{"role": "user", "content": "hello"}]
PER_CALL_USD = 0.01  # 10 output tokens at $1000 per million, input free
CAP_CALLS = 5


@pytest.fixture(scope="module", params=["redis", "statehost"])
def workers(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Workers]:
    tmp = tmp_path_factory.mktemp(f"workers_{request.param}")
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
    start = fixture if request.param == "redis" else embedded_fixture
    yield from start(
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


def test_the_workers_share_one_state_not_counters_of_their_own(workers: Workers) -> None:
    """On Redis both workers open it and there is no state host; on the embedded state the
    supervisor started one host and neither worker opened the state file itself."""
    argvs = []
    for pid in workers.pids():
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argvs.append(f.read().split(b"\0"))
    if workers.prefix:  # Redis: the prefix this run's keys are under
        assert "state host pid" not in workers.log()
        assert all(b"--state-socket" not in argv for argv in argvs), argvs
        return
    (host,) = host_pids(workers)
    assert all(b"--state-socket" in argv for argv in argvs), argvs
    with open(f"/proc/{host}/cmdline", "rb") as f:
        assert b"bastion.state.host" in f.read()


def _client(w: Workers, key: str | None = None) -> anthropic.Anthropic:
    """A fresh SDK client: its own connection, which either worker may accept."""
    return anthropic.Anthropic(base_url=w.url, api_key=key or w.key, max_retries=0, timeout=30)


def _burst(n: int, call: Any) -> list[Any]:
    """``call(i)`` from n threads at once; each result is a response or the SDK's error."""
    out: list[Any] = [None] * n
    go = threading.Barrier(n)

    def one(i: int) -> None:
        go.wait()
        try:
            out[i] = call(i)
        except anthropic.APIStatusError as exc:
            out[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def _both_served(w: Workers, before: dict[str, float], sample: str, **match: str) -> None:
    after = w.per_worker(sample, **match)
    grew = {wid for wid, v in after.items() if v > before.get(wid, 0.0)}
    assert grew == {"0", "1"}, (before, after)


def test_a_spend_cap_admits_exactly_what_it_allows_across_workers(workers: Workers) -> None:
    before = workers.per_worker("bastion_requests_total", feature="capped")

    def call(i: int) -> Any:
        return _client(workers).messages.create(
            model="sim-cap",
            max_tokens=10,
            messages=MSG,  # type: ignore[arg-type]
            extra_headers={"x-bastion-feature": "capped"},
        )

    results = _burst(4 * CAP_CALLS, call)
    ok = [r for r in results if isinstance(r, anthropic.types.Message)]
    refused = [r for r in results if isinstance(r, anthropic.APIStatusError)]
    assert len(ok) == CAP_CALLS, results
    assert len(refused) == 3 * CAP_CALLS and all(r.status_code == 429 for r in refused)
    assert all(r.usage.output_tokens == 10 for r in ok)  # each cost exactly PER_CALL_USD
    _both_served(workers, before, "bastion_requests_total", feature="capped")
    spent = workers.per_worker("bastion_cost_usd_total", feature="capped")
    assert sum(spent.values()) == pytest.approx(PER_CALL_USD * CAP_CALLS)


def test_a_rate_limit_admits_exactly_its_requests_across_workers(workers: Workers) -> None:
    # 12 a minute: a burst of 2 (rpm / 6), then one every 5 s; two workers counting apart
    # would each admit 2
    key = key_create(workers.config_path, "--name", "rpm-" + uuid.uuid4().hex[:6], "--rpm", "12")
    started = time.monotonic()
    before = workers.per_worker("bastion_requests_total", model="sim-rpm")
    results = _burst(
        24,
        lambda i: _client(workers, key).messages.create(
            model="sim-rpm",
            max_tokens=10,
            messages=MSG,  # type: ignore[arg-type]
        ),
    )
    ok = [r for r in results if isinstance(r, anthropic.types.Message)]
    limited = [r for r in results if isinstance(r, anthropic.APIStatusError)]
    assert time.monotonic() - started < 5.0  # no refill during the burst
    assert len(ok) == 2, results
    assert len(limited) == 22 and all(r.status_code == 429 for r in limited)
    _both_served(workers, before, "bastion_requests_total", model="sim-rpm")


def test_the_kill_switch_set_through_the_api_stops_both_workers_and_the_cli_lifts_it(
    workers: Workers,
) -> None:
    r = httpx.post(
        workers.url + "/admin/kill",
        json={"on": True, "who": "oncall"},
        headers={"x-api-key": workers.key},
        timeout=10,
    )
    assert r.status_code == 200
    try:
        time.sleep(1.0)  # each worker polls the switch every 0.25 s
        before = workers.per_worker("bastion_requests_total", model="sim-kill", status="5xx")
        results = _burst(
            16,
            lambda i: _client(workers).messages.create(
                model="sim-kill",
                max_tokens=10,
                messages=MSG,  # type: ignore[arg-type]
            ),
        )
        assert all(
            isinstance(r, anthropic.APIStatusError)
            and r.status_code == 503
            and r.body["error"]["type"] == "ai_unavailable"  # type: ignore[index]
            for r in results
        ), results
        _both_served(workers, before, "bastion_requests_total", model="sim-kill", status="5xx")
        assert "global: on (by oncall" in workers.cli("kill", "status").stdout
    finally:
        off = workers.cli("kill", "off")
        assert off.returncode == 0, off.stderr
    time.sleep(1.0)
    before = workers.per_worker("bastion_requests_total", model="sim-alive", status="2xx")
    results = _burst(
        16,
        lambda i: _client(workers).messages.create(
            model="sim-alive",
            max_tokens=10,
            messages=MSG,  # type: ignore[arg-type]
        ),
    )
    assert all(isinstance(r, anthropic.types.Message) for r in results), results
    _both_served(workers, before, "bastion_requests_total", model="sim-alive", status="2xx")


def test_an_idempotency_key_replayed_on_both_workers_makes_one_upstream_call(
    workers: Workers,
) -> None:
    model = "sim-idem-" + uuid.uuid4().hex[:8]
    idem = "idem-" + uuid.uuid4().hex
    before = workers.per_worker("bastion_requests_total", model=model)
    results = _burst(
        12,
        lambda i: _client(workers).messages.with_raw_response.create(
            model=model,
            max_tokens=10,
            messages=MSG,  # type: ignore[arg-type]
            extra_headers={"idempotency-key": idem},
        ),
    )
    assert all(not isinstance(r, anthropic.APIStatusError) for r in results), results
    assert len({r.parse().id for r in results}) == 1
    assert sum(1 for r in results if not r.headers.get("x-bastion-idempotent-replay")) == 1
    first = next(r for r in results if not r.headers.get("x-bastion-idempotent-replay"))
    dep = first.headers["x-bastion-deployment"]
    attempts = workers.per_worker("bastion_upstream_attempts_total", deployment=dep)
    assert sum(attempts.values()) == 1, attempts  # one upstream call, on one worker
    _both_served(workers, before, "bastion_requests_total", model=model)


def test_a_breaker_opened_by_failures_is_open_for_both_workers(workers: Workers) -> None:
    # failures on either worker count toward the one breaker in the shared state
    deadline = time.monotonic() + 20
    opened = False
    while time.monotonic() < deadline and not opened:
        raw = _client(workers).messages.with_raw_response.create(
            model="flappy",
            max_tokens=10,
            messages=MSG,  # type: ignore[arg-type]
        )
        assert raw.headers["x-bastion-deployment"].startswith("sim/fallback")
        opened = raw.headers["x-bastion-attempts"] == "1"
    assert opened, "the breaker never opened"
    primary = workers.per_worker("bastion_upstream_attempts_total", deployment="sim/primary#0")
    fallback = workers.per_worker("bastion_upstream_attempts_total", deployment="sim/fallback#1")
    results = _burst(
        16,
        lambda i: _client(workers).messages.with_raw_response.create(
            model="flappy",
            max_tokens=10,
            messages=MSG,  # type: ignore[arg-type]
        ),
    )
    assert all(
        r.headers["x-bastion-deployment"].startswith("sim/fallback")
        and r.headers["x-bastion-attempts"] == "1"
        for r in results
    ), results
    # neither worker sent the primary anything more; both served the burst from the fallback
    assert (
        workers.per_worker("bastion_upstream_attempts_total", deployment="sim/primary#0") == primary
    )
    _both_served(workers, fallback, "bastion_upstream_attempts_total", deployment="sim/fallback#1")
    states = workers.per_worker("bastion_breaker_state", deployment="sim/primary#0")
    assert states == {"0": 2.0, "1": 2.0}


def test_one_scrape_answers_for_every_worker_each_under_its_label(workers: Workers) -> None:
    for _ in range(3):  # whichever worker takes the scrape
        assert workers.per_worker("bastion_worker_up") == {"0": 1.0, "1": 1.0}
        # the collectors read at scrape time too, not only the registry's counters
        written = workers.per_worker("bastion_recorder_written_total")
        assert set(written) == {"0", "1"} and all(v > 0 for v in written.values()), written


@settings(max_examples=40, deadline=None)
@given(
    counts=st.dictionaries(
        st.integers(0, 7),
        st.one_of(st.none(), st.lists(st.integers(0, 10**6), min_size=1, max_size=4)),
        min_size=1,
        max_size=8,
    )
)
def test_merge_keeps_every_workers_value_under_its_own_label(
    counts: dict[int, list[int] | None],
) -> None:
    """The merged scrape holds each worker's samples, unchanged, and says who did not answer."""
    from prometheus_client.parser import text_string_to_metric_families

    texts: dict[int, str | None] = {}
    for wid, values in counts.items():
        if values is None:
            texts[wid] = None
            continue
        lines = ["# HELP bastion_c_total c", "# TYPE bastion_c_total counter"]
        lines += [f'bastion_c_total{{n="{i}"}} {v}' for i, v in enumerate(values)]
        texts[wid] = "\n".join(lines) + "\n"
    got: dict[tuple[str, str, str], float] = {}
    for fam in text_string_to_metric_families(merge(texts).decode()):
        for s in fam.samples:
            got[(s.name, s.labels.get("worker", ""), s.labels.get("n", ""))] = s.value
    for wid, values in counts.items():
        assert got[("bastion_worker_up", str(wid), "")] == (0.0 if values is None else 1.0)
        for i, v in enumerate(values or []):
            assert got[("bastion_c_total", str(wid), str(i))] == v
    answered = sum(len(v) for v in counts.values() if v is not None)
    assert sum(1 for k in got if k[0] == "bastion_c_total") == answered

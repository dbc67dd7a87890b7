"""Attack (issue #16): Redis stalls while a capped call reserves its budget, on 2 workers.

The admit script times out in the gateway (the caller gets a 503, nothing is sent upstream),
but it is still in Redis's socket buffer and runs when Redis resumes: a hold for a call that
never ran. Before the fix that hold stayed on the cap for its whole lease (the call's deadline +
lease grace, ~3 minutes), so a cap with room for N calls served N - 1. The gateway now gives the
hold back (by its reservation id, through the settle journal) once Redis answers again.

A private redis-server (SIGSTOP, never the shared one) and ``bastion serve --workers 2``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
import redis
from tests.conftest import sim_models
from tests.server._attack16_support import private_redis as _private_redis
from tests.server._attack16_support import workers_on

PER_CALL_USD = 0.01  # 10 output tokens at $1000 per million, input free
CAP_CALLS = 2000  # more than a burst serves


@pytest.fixture
def private_redis() -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    with _private_redis() as server:
        yield server


@pytest.fixture
def gateway(
    tmp_path: Path, private_redis: tuple[int, subprocess.Popen[bytes]]
) -> Iterator[tuple[str, str]]:
    sections = {
        "models": sim_models(),
        "cost": {"prices": {"sim-cap": {"input": 0.0, "output": 1000.0}}},
        "features": {"capped": {"daily_budget_usd": PER_CALL_USD * CAP_CALLS}},
    }
    with workers_on(tmp_path, private_redis[0], **sections) as gw:
        yield gw


def _post(client: httpx.Client, key: str, feature: str = "capped") -> httpx.Response:
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01", "x-bastion-feature": feature}
    model = "sim-cap" if feature == "capped" else "claude-haiku-5-5"
    body = {"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    return client.post("/v1/messages", json=body, headers=headers)


def _send(url: str, key: str, feature: str = "capped") -> httpx.Response:
    with httpx.Client(base_url=url, timeout=40) as client:  # its own connection
        return _post(client, key, feature)


def _holds(redis_port: int) -> int:
    with redis.Redis(port=redis_port, socket_timeout=2) as r:
        return sum(
            sum(1 for f in r.hkeys(k) if f.startswith(b"r:"))
            for k in r.scan_iter(match="a16:*:cap:*")
            if r.type(k) == b"hash"
        )


def _burst(url: str, key: str, seconds: float) -> list[int]:
    """Capped calls from 24 threads, each on its own connection, for ``seconds``."""
    codes: list[int] = []
    end = time.monotonic() + seconds

    def loop() -> None:
        while time.monotonic() < end:
            codes.append(_send(url, key).status_code)

    threads = [threading.Thread(target=loop) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return codes


def test_holds_reserved_while_redis_stalls_are_given_back_and_settled_spend_is_exact(
    gateway: tuple[str, str], private_redis: tuple[int, subprocess.Popen[bytes]]
) -> None:
    url, key = gateway
    redis_port, redis_proc = private_redis
    codes: list[int] = []
    for _ in range(2):
        burst = threading.Thread(target=lambda: codes.extend(_burst(url, key, 5.0)))
        burst.start()
        time.sleep(1.0)  # calls in every phase, admits among them, when Redis stops
        os.kill(redis_proc.pid, signal.SIGSTOP)
        time.sleep(3.0)  # past the store's 2 s timeout: calls in flight fail closed
        os.kill(redis_proc.pid, signal.SIGCONT)
        burst.join(60)
    assert set(codes) == {200, 503}, sorted(set(codes))
    served = codes.count(200)
    end = time.monotonic() + 10
    while _holds(redis_port) and time.monotonic() < end:
        time.sleep(0.1)
    assert _holds(redis_port) == 0  # every hold was settled or given back

    with redis.Redis(port=redis_port, socket_timeout=2) as r:
        (cap,) = [k for k in r.scan_iter(match="a16:*:cap:*feature:capped") if r.type(k) == b"hash"]
        settled, reserved = (float(v or 0) for v in r.hmget(cap, "settled", "reserved"))
    assert reserved == pytest.approx(0.0, abs=1e-9)
    assert settled == pytest.approx(served * PER_CALL_USD)  # the served calls, each once

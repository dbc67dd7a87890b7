"""Guarantees that must hold across replicas: two gateway processes sharing Redis."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx2 as httpx
import pytest
import redis
from tests.conftest import RunningGateway, start_gateway, stop, write_config

MSG = [{"role": "user", "content": "hello"}]


@pytest.fixture
def two_replicas(tmp_path: Path) -> Iterator[tuple[RunningGateway, RunningGateway]]:
    prefix = "bastiontest-" + uuid.uuid4().hex[:10]
    cfg = write_config(
        tmp_path,
        state={"url": "redis://127.0.0.1:6379/0", "prefix": prefix},
        models={
            "flappy": {
                "deployments": [
                    {
                        "provider": "sim",
                        "model": "primary",
                        "headers": {"x-sim-fault": "flap:2", "x-sim-scenario": f"flap-{prefix}"},
                    },
                    {"provider": "sim", "model": "fallback"},
                ]
            },
            "sim-*": {"deployments": [{"provider": "sim", "model": "{model}"}]},
        },
        reliability={
            "retry": {"attempts_per_deployment": 1, "backoff_base": 0.01, "backoff_max": 0.02},
            "breaker": {"failure_threshold": 2, "cooldown_seconds": 1.0, "min_calls": 50},
        },
    )
    a = start_gateway(cfg)
    b = start_gateway(cfg)
    try:
        yield a, b
    finally:
        stop(a.proc)
        stop(b.proc)
        r = redis.Redis(host="127.0.0.1", port=6379)
        for k in r.scan_iter(match=f"{prefix}*", count=1000):
            r.delete(k)
        r.close()


def _client(g: RunningGateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=g.url, api_key=g.key, max_retries=0, timeout=20)


def test_kill_switch_flipped_on_one_replica_is_obeyed_by_the_other_within_a_second(
    two_replicas: tuple[RunningGateway, RunningGateway],
) -> None:
    a, b = two_replicas
    cb = _client(b)
    assert cb.messages.create(model="sim-x", max_tokens=20, messages=MSG).content  # type: ignore[arg-type]
    r = httpx.post(
        a.url + "/admin/kill", json={"on": True, "who": "oncall"}, headers={"x-api-key": a.key}
    )
    assert r.status_code == 200
    flipped = time.monotonic()
    try:
        refused_after = None
        while time.monotonic() - flipped < 3:
            try:
                cb.messages.create(model="sim-x", max_tokens=20, messages=MSG)  # type: ignore[arg-type]
            except anthropic.APIStatusError as exc:
                assert exc.status_code == 503
                assert exc.body["error"]["type"] == "ai_unavailable"  # type: ignore[index]
                refused_after = time.monotonic() - flipped
                break
            time.sleep(0.05)
        assert refused_after is not None and refused_after < 1.0, refused_after
        # the CLI sees the same switch, with who flipped it
        status = b.cli("kill", "status").stdout
        assert "global: on (by oncall" in status
    finally:
        b.cli("kill", "off")
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            cb.messages.create(model="sim-x", max_tokens=20, messages=MSG)  # type: ignore[arg-type]
            break
        except anthropic.APIStatusError:
            time.sleep(0.05)
    else:
        pytest.fail("replica b did not recover after the switch went off")


def test_idempotency_key_runs_once_across_replicas(
    two_replicas: tuple[RunningGateway, RunningGateway],
) -> None:
    a, b = two_replicas
    key = "idem-" + uuid.uuid4().hex
    body = {"model": "sim-pay", "max_tokens": 20, "messages": [{"role": "user", "content": "pay"}]}
    results: list[httpx.Response] = []

    def send(g: RunningGateway) -> None:
        results.append(
            httpx.post(
                g.url + "/v1/messages",
                json=body,
                timeout=30,
                headers={"x-api-key": a.key, "idempotency-key": key},
            )
        )

    threads = [threading.Thread(target=send, args=(g,)) for g in (a, b, a, b, a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.status_code == 200 for r in results), [r.text for r in results]
    assert len({r.json()["id"] for r in results}) == 1
    assert sum(1 for r in results if not r.headers.get("x-bastion-idempotent-replay")) == 1


def test_flapping_primary_opens_the_shared_breaker_and_traffic_returns_after(
    two_replicas: tuple[RunningGateway, RunningGateway],
) -> None:
    a, b = two_replicas
    clients = [_client(a), _client(b)]
    served: list[tuple[float, str, int]] = []
    t0 = time.monotonic()
    i = 0
    while time.monotonic() - t0 < 6 and i < 200:
        raw = clients[i % 2].messages.with_raw_response.create(
            model="flappy", max_tokens=20, messages=MSG
        )  # type: ignore[arg-type]
        served.append(
            (
                time.monotonic() - t0,
                raw.headers["x-bastion-deployment"],
                int(raw.headers["x-bastion-attempts"]),
            )
        )
        i += 1
        time.sleep(0.05)
    # every call answered, though the primary failed for its first 2 s
    assert len(served) > 20
    during = [s for s in served if s[0] < 1.8]
    assert all(dep.startswith("sim/fallback") for _, dep, _ in during)
    # once open (shared by both replicas), the primary is skipped at once: one attempt only
    assert any(att == 1 and dep.startswith("sim/fallback") for _, dep, att in during)
    # after it recovers (2 s) plus the cooldown, traffic goes back to the primary
    late = [s for s in served if s[0] > 4.5]
    assert late and all(dep.startswith("sim/primary") for _, dep, _ in late)

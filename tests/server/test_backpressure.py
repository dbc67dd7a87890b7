"""Backpressure: clients that stop reading cannot hold a provider's connections.

A real ``bastion serve`` in front of a separate ``bastion sim`` process (a real HTTP
upstream with a small connection pool). Raw sockets send streaming requests for a long,
fast answer and never read: their writes stall, and without a bound each would hold an
upstream connection for as long as it stayed silent. The per-key stream limit keeps them
from taking the whole pool (an ordinary call still succeeds at once), and the call's
deadline bounds every write (their upstream connections are released by then).
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator

import httpx2 as httpx
import psutil
import pytest
from tests.conftest import (
    BIN,
    RunningGateway,
    free_port,
    start_gateway,
    stop,
    wait_port,
    write_config,
)

DEADLINE = 6.0  # wide enough that a loaded 2-core CI box serves the ordinary call well inside DEADLINE / 2
POOL = 4
PER_KEY = 2


@pytest.fixture(scope="module")
def sim_port() -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "bastion"), "sim", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, proc)
        yield port
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def gateway(sim_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    tmp = tmp_path_factory.mktemp("backpressure")
    up = f"http://127.0.0.1:{sim_port}"

    def alias(tokens: int) -> dict[str, object]:
        return {
            "deployments": [
                {
                    "provider": "up",
                    "model": "claude-sonnet-5",
                    "headers": {"x-sim-reply-tokens": str(tokens), "x-sim-chunk-ms": "0"},
                }
            ]
        }

    cfg = write_config(
        tmp,
        providers={"up": {"kind": "anthropic", "base_url": up, "max_connections": POOL}},
        models={"long": alias(60_000), "short": alias(5)},
        features={"default": {"deadline": DEADLINE, "max_tokens_limit": 1_000_000}},
        server={"max_concurrent_streams_per_key": PER_KEY, "max_concurrent_streams_per_user": 1},
        reliability={"retry": {"attempts_per_deployment": 1}},
    )
    gw = start_gateway(cfg)
    yield gw
    stop(gw.proc)


def _upstream_conns(gw: RunningGateway, sim_port: int) -> set[int]:
    """Local ports of the gateway's open connections to the simulator."""
    return {
        c.laddr.port
        for c in psutil.Process(gw.proc.pid).net_connections(kind="tcp")
        if c.raddr and c.raddr.port == sim_port and c.status == psutil.CONN_ESTABLISHED
    }


def _client_conns(gw: RunningGateway, ports: set[int]) -> set[int]:
    return {
        c.raddr.port
        for c in psutil.Process(gw.proc.pid).net_connections(kind="tcp")
        if c.raddr and c.raddr.port in ports and c.status == psutil.CONN_ESTABLISHED
    }


def _hostile(
    gw: RunningGateway, n: int, headers: dict[str, str] | None = None
) -> list[socket.socket]:
    """Sockets that ask for a long stream and never read a byte of it."""
    body = json.dumps(
        {
            "model": "long",
            "max_tokens": 900_000,
            "stream": True,
            "messages": [{"role": "user", "content": "talk"}],
        }
    ).encode()
    port = int(gw.url.rsplit(":", 1)[1])
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", port))
        s.sendall(
            (
                f"POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: {gw.key}\r\n"
                f"anthropic-version: 2023-06-01\r\ncontent-type: application/json\r\n{extra}"
                f"content-length: {len(body)}\r\n\r\n"
            ).encode()
            + body
        )
        socks.append(s)
    return socks


def _wait_for(pred: object, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():  # type: ignore[operator]
            return
        time.sleep(0.05)


def test_clients_that_never_read_are_limited_cut_by_the_deadline_and_release_upstream(
    gateway: RunningGateway, sim_port: int
) -> None:
    gw = gateway
    started = time.monotonic()
    socks = _hostile(gw, 5)
    try:
        _wait_for(lambda: len(_upstream_conns(gw, sim_port)) >= PER_KEY, 3.0)
        held = _upstream_conns(gw, sim_port)
        assert len(held) == PER_KEY, held  # the per-key limit refused the rest (429)
        hostile_ports = {s.getsockname()[1] for s in socks}
        time.sleep(0.5)  # let the simulator finish writing out its long answers (CPU-bound)

        # an ordinary call on the same key is served at once: the pool is not exhausted
        t0 = time.monotonic()
        r = httpx.post(
            gw.url + "/v1/messages",
            headers={"x-api-key": gw.key, "anthropic-version": "2023-06-01"},
            json={
                "model": "short",
                "max_tokens": 20,
                "messages": [{"role": "user", "content": "hi"}],
            },
            timeout=DEADLINE + 5,
        )
        assert r.status_code == 200, r.text
        assert time.monotonic() - t0 < DEADLINE / 2  # a held pool would wait out the deadline

        # a third stream on the key is refused in the caller's format
        r = httpx.post(
            gw.url + "/v1/messages",
            headers={"x-api-key": gw.key, "anthropic-version": "2023-06-01"},
            json={
                "model": "short",
                "max_tokens": 20,
                "stream": True,
                "messages": [{"role": "user", "content": "hi"}],
            },
            timeout=5,
        )
        assert r.status_code == 429
        assert r.json()["error"]["type"] == "rate_limit_error"
        assert "concurrent streams" in r.json()["error"]["message"]

        # by the deadline (plus a little), the stalled clients are cut and upstream released
        _wait_for(
            lambda: (
                not (_upstream_conns(gw, sim_port) & held) and not _client_conns(gw, hostile_ports)
            ),
            DEADLINE + 4.0,
        )
        released = time.monotonic() - started
        assert not (_upstream_conns(gw, sim_port) & held), "upstream still held"
        assert not _client_conns(gw, hostile_ports), "stalled clients still connected"
        assert released < DEADLINE + 3.0, released
    finally:
        for s in socks:
            s.close()
    assert gw.proc.poll() is None

    # the slots came back: the key can stream again
    with httpx.stream(
        "POST",
        gw.url + "/v1/messages",
        headers={"x-api-key": gw.key, "anthropic-version": "2023-06-01"},
        json={
            "model": "short",
            "max_tokens": 20,
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
        },
        timeout=10,
    ) as resp:
        assert resp.status_code == 200
        assert b"message_stop" in resp.read()


def test_one_user_cannot_hold_the_streams_of_their_whole_key(gateway: RunningGateway) -> None:
    socks = _hostile(gateway, 1, {"x-bastion-user": "mallory"})
    try:
        time.sleep(0.5)
        r = httpx.post(
            gateway.url + "/v1/messages",
            headers={
                "x-api-key": gateway.key,
                "anthropic-version": "2023-06-01",
                "x-bastion-user": "mallory",
            },
            json={
                "model": "short",
                "max_tokens": 20,
                "stream": True,
                "messages": [{"role": "user", "content": "hi"}],
            },
            timeout=5,
        )
        assert r.status_code == 429 and "this user" in r.json()["error"]["message"]
        with httpx.stream(
            "POST",
            gateway.url + "/v1/messages",
            headers={
                "x-api-key": gateway.key,
                "anthropic-version": "2023-06-01",
                "x-bastion-user": "alice",
            },
            json={
                "model": "short",
                "max_tokens": 20,
                "stream": True,
                "messages": [{"role": "user", "content": "hi"}],
            },
            timeout=5,
        ) as resp:
            assert resp.status_code == 200
            resp.read()
    finally:
        for s in socks:
            s.close()

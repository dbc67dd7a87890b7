"""The supervisor's ping count (``worker_ping.WorkerPing``) against a real Unix socket.

Whatever a worker does with each ping (answers it, leaves it unanswered past its timeout,
closes it without an answer), the misses are exactly the pings in a row since its last
answer, and an answer, even the first after many misses, clears them. A worker that closed its
sockets (refused: draining or exiting) is not counted as missing pings: its exit is the
supervisor's to see, and killing it would cut its drain. Time is passed in, so each step is
exact; the sockets are real.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.server.worker_ping import WorkerPing

INTERVAL, TIMEOUT = 1.0, 0.5


@pytest.fixture
def listener(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[socket.socket, Path]]:
    path = tmp_path_factory.mktemp("ping") / "worker-0.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(64)
    sock.settimeout(5)
    try:
        yield sock, path
    finally:
        sock.close()


def _wait_readable(ping: WorkerPing, within: float) -> set[int]:
    fds = ping.fds()
    return set(select.select(fds, [], [], within)[0]) if fds else set()


# one listener for every example: each accepts exactly the pings it sent
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=st.lists(st.sampled_from(["answer", "silent", "close"]), min_size=1, max_size=12))
def test_misses_are_the_pings_in_a_row_since_the_last_answer(
    listener: tuple[socket.socket, Path], steps: list[str]
) -> None:
    server, path = listener
    ping = WorkerPing(path, interval=INTERVAL, timeout=TIMEOUT, now=0.0)
    held: list[socket.socket] = []
    expected = 0
    silent_before = False
    try:
        for i, what in enumerate(steps, start=1):
            now = float(i)
            ping.tick(now, set())  # the previous ping times out (if unanswered), this one goes
            if silent_before:
                expected += 1
            assert ping.misses == expected
            conn, _ = server.accept()
            assert conn.recv(1024).startswith(b"GET /healthz HTTP/1.1")
            if what == "answer":
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                conn.close()
                expected = 0
            elif what == "close":
                conn.close()
                expected += 1
            else:
                held.append(conn)
            ready = _wait_readable(ping, 2.0 if what != "silent" else 0.0)
            ping.tick(now + TIMEOUT / 2, ready)  # within the timeout: nothing expires
            assert ping.misses == expected, (steps[:i], ping.misses, expected)
            silent_before = what == "silent"
    finally:
        ping.close()
        for c in held:
            c.close()


def test_a_worker_that_closed_its_socket_is_not_counted_missing(tmp_path: Path) -> None:
    path = tmp_path / "worker-0.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))  # bound, never listening: every connect is refused
    try:
        ping = WorkerPing(path, interval=INTERVAL, timeout=TIMEOUT, now=0.0)
        for i in range(1, 10):
            ping.tick(float(i), set())
        assert ping.misses == 0 and ping.fds() == []
    finally:
        sock.close()


def test_a_full_backlog_counts_as_missed(tmp_path: Path) -> None:
    """A worker that accepts nothing (stopped): once its backlog is full, each ping is a miss
    at once, on top of the ones that timed out waiting in the backlog."""
    path = tmp_path / "worker-0.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(1)
    try:
        ping = WorkerPing(path, interval=INTERVAL, timeout=100.0, now=0.0)  # none times out
        for i in range(1, 8):
            ping.tick(float(i), set())
        assert ping.misses >= 4  # the backlog holds one or two; the rest are refused as full
        ping.close()
    finally:
        sock.close()

"""Is a worker's event loop still answering? The supervisor's ping over the private socket.

A worker that is stopped (SIGSTOP) or wedged (its event loop blocked) keeps its listening
socket open, so the kernel keeps handing it new connections, which hang: its process is alive,
so the supervisor's exit check never sees it. The supervisor therefore pings each ready worker
every ``interval`` seconds with ``GET /healthz`` over the worker's private Unix socket
(``worker_metrics.socket_path``), which the same uvicorn server and event loop answer as the
public port. A ping not answered within ``timeout`` seconds is a miss; a worker that misses
``misses`` pings in a row is unresponsive (the supervisor kills and restarts it). Any answer
resets the count, a late one too as long as it comes within its ping's timeout, so a worker
whose loop is merely slow (CPU-heavy on a loaded box) keeps passing: with the defaults (1 s,
2 s, 5) it must answer nothing for about 6 s in a row. A refused ping (the worker closed its
sockets: draining after a SIGTERM of its own, or exiting) is no miss: no new connection
reaches such a worker, its exit is the supervisor's to see, and a kill would cut its drain.

Non-blocking throughout: the supervisor has no event loop, and a stopped worker must never
hold up the supervision of the others. Several pings may be outstanding at once (each is its
own connection, closed once answered or timed out).
"""

from __future__ import annotations

import contextlib
import errno
import socket
from dataclasses import dataclass
from pathlib import Path

__all__ = ["WorkerPing"]

_CLOSED = (errno.ECONNREFUSED, errno.ENOENT)
_REQUEST = b"GET /healthz HTTP/1.1\r\nhost: worker\r\nconnection: close\r\n\r\n"


@dataclass(slots=True)
class _Pending:
    sock: socket.socket
    sent: float


class WorkerPing:
    """The liveness of one worker: its outstanding pings and its consecutive misses."""

    __slots__ = ("_answered", "_last_sent", "_pending", "interval", "misses", "path", "timeout")

    def __init__(self, path: str | Path, *, interval: float, timeout: float, now: float) -> None:
        self.path = str(path)
        self.interval = interval
        self.timeout = timeout
        self.misses = 0  # pings missed in a row
        self._pending: dict[int, _Pending] = {}  # by file descriptor
        self._last_sent = now  # the first ping goes out one interval after the worker is ready
        self._answered = now  # when it last answered (or was ready)

    def fds(self) -> list[int]:
        """The outstanding pings' sockets, to wait on for their answers."""
        return list(self._pending)

    def tick(self, now: float, readable: set[int]) -> None:
        """Read the answers in ``readable``, count the pings that timed out, send one if due."""
        for fd in [fd for fd in self._pending if fd in readable]:
            self._read(fd, now)
        for fd, p in list(self._pending.items()):
            if now - p.sent >= self.timeout:
                self._drop(fd)
                self.misses += 1
        if now - self._last_sent >= self.interval:
            self._last_sent = now
            self._send(now)

    def silent_for(self, now: float) -> float:
        """How long since it last answered a ping (or became ready)."""
        return now - self._answered

    def close(self) -> None:
        for fd in list(self._pending):
            self._drop(fd)

    def _send(self, now: float) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(self.path)
            sock.send(_REQUEST)  # a few bytes into an empty buffer: never a partial send
        except OSError as exc:
            sock.close()
            if exc.errno not in _CLOSED:
                self.misses += 1  # its backlog is full: nothing accepted the earlier pings
            # else it closed its sockets (draining after a SIGTERM of its own, or exiting):
            # no new connection reaches it, and its exit is the supervisor's to see
            return
        self._pending[sock.fileno()] = _Pending(sock, now)

    def _read(self, fd: int, now: float) -> None:
        p = self._pending[fd]
        try:
            got = p.sock.recv(16)
        except BlockingIOError:
            return  # a spurious wake-up: still waiting
        except OSError:
            got = b""
        self._drop(fd)
        if got.startswith(b"HTTP/"):  # any status: the event loop answered
            self.misses = 0
            self._answered = now
        else:  # closed without an answer
            self.misses += 1

    def _drop(self, fd: int) -> None:
        p = self._pending.pop(fd)
        with contextlib.suppress(OSError):
            p.sock.close()

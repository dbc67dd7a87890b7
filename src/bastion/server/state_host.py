"""The supervisor's handle on the state host, for ``bastion serve --workers N`` on embedded state.

On the embedded state (memory://, sqlite://) the counters live in one process, so the
supervisor starts one for them, the state host (``python -m bastion.state.host``), before any
worker, waits until it answers a ping on its socket in the runtime directory, and gives each
worker that socket as its state (``state/remote.py``). It restarts the host if it dies (under
the workers' restart budget) and stops it last, once every worker has exited, so the host's
close flushes every settle the workers made. On Redis there is no host: the workers share Redis.

A host that is alive but stopped (SIGSTOP) or wedged would hold every call for the workers'
timeout and fail it: the supervisor pings it as it pings the workers (``HostPing``, the same
``server.worker_ping_*`` settings, a ping frame instead of ``GET /healthz``), and kills and
restarts one that misses ``worker_ping_misses`` pings in a row.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ..config import Config
from ..state._wire import HEADER, frame
from ..state.remote import ask_sync, ping_sync, url_for
from .worker_ping import WorkerPing, _Pending

__all__ = ["HostFailed", "HostPing", "StateHostProcess", "embedded"]

_START_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 15.0
_POLL_S = 0.05
# after a restart, new reservations wait this long for the workers to give back their holds
# (each reconnects within ~0.25 s of the new socket; state/remote.py)
_RESTORE_GRACE_S = 2.0


_PING = frame([0, "ping", []])


class HostPing(WorkerPing):
    """``WorkerPing``'s non-blocking liveness count, with the state host's ping frame."""

    __slots__ = ()

    def _send(self, now: float) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(self.path)
            sock.send(_PING)  # a few bytes into an empty buffer: never a partial send
        except OSError:
            sock.close()
            self.misses += 1  # dead (its exit is seen first) or its backlog is full
            return
        self._pending[sock.fileno()] = _Pending(sock, now)

    def _read(self, fd: int, now: float) -> None:
        p = self._pending[fd]
        try:
            got = p.sock.recv(HEADER.size)
        except BlockingIOError:
            return
        except OSError:
            got = b""
        self._drop(fd)
        if len(got) > 0:  # an answer's first bytes: its event loop runs
            self.misses = 0
            self._answered = now
        else:
            self.misses += 1


class HostFailed(Exception):
    """The state host did not start, or exited during its start."""


def embedded(cfg: Config) -> bool:
    """Whether the state lives in process (so N workers need a state host)."""
    return cfg.state.url.partition("://")[0].lower() in ("memory", "sqlite")


class StateHostProcess:
    """Start, watch and stop the one state host process."""

    def __init__(self, cfg: Config, runtime_dir: str) -> None:
        self.url = cfg.state.url
        self.prefix = cfg.state.prefix
        self.socket = str(Path(runtime_dir) / "state.sock")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def state_url(self) -> str:
        """The internal URL the workers open (``RemoteCounterStore``)."""
        return url_for(self.socket)

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def start(
        self, *, restart: bool = False, workers: Sequence[int] = (), hold_seconds: float = 0.0
    ) -> None:
        """Start the host and wait until it answers a ping; ``HostFailed`` if it does not.

        A ``restart`` holds new reservations back: the dead host's are still running in the
        ``workers`` (their pids), which give them back to the new one (``state/remote.py``).
        It ends once each of them has (it says "ready") or died (``drop_worker``), at most
        ``hold_seconds`` (at least ``_RESTORE_GRACE_S``). A worker stopped (SIGSTOP) holds it
        until it runs again or the pings kill it, so the caller makes ``hold_seconds`` outlast
        the pings' window, and waits for its end (``holding``) while it goes on pinging the
        workers (``Supervisor._await_restored``), so the restart is logged when the host admits.
        """
        argv = [
            sys.executable, "-m", "bastion.state.host", "--url", self.url, "--socket",
            self.socket, "--prefix", self.prefix, "--parent", str(os.getpid()),
        ]  # fmt: skip
        if restart and workers:  # (no worker alive: nothing to give back)
            argv += [
                "--hold-new-seconds", str(max(hold_seconds, _RESTORE_GRACE_S)),
                "--workers", str(len(workers)),
                "--worker-pids", ",".join(str(p) for p in workers),
            ]  # fmt: skip
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket)  # a dead predecessor's: its ping must not pass for ours
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not ping_sync(self.socket, 1.0):
            code = self.proc.poll()
            if code is not None:
                raise HostFailed(f"the state host exited with {code} during start-up")
            if time.monotonic() > deadline:
                self.kill()
                raise HostFailed(f"the state host did not answer within {_START_TIMEOUT_S:g}s")
            time.sleep(_POLL_S)

    def holding(self) -> bool:
        """Whether a restarted host still holds new reservations back (False once it died)."""
        if self.proc is None or self.proc.poll() is not None:
            return False
        return ask_sync(self.socket, "holding", 1.0)[1] is True

    def running(self, pid: int) -> None:
        """Worker ``pid`` runs but has not come back to a restarted host: it holds nothing."""
        if self.proc is not None and self.proc.poll() is None:
            ask_sync(self.socket, "running", 1.0, pid)

    def drop_worker(self, pid: int) -> None:
        """Worker ``pid`` died: the host releases its reservations now, not at their lease."""
        if self.proc is not None and self.proc.poll() is None:
            ask_sync(self.socket, "drop_worker", 2.0, pid)  # not answered: the lease ends them

    def exited(self) -> int | None:
        """Its exit code if it has exited (None while it runs)."""
        return None if self.proc is None else self.proc.poll()

    def stop(self) -> int | None:
        """SIGTERM (it closes the store: the snapshot is flushed) and wait; kill past a bound."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.returncode

    def kill(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait()

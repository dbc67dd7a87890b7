"""``bastion serve --workers N``: a supervisor and N gateway worker processes on one port.

Every counter (caps, rate limits, breakers, the kill switch, idempotency) lives in one place
that all workers share, so what holds across replicas holds across workers: in Redis, or, on
the embedded state (memory://, sqlite://), in the state host, one process the supervisor starts
first that owns the embedded store and serves it to the workers over a private Unix socket
(``state_host.py``, ``state/host.py``, ``state/remote.py``). The supervisor restarts the host if
it dies (under the workers' restart budget; meanwhile the workers' guards fail closed) and
stops it last, once every worker has exited, so its snapshot holds every settle.

The supervisor, a plain synchronous process with no event loop:

- binds the port once. On Linux by default (``reuse_port``) it only holds the port and each
  worker binds its own ``SO_REUSEPORT`` socket: the kernel spreads new connections by a hash
  of their addresses, evenly (``default_reuse_port``). Otherwise it listens and every worker
  inherits the one socket (one accept queue: a worker that dies loses none of the queued
  connections, but a burst of new ones goes mostly to whichever worker wakes first).
- does what must happen once before any worker starts: the store's migrations and the first
  admin key (N workers would race to make N first keys), and prints the banner.
- starts each worker (``python -m bastion.server.worker``) with the final config as JSON on
  stdin and waits until every one accepts calls; a worker that fails to start fails the start.
- on SIGTERM or SIGINT forwards one SIGTERM to every worker, each of which drains as a single
  server does (``DrainingServer``: calls in flight finish, records are flushed), and exits 0
  once all exited 0. A second signal is forwarded as SIGINT (workers exit at once).
- restarts a worker that died without being asked, at most ``max_restarts`` times in
  ``restart_window`` seconds; past that it stops the rest and exits 1.
- pings every ready worker's event loop over its private socket (``worker_ping.py``,
  ``server.worker_ping_*``): a worker that is stopped (SIGSTOP) or wedged keeps its listening
  socket, so the kernel keeps handing it new connections, which hang. One that misses
  ``worker_ping_misses`` pings in a row is killed (SIGKILL) and restarted like one that died,
  under the same restart budget.

Each worker runs in its own session: a terminal's Ctrl-C reaches only the supervisor (which
forwards one drain), and with the kernel's autogroup scheduling (``sched_autogroup_enabled``,
on by default) CPU is shared between sessions, so N workers in the supervisor's session would
share one session's CPU on a busy machine. Each asks the kernel for a SIGTERM should the
supervisor die.

Per-process files need no per-worker paths: the record journal and the settle journal are
per-process files under a ``flock`` (a dead worker's are adopted by a live one), and the spill
and quarantine files are shared under a ``flock``, exactly as between replicas sharing a
directory.

``/metrics`` answers for every worker, each series labelled with its ``worker``: the worker that
takes the scrape gathers its siblings' over private Unix sockets in the supervisor's 0700
runtime directory (``worker_metrics.py``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

from ..config import Config
from ..store import open_store
from .serve import banner_text, first_key, pool_warnings
from .state_host import HostFailed, HostPing, StateHostProcess, embedded
from .worker_metrics import socket_path
from .worker_ping import WorkerPing

log = logging.getLogger("bastion.server.workers")

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_POLL_S = 0.1
_START_TIMEOUT_S = 120.0  # one worker's start-up (imports, detector weights) on a busy machine
_EXIT_MARGIN_S = 5.0  # past a worker's own drain + flush bound: then it is killed
_BACKLOG = 2048  # uvicorn's default
_HOLD_MARGIN_S = 2.0  # a restarted host's hold outlasts the pings' window by this much
_RESTORE_GRACE_S = 2.0  # ... and a worker that runs is waited for this long (state_host.py)


class WorkersFailed(Exception):
    """The workers could not start, or kept dying: the supervisor exits non-zero."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass(slots=True)
class _Worker:
    wid: int
    proc: subprocess.Popen[bytes]
    ready_fd: int  # the read end of its ready pipe, -1 once read or closed
    ready: bool = False
    ping: WorkerPing | None = None  # once ready (and pings are on)


@dataclass(slots=True)
class _Signals:
    received: list[int] = field(default_factory=list)

    def handler(self, sig: int, frame: FrameType | None) -> None:
        self.received.append(sig)


def listen(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """The port, bound once: listening (shared by the workers) or only held (``reuse_port``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if not reuse_port:
        sock = socket.create_server((host, port), family=family, backlog=_BACKLOG)
        sock.set_inheritable(True)
        return sock
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))  # bound, not listening: it holds the port and gets no connection
    return sock


def default_reuse_port() -> bool:
    """SO_REUSEPORT where it balances: Linux hashes new connections across the workers' sockets.

    With one shared socket, a burst of new connections (a client's keep-alive pool opening)
    goes mostly to whichever worker's loop wakes first: 50 connections opened at once split
    44/6 and 36/14, against 23/27 and 31/19 with SO_REUSEPORT (bench/RESULTS.md). Elsewhere
    (macOS, BSD) the option does not balance, so the socket is shared.
    """
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


async def _bootstrap(cfg: Config) -> tuple[str, str]:
    """Migrations and the first admin key, once, before any worker opens the store."""
    store = open_store(cfg.store.url)
    try:
        await store.migrate()
        return await first_key(store)
    finally:
        await store.close()


class RestartBudget:
    """At most ``limit`` restarts in any ``window`` seconds: a crash loop ends, a rare crash not."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._times: collections.deque[float] = collections.deque()

    def take(self, now: float) -> bool:
        """Whether a restart at ``now`` fits (and if so, count it)."""
        while self._times and now - self._times[0] >= self.window:
            self._times.popleft()
        if len(self._times) >= self.limit:
            return False
        self._times.append(now)
        return True


class Supervisor:
    """N workers on one port: start them, restart the ones that die, drain them on a signal."""

    def __init__(
        self,
        cfg: Config,
        *,
        host: str,
        port: int,
        workers: int,
        reuse_port: bool | None = None,
        max_restarts: int = 5,
        restart_window: float = 60.0,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.host = host
        self.port = port
        self.count = workers
        self.reuse_port = default_reuse_port() if reuse_port is None else reuse_port
        self._echo = echo if echo is not None else _stderr
        self._config_json = cfg.model_dump_json().encode()
        self._workers: dict[int, _Worker] = {}
        self._restarts = RestartBudget(max_restarts, restart_window)
        self._signals = _Signals()
        self._sock: socket.socket | None = None
        self._runtime_dir = ""
        self._host: StateHostProcess | None = None  # on embedded state only
        self._host_ping: HostPing | None = None

    def run(self) -> int:
        """Serve until a signal (0 when every worker drained cleanly) or a failure (non-zero)."""
        previous = {sig: signal.signal(sig, self._signals.handler) for sig in _SIGNALS}
        self._runtime_dir = tempfile.mkdtemp(prefix="bastion-workers-")  # 0700: private sockets
        try:
            self._sock = listen(self.host, self.port, reuse_port=self.reuse_port)
            host, port = self._sock.getsockname()[:2]
            self.host, self.port = host, port
            key, key_line = asyncio.run(_bootstrap(self.cfg))
            if embedded(self.cfg):
                self._host = StateHostProcess(self.cfg, self._runtime_dir)
                self._start_host()
            for wid in range(self.count):
                self._workers[wid] = self._spawn(wid)
            self._await_ready()
            if self._signals.received:
                return self._drain()
            url_host = f"[{host}]" if ":" in host else host
            for w in pool_warnings(self.cfg):
                self._echo(f"warning: {w}\n")
            sys.stdout.write(banner_text(self.cfg, f"http://{url_host}:{port}", key, key_line))
            sys.stdout.flush()
            self._echo(
                f"bastion: {self.count} workers on one port "
                f"({'SO_REUSEPORT' if self.reuse_port else 'one shared socket'}), pids "
                + ", ".join(str(w.proc.pid) for w in self._workers.values())
                + "\n"
            )
            if self._host is not None:
                self._echo(f"bastion: state host pid {self._host.pid} ({self.cfg.state.url})\n")
            return self._supervise()
        except WorkersFailed as exc:
            self._echo(f"error: {exc}\n")
            self._stop_all(signal.SIGTERM)
            return exc.code
        finally:
            if self._host_ping is not None:
                self._host_ping.close()
            if self._host is not None:  # after the workers (a drain stopped it already)
                self._host.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self._sock is not None:
                self._sock.close()
            shutil.rmtree(self._runtime_dir, ignore_errors=True)

    # -- workers ----------------------------------------------------------------------------

    def _spawn(self, wid: int) -> _Worker:
        assert self._sock is not None
        read_fd, write_fd = os.pipe()
        argv = [
            sys.executable,
            "-m",
            "bastion.server.worker",
            "--id",
            str(wid),
            "--ready-fd",
            str(write_fd),
            "--parent",
            str(os.getpid()),
            "--count",
            str(self.count),
            "--runtime-dir",
            self._runtime_dir,
        ]
        fds = [write_fd]
        if self._host is not None:
            argv += ["--state-socket", self._host.socket]
        if self.reuse_port:
            argv += ["--host", self.host, "--port", str(self.port)]
        else:
            argv += ["--fd", str(self._sock.fileno())]
            fds.append(self._sock.fileno())
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, pass_fds=fds, start_new_session=True, close_fds=True
            )
        finally:
            os.close(write_fd)
        assert proc.stdin is not None
        try:
            proc.stdin.write(self._config_json)
            proc.stdin.close()
        except OSError:  # it died at once: seen as an exit by the caller
            log.debug("worker %d closed its stdin before reading the config", wid)
        return _Worker(wid, proc, read_fd)

    def _await_ready(self) -> None:
        """Until every worker accepts calls; one exiting first fails the start with its code."""
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not all(w.ready for w in self._workers.values()):
            if self._signals.received:
                return
            for w in self._workers.values():
                code = w.proc.poll()
                if not w.ready and code is not None:
                    raise WorkersFailed(
                        f"worker {w.wid} (pid {w.proc.pid}) exited with {code} during start-up",
                        code=code if code > 0 else 1,
                    )
            if time.monotonic() > deadline:
                raise WorkersFailed(f"workers not ready after {_START_TIMEOUT_S:g}s")
            waiting = [w for w in self._workers.values() if not w.ready]
            readable, _, _ = select.select([w.ready_fd for w in waiting], [], [], _POLL_S)
            for w in waiting:
                if w.ready_fd in readable:
                    self._read_ready(w)

    @staticmethod
    def _read_ready(w: _Worker) -> None:
        try:
            got = os.read(w.ready_fd, 1)
        except OSError:
            got = b""
        os.close(w.ready_fd)
        w.ready_fd = -1
        w.ready = got == b"1"

    def _supervise(self) -> int:
        while not self._signals.received:
            readable = self._wait_pings(host=True)
            now = time.monotonic()
            self._watch_host(now, readable)
            self._watch_workers(now, readable)
        return self._drain()

    def _wait_pings(self, *, host: bool) -> set[int]:
        """One poll interval, or less when a ping's answer comes (its fd, among those returned)."""
        pinging = [fd for w in self._workers.values() if w.ping for fd in w.ping.fds()]
        if host and self._host_ping is not None:
            pinging += self._host_ping.fds()
        if not pinging:
            time.sleep(_POLL_S)
            return set()
        with contextlib.suppress(InterruptedError):
            return set(select.select(pinging, [], [], _POLL_S)[0])
        return set()

    def _watch_workers(self, now: float, readable: set[int]) -> None:
        """Note the workers that became ready; restart those that died or stopped answering."""
        srv = self.cfg.server
        for wid, w in list(self._workers.items()):
            if not w.ready and w.ready_fd >= 0:
                ready, _, _ = select.select([w.ready_fd], [], [], 0)
                if ready:
                    self._read_ready(w)
            if w.ready and w.ping is None and srv.worker_ping_misses > 0:
                w.ping = WorkerPing(
                    socket_path(self._runtime_dir, wid),
                    interval=srv.worker_ping_interval_seconds,
                    timeout=srv.worker_ping_timeout_seconds,
                    now=now,
                )
            code = w.proc.poll()
            if code is None and w.ping is not None:
                w.ping.tick(now, readable)
                if w.ping.misses >= srv.worker_ping_misses and not self._signals.received:
                    silent = w.ping.silent_for(now)
                    self._kill(w)
                    self._restart(
                        w,
                        f"answered none of its last {w.ping.misses} pings (silent "
                        f"{silent:.1f}s: stopped or wedged); killed",
                    )
                    continue
            if code is None or self._signals.received:
                continue
            self._restart(w, f"exited unexpectedly with {code}")

    def _await_restored(self, hold: float) -> None:
        """Until a restarted host admits again (every live worker gave its holds back or died),
        watching the workers meanwhile: one stopped for good is killed by its pings, which is
        what ends the hold for it (``drop_worker``)."""
        assert self._host is not None
        up = time.monotonic()  # the host listens
        end = up + hold + 5.0  # the host's own clock ends it before
        told: set[int] = set()
        while not self._signals.received and time.monotonic() < end and self._host.holding():
            readable = self._wait_pings(host=False)
            now = time.monotonic()
            self._watch_workers(now, readable)
            if now - up < _RESTORE_GRACE_S:
                continue
            # a worker whose loop answered a ping well after the host listened, yet is not
            # back, holds nothing (one that does reconnects within ~0.25 s): an idle worker,
            # with no connection to lose. A stopped one answers nothing: it stays awaited
            for w in self._workers.values():
                answered = None if w.ping is None else now - w.ping.silent_for(now)
                if answered is not None and answered >= up + 1.0 and w.proc.pid not in told:
                    told.add(w.proc.pid)
                    self._host.running(w.proc.pid)

    def _start_host(self, *, restart: bool = False) -> None:
        assert self._host is not None
        if self._host_ping is not None:
            self._host_ping.close()
            self._host_ping = None
        srv = self.cfg.server
        # a restarted host holds new reservations until every live worker gave its holds back
        # or died: one stopped (SIGSTOP) is killed by the pings within their window, so the
        # hold's clock outlasts it (without pings, a fixed grace)
        hold = 0.0
        if srv.worker_ping_misses > 0:
            hold = srv.worker_ping_interval_seconds * srv.worker_ping_misses
            hold += srv.worker_ping_timeout_seconds + _HOLD_MARGIN_S
        try:
            self._host.start(restart=restart, workers=self._live_pids(), hold_seconds=hold)
        except HostFailed as exc:
            raise WorkersFailed(str(exc)) from exc
        if restart:
            self._await_restored(hold)
        if srv.worker_ping_misses > 0:
            self._host_ping = HostPing(
                self._host.socket,
                interval=srv.worker_ping_interval_seconds,
                timeout=srv.worker_ping_timeout_seconds,
                now=time.monotonic(),
            )

    def _watch_host(self, now: float, readable: set[int]) -> None:
        """Restart a state host that died or stopped answering, within the restart budget."""
        host, ping = self._host, self._host_ping
        if host is None or self._signals.received:
            return
        code = host.exited()
        why = f"exited unexpectedly with {code}"
        if code is None and ping is not None:
            ping.tick(now, readable)
            if ping.misses < self.cfg.server.worker_ping_misses:
                return
            why = (
                f"answered none of its last {ping.misses} pings (silent "
                f"{ping.silent_for(now):.1f}s: stopped or wedged); killed"
            )
            host.kill()
        elif code is None:
            return
        old = host.pid
        if not self._restarts.take(time.monotonic()):
            raise WorkersFailed(
                f"the state host (pid {old}) {why}; {self._restarts.limit} restarts in "
                f"{self._restarts.window:g}s already, giving up"
            )
        self._start_host(restart=True)
        self._echo(f"bastion: the state host (pid {old}) {why}; restarted as pid {host.pid}\n")

    def _live_pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers.values() if w.proc.poll() is None]

    @staticmethod
    def _kill(w: _Worker) -> None:
        """SIGKILL (a stopped process acts on nothing else) and reap it."""
        with contextlib.suppress(ProcessLookupError):
            w.proc.kill()
        w.proc.wait()

    def _restart(self, w: _Worker, why: str) -> None:
        """Start worker ``w.wid`` anew, within the restart budget (past it: give up, exit 1)."""
        self._forget(w)
        if self._host is not None:  # w is dead: its calls will never settle their holds
            self._host.drop_worker(w.proc.pid)
        if not self._restarts.take(time.monotonic()):
            raise WorkersFailed(
                f"worker {w.wid} (pid {w.proc.pid}) {why}; {self._restarts.limit} restarts in "
                f"{self._restarts.window:g}s already, giving up"
            )
        self._workers[w.wid] = self._spawn(w.wid)
        self._echo(
            f"bastion: worker {w.wid} (pid {w.proc.pid}) {why}; "
            f"restarted as pid {self._workers[w.wid].proc.pid}\n"
        )

    def _drain(self) -> int:
        """Forward one SIGTERM (a drain) to every worker; a second signal makes them exit now."""
        first = self._signals.received[0]
        self._echo(
            f"bastion: {signal.Signals(first).name}: draining {len(self._workers)} workers "
            "(signal again to exit now)\n"
        )
        handled = len(self._signals.received)
        self._stop_all(signal.SIGTERM, wait=False)
        if self._sock is not None:  # new connections: refused once the workers close theirs too
            self._sock.close()
            self._sock = None
        bound = self.cfg.server.shutdown_drain_seconds + 15.0 + _EXIT_MARGIN_S
        deadline = time.monotonic() + bound
        while any(w.proc.poll() is None for w in self._workers.values()):
            if len(self._signals.received) > handled:
                self._stop_all(signal.SIGINT, wait=False)  # their second signal: exit now
                handled = len(self._signals.received)
            if time.monotonic() > deadline:
                self._echo("bastion: workers outlived their drain bound; killing them\n")
                self._stop_all(signal.SIGKILL)
                break
            time.sleep(_POLL_S / 2)
        codes = {w.wid: w.proc.wait() for w in self._workers.values()}
        # a worker still starting has no handler yet: our SIGTERM ends it, with nothing to drain
        stopped = {w.wid for w in self._workers.values() if not w.ready}
        for w in self._workers.values():
            self._forget(w)
        bad = {
            wid: c
            for wid, c in codes.items()
            if c != 0 and not (wid in stopped and c == -signal.SIGTERM)
        }
        if bad:
            self._echo(f"bastion: workers exited uncleanly: {bad}\n")
            return 1
        host = None if self._host is None else self._host.stop()  # last: it flushes the state
        if host not in (None, 0):
            self._echo(f"bastion: the state host exited with {host}\n")
            return 1
        return 0

    def _stop_all(self, sig: int, *, wait: bool = True) -> None:
        for w in self._workers.values():
            if w.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.send_signal(sig)
        if not wait:
            return
        for w in self._workers.values():
            try:
                w.proc.wait(timeout=self.cfg.server.shutdown_drain_seconds + 15.0)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()
            self._forget(w)

    @staticmethod
    def _forget(w: _Worker) -> None:
        if w.ready_fd >= 0:
            os.close(w.ready_fd)
            w.ready_fd = -1
        if w.ping is not None:
            w.ping.close()
            w.ping = None


def _stderr(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()

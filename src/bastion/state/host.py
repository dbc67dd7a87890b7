"""The state host: one process owns the embedded counters for ``bastion serve --workers N``.

    python -m bastion.state.host --url sqlite:///state.db --socket DIR/state.sock --parent PID

The embedded store (``MemoryCounterStore``) is atomic because each operation's
read-check-write runs without an ``await`` in between, which holds inside one process only. So
under N workers one process, this one, opens the configured store exactly as a single gateway
would (``open_state(url)``: same file, same write-behind snapshot, same flag file) and serves
its ``CounterStore`` methods over a Unix socket in the supervisor's 0700 runtime directory;
each worker forwards its calls here (``state/remote.py``). Every operation still runs in one
event loop, so caps, rate limits, breakers, the kill switch and idempotency keys are the ones
a single process would keep, shared by every worker.

Each request runs as its own task, so a flag write (written through to the file) does not
hold up the counters; answers go back in completion order, matched by id.

On SIGTERM (the supervisor sends it once every worker has exited) it stops listening and
closes the store, which flushes the snapshot. It asks the kernel for a SIGTERM should the
supervisor die. A crash (SIGKILL) loses what a crash of a single embedded gateway loses (see
``state/memory.py``): the last flush interval of counters, and the live reservations, buckets
and breakers; the supervisor restarts it, and meanwhile the workers' calls fail closed. The
reservations and running idempotency keys come back: each worker restores its own on a new
host (``hello`` answers this host's random id, so a worker tells a restart from a broken
connection; ``state/remote.py``), and a restarted host (``--hold-new-seconds``) refuses new
reservations and idempotent begins (fail closed) until each worker alive at the restart
(``--worker-pids``) said ``ready`` or was reported dead or running (answering the supervisor's
pings well after this host listened, yet not here: a worker with holds reconnects at once, so
it holds nothing; an idle worker has no connection to lose), or the hold runs out, so no call
is admitted into the room of a call still running. The supervisor makes that clock outlast its
pings' window, so a worker stopped (SIGSTOP) through the restart is killed (its holds die with
it) before the clock could end the hold; with the pings off it is a fixed 2 s, and a worker
stopped longer can give back holds whose room was spent meanwhile (the cap overshoots).

Not restored (known gaps): rate-limit buckets and breakers start fresh (a crash lets up to a
burst more through and closes every breaker); a restored hold whose settle the dead host had
applied and flushed counts that settle again when the journal replays it (more spend, never
less); and a dead worker's dropped holds are the host's only record of their caps, so a settle
of one replayed after a host restart is not counted.

A worker that dies takes its holds with it, as one process would: the supervisor reports it
(``drop_worker`` with its pid, which each worker names in ``hello``) and the host releases the
reservations that worker held once its connection is gone. A settle for one of them that comes
later (the dead worker's journal, replayed by its successor) still counts, until its lease.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Coroutine, Iterable, Sequence
from pathlib import Path
from typing import Any

from bastion.errors import BastionError, ConfigError, StateUnavailable
from bastion.state import CounterStore, open_state
from bastion.state._wire import (
    HEADER,
    MAX_FRAME,
    METHODS,
    WireError,
    decode,
    encode,
    frame,
    unframe,
)
from bastion.state.base import Cap
from bastion.state.plan import Reserve, Settle

__all__ = ["StateHost", "main"]

log = logging.getLogger("bastion.state.host")

_OWN = frozenset({"hello", "ready", "holding", "running"})
_GRANTS = frozenset({"reserve", "restore", "admit"})
_ENDS = frozenset({"settle", "release", "finish"})
# what a worker gives back to a restarted host: its reservations, its idempotency locks
_RESTORES = {"restore": "reserve", "restore_idem": "idem_begin"}
# what waits, after a restart, until they are back (fails closed meanwhile)
_HELD = frozenset({"reserve", "admit", "idem_begin"})

_PR_SET_PDEATHSIG = 1


class StateHost:
    """Serve ``store`` on the Unix socket ``path`` until ``stop()``."""

    def __init__(
        self,
        store: CounterStore,
        path: str,
        *,
        hold_new_seconds: float = 0.0,
        workers: int = 0,
        worker_pids: Iterable[int] = (),
    ) -> None:
        self.store = store
        self.path = path
        # a restarted host: new reservations (reserve, admit) fail closed this long after it
        # listens, while the workers give back the holds their running calls still have, or
        # until each of ``worker_pids`` (the workers alive at the restart) said "ready" or was
        # reported dead: a worker stopped (SIGSTOP) past the clock would give its holds back
        # after others had spent their room. Without pids: until ``workers`` stores said
        # "ready" (by token, so a worker that reconnects during the hold is counted once)
        self._hold_new = hold_new_seconds
        self._hold_until = 0.0
        self._workers = workers
        self._ready: set[str] = set()
        self._awaited = set(worker_pids)  # alive at the restart, neither ready nor dead yet
        self._by_pid = bool(self._awaited)
        # whose reservations are whose, so a dead worker's are released at once (one process
        # that dies takes its holds with it) rather than held for their lease
        self._pids: dict[asyncio.StreamWriter, int] = {}
        self._owned: dict[int, dict[str, tuple[tuple[Cap, ...], float]]] = {}  # caps, until
        self._dropped: dict[str, tuple[tuple[Cap, ...], float]] = {}  # a dead worker's holds
        self._dead: set[int] = set()
        # connections accepted so far, and when each was; a pid's death is noted at this count,
        # so a connection accepted before it (its frames read late) is the dead process's own
        self._accepts = 0
        self._accepted: dict[asyncio.StreamWriter, int] = {}
        self._died_at: dict[int, int] = {}
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        # told to each worker on connecting ("hello"): a new id means a new host, one that
        # holds none of the reservations its predecessor did, so the worker restores its own
        self.instance = os.urandom(8).hex()

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            Path(self.path).unlink()  # a dead predecessor's
        self._server = await asyncio.start_unix_server(
            self._serve, self.path, limit=MAX_FRAME + HEADER.size
        )
        os.chmod(self.path, 0o600)
        self._hold_until = time.monotonic() + self._hold_new

    async def stop(self) -> None:
        """Stop listening, drop the connections, then close (and flush) the store."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2.0)
        await self.store.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        self._accepted[writer] = self._accepts
        self._accepts += 1
        mine: set[asyncio.Task[None]] = set()
        try:
            while True:
                (size,) = HEADER.unpack(await reader.readexactly(HEADER.size))
                if size > MAX_FRAME:
                    raise WireError(f"frame of {size} bytes")
                message = unframe(await reader.readexactly(size))
                task = asyncio.create_task(self._answer(message, writer))
                for tasks in (self._tasks, mine):
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
        except (OSError, asyncio.IncompleteReadError):
            pass  # the worker went away
        except WireError as exc:
            log.warning("state host: dropped a connection that sent a bad frame: %s", exc)
        finally:
            self._writers.discard(writer)
            writer.close()
            if mine:  # its last calls are applied before a dead worker's holds are dropped
                await asyncio.wait(mine, timeout=2.0)
            self._accepted.pop(writer, None)
            pid = self._pids.pop(writer, None)
            if pid is not None and pid in self._dead and pid not in self._pids.values():
                await self._drop(pid)

    async def _answer(self, message: list[Any], writer: asyncio.StreamWriter) -> None:
        rid, method, args = message[0], message[1], message[2]
        try:
            if method in _OWN:
                result: Any = self._own(method, args, writer)
            elif not isinstance(args, list) or method not in METHODS | _RESTORES.keys() | {
                "drop_worker"
            }:
                raise TypeError(f"not a counter store call: {method!r}")
            elif method == "drop_worker":  # the supervisor: this worker died
                result = await self._drop_worker(int(args[0]))
            elif method in _RESTORES:  # a worker's live hold, from before this host started
                values = [decode(a) for a in args]
                result = await getattr(self.store, _RESTORES[method])(*values)
                self._track(writer, method, values, result)
            elif method in _HELD and self.holding():
                raise StateUnavailable("the state host restarted: restoring reservations")
            else:
                values = [decode(a) for a in args]
                result = await getattr(self.store, method)(*values)
                if method in ("settle", "finish") and self._dropped:
                    result = await self._settle_dropped(method, values, result)
                self._track(writer, method, values, result)
            reply = frame([rid, 0, encode(result)])
        except ValueError as exc:  # WireError too: the caller's bug, as in process
            reply = frame([rid, 1, "value", str(exc)])
        except TypeError as exc:
            reply = frame([rid, 1, "type", str(exc)])
        except BastionError as exc:  # StateUnavailable: the file is unreachable, the store closed
            reply = frame([rid, 1, "state", str(exc) or type(exc).__name__])
        except Exception as exc:  # a bug here must not pass a guard: the caller fails closed
            log.exception("state host: %s failed", method)
            reply = frame([rid, 1, "state", f"the state host failed: {type(exc).__name__}"])
        if not writer.is_closing():
            writer.write(reply)

    def _track(
        self, writer: asyncio.StreamWriter, method: str, values: list[Any], result: Any
    ) -> None:
        """Note a hold the worker on ``writer`` took, or forget one it ended."""
        pid = self._pids.get(writer)
        if pid is None or (method not in _GRANTS and method not in _ENDS):
            return
        owned = self._owned.setdefault(pid, {})
        if method in _ENDS:
            if method == "finish":
                ended = [op.reservation_id for op in values[0] if isinstance(op, Settle)]
            else:
                ended = values[:1]
            for rid in ended:
                owned.pop(rid, None)
        elif not getattr(result, "ok", False):
            return
        elif method != "admit":  # reserve / restore (rid, caps, amount, lease)
            owned[values[0]] = (tuple(values[1]), time.monotonic() + values[3])
        else:
            for op in values[0]:
                if isinstance(op, Reserve):
                    owned[op.reservation_id] = (op.caps, time.monotonic() + op.lease_seconds)

    async def _drop_worker(self, pid: int) -> int:
        """The supervisor reaped worker ``pid``: release its holds once its connection is gone."""
        self._dead.add(pid)
        self._died_at[pid] = self._accepts
        self._accounted(pid)  # its calls died with it: none of its holds will come back
        if pid in self._pids.values():
            return 0  # its connection closes next: released then, after its last calls
        return await self._drop(pid)

    async def _drop(self, pid: int) -> int:
        self._dead.discard(pid)
        owned = self._owned.pop(pid, {})
        now = time.monotonic()
        for old in [r for r, (_, until) in self._dropped.items() if until <= now]:
            del self._dropped[old]
        for rid, kept in owned.items():
            await self.store.release(rid)
            self._dropped[rid] = kept
        return len(owned)

    async def _settle_dropped(self, method: str, values: list[Any], result: Any) -> Any:
        """A settle for a hold dropped with its dead worker still counts (until its lease).

        The dead worker's journaled settles are replayed by the worker that adopts its journal:
        that spend happened, so it is added to the caps the hold was on, as the settle would.
        """
        if method == "settle":
            done = await self._late_settle(values[0], values[1], result)
            return done
        answers = list(result)
        for i, op in enumerate(values[0]):
            if isinstance(op, Settle) and op.actual is not None:
                answers[i] = await self._late_settle(op.reservation_id, op.actual, answers[i])
        return tuple(answers)

    async def _late_settle(self, rid: str, actual: float, landed: Any) -> Any:
        kept = None if landed is not False else self._dropped.pop(rid, None)
        if kept is None or kept[1] <= time.monotonic():
            return landed
        caps = [Cap(c.key, sys.float_info.max, c.ttl_seconds) for c in kept[0]]
        await self.store.reserve(rid, caps, actual, 60.0)
        return await self.store.settle(rid, actual)

    def _accounted(self, pid: int | None) -> None:
        """Worker ``pid`` gave its holds back (or died): end the hold once every one has."""
        if pid is not None:
            self._awaited.discard(pid)
        if self._by_pid:
            if not self._awaited:
                self._hold_until = 0.0
        elif 0 < self._workers <= len(self._ready):
            self._hold_until = 0.0

    def holding(self) -> bool:
        """Whether new reservations still wait for the workers' holds (after a restart)."""
        return time.monotonic() < self._hold_until

    def _own(self, method: str, args: Any, writer: asyncio.StreamWriter) -> Any:
        """The host's own calls: ``hello`` (its id), ``ready`` (restored), ``holding``, and the
        supervisor's ``running`` (a worker that runs but never came back: it held nothing)."""
        if method == "hello":
            if args and isinstance(args[0], int):  # the worker's pid: whose holds these are
                pid, accepted = args[0], self._accepted.get(writer, -1)
                if accepted < self._died_at.get(pid, -1):
                    # the dead process's own frames, read late: its holds are its connection's
                    # (under an id no pid has), dropped when it closes
                    self._pids[writer] = -1 - accepted
                    self._dead.add(-1 - accepted)
                else:
                    self._pids[writer] = pid
                    self._dead.discard(pid)  # a new process under a reused pid
            return self.instance
        if method == "ready":
            self._ready.add(str(args[0]))
            self._accounted(self._pids.get(writer))
            return None
        if method == "running":  # the supervisor: this worker runs, yet had nothing to restore
            self._accounted(int(args[0]))
            return None
        return self.holding()


def _die_with_parent(parent: int) -> None:
    """SIGTERM when the supervisor dies, so the host never outlives it (Linux only)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


async def _serve(args: argparse.Namespace) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    host = StateHost(
        open_state(args.url, prefix=args.prefix),
        args.socket,
        hold_new_seconds=args.hold_new_seconds,
        workers=args.workers,
        worker_pids=[int(p) for p in args.worker_pids.split(",") if p],
    )
    await host.store.ping()  # load the file before answering: a bad file fails the start
    await host.start()
    try:
        await stopping.wait()
    finally:
        await host.stop()


def _run(coro: Coroutine[Any, Any, None]) -> None:
    """On uvloop when it is installed, as the workers run."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(coro)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bastion.state.host")
    p.add_argument("--url", required=True, help="the embedded state URL (memory://, sqlite://)")
    p.add_argument("--socket", required=True, help="where to serve (in a private directory)")
    p.add_argument("--prefix", default="bastion")
    p.add_argument("--parent", type=int, required=True, help="the supervisor's pid")
    p.add_argument(
        "--hold-new-seconds",
        type=float,
        default=0.0,
        help="a restart: refuse new reservations this long while the workers restore theirs",
    )
    p.add_argument("--workers", type=int, default=0, help="end that hold once this many are ready")
    p.add_argument(
        "--worker-pids",
        default="",
        help="end that hold once each of these workers (comma-separated pids) is ready or dead",
    )
    args = p.parse_args(argv)
    _die_with_parent(args.parent)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    scheme = args.url.partition("://")[0].lower()
    if scheme not in ("memory", "sqlite"):
        print(f"error: the state host serves embedded state only, not {scheme}://", file=sys.stderr)
        return 2
    try:
        _run(_serve(args))
    except (ConfigError, BastionError) as exc:
        print(f"error: state host: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

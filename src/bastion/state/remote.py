"""A ``CounterStore`` that forwards every call to the state host (``state/host.py``).

Under ``bastion serve --workers N`` on the embedded state, one process (the state host) owns the
counters, so every atomic operation stays atomic across the workers; each worker reaches it
through this store over one Unix-socket connection. Calls are pipelined: each carries an id,
many are in flight at once, and the one reader task hands each answer to its caller by id.

An outage fails closed exactly as Redis does: a host that is down, a connection that breaks
(every call in flight on it), or an answer later than ``timeout_seconds`` raises
``StateUnavailable``; the next call reconnects. A call cut off this way may or may not have
been applied, as with a Redis command whose answer was lost; a reservation granted after its
caller stopped waiting (timed out, or cancelled) is released when its answer comes, since no
one will settle it. ``ValueError`` and ``TypeError`` (a caller's bug) come back as themselves.
``close()`` drops this worker's connection only: the host persists and closes the counters
itself, after the workers.

A host that dies and is restarted keeps no live reservation, but the calls holding them run on
in the workers: each worker remembers the holds it took (until settled, released or past their
lease) and the idempotency keys it began (until completed or abandoned), and when it reaches a
new host (its ``hello`` id changed) gives them back before any other call of its own, then
says ``ready``; it reconnects as soon as a connection breaks. ``hello`` also names this
worker's pid, so the host can drop the holds of a worker the supervisor reports dead.

The URL ``statehost:///path/to.sock`` is internal: the supervisor gives it to its workers
(``server/workers.py``), and ``serve.workers_refusal`` refuses it in a user's config.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import struct
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from bastion.errors import StateUnavailable
from bastion.state._wire import (
    HEADER,
    MAX_FRAME,
    FrameTooLarge,
    WireError,
    decode,
    encode,
    frame,
    unframe,
)
from bastion.state.base import (
    BreakerDecision,
    BreakerPolicy,
    BreakerState,
    Cap,
    IdemBegin,
    IdemOutcome,
    IncrResult,
    ReserveResult,
    TakeResult,
    Usage,
)
from bastion.state.plan import Reserve, Settle

if TYPE_CHECKING:
    from bastion.state.plan import AdmitOp, AdmitResult, FinishAnswer, FinishOp

__all__ = ["SCHEME", "RemoteCounterStore", "ask_sync", "ping_sync", "url_for"]

SCHEME: Final = "statehost"


def url_for(path: str) -> str:
    """The internal state URL a worker is given for the host's socket at ``path``."""
    return f"{SCHEME}://{path}"


class _Conn:
    """One connection: its writer, the reader task, and the calls awaiting an answer."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_close: Callable[[], None] = lambda: None,
    ) -> None:
        self.writer = writer
        self.pending: dict[int, asyncio.Future[Any]] = {}
        # calls whose caller stopped waiting (timeout, cancel): what to do with a late answer
        self.orphans: dict[int, Callable[[Any], None]] = {}
        self.closed = False
        self.on_close = on_close
        self.task = asyncio.create_task(self._read(reader), name="bastion-statehost-reader")

    async def _read(self, reader: asyncio.StreamReader) -> None:
        why = "the state host closed the connection"
        try:
            while True:
                (size,) = HEADER.unpack(await reader.readexactly(HEADER.size))
                if size > MAX_FRAME:
                    raise WireError(f"frame of {size} bytes")
                message = unframe(await reader.readexactly(size))
                fut = self.pending.pop(message[0], None)
                if fut is None or fut.done():  # its caller timed out or was cancelled
                    late = self.orphans.pop(message[0], None)
                    if late is not None and message[1] == 0:
                        late(decode(message[2]))
                    continue
                if message[1] == 0:
                    fut.set_result(decode(message[2]))
                else:
                    fut.set_exception(_error(message[2], message[3]))
        except (OSError, asyncio.IncompleteReadError) as exc:
            why = f"the state host connection broke ({type(exc).__name__})"
        except WireError as exc:
            why = f"the state host sent a bad frame: {exc}"
        finally:
            self.fail(why)

    def fail(self, why: str) -> None:
        """Close, failing every call still waiting (closed: they fail closed)."""
        was_open, self.closed = not self.closed, True
        pending, self.pending = self.pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(StateUnavailable(why))
        self.writer.close()
        if was_open:
            self.on_close()


def _error(kind: str, message: str) -> Exception:
    if kind == "value":
        return ValueError(message)
    if kind == "type":
        return TypeError(message)
    return StateUnavailable(message)


# a restored hold is never refused: the spend it stands for is already under way
_NO_LIMIT: Final = sys.float_info.max
_REVIVE_FIRST_S: Final = 0.05
_REVIVE_MAX_S: Final = 0.25
_REVIVE_IDLE_S: Final = 30.0
_PRUNE_AT: Final = 4096


@dataclass(frozen=True, slots=True)
class _Held:
    """A reservation this worker holds on the host: what to restore on a new host."""

    caps: tuple[Cap, ...]
    amount: float
    since: float  # time.monotonic() when reserved
    lease: float

    def restore(self, rid: str, now: float) -> tuple[str, list[Cap], float, float] | None:
        """``reserve`` arguments holding the rest of it (None once its lease is over)."""
        age = now - self.since
        if age >= self.lease:
            return None
        caps = [Cap(c.key, _NO_LIMIT, max(c.ttl_seconds - age, 1.0)) for c in self.caps]
        return rid, caps, self.amount, self.lease - age


@dataclass(frozen=True, slots=True)
class _Lock:
    """An idempotency key this worker began (its request runs here): what to restore."""

    fingerprint: str
    ttl: float
    lock: float
    owner: str
    since: float  # time.monotonic() when begun

    def restore(self, key: str, now: float) -> tuple[str, str, float, float, str] | None:
        """``idem_begin`` arguments locking it for the rest of its lock (None once over)."""
        age = now - self.since
        if age >= self.lock or age >= self.ttl:
            return None
        return key, self.fingerprint, self.ttl - age, self.lock - age, self.owner


class RemoteCounterStore:
    """The state host's counters, for one worker (see the module docstring)."""

    def __init__(
        self, path: str, *, timeout_seconds: float = 5.0, connect_timeout_seconds: float = 2.0
    ) -> None:
        self._path = path
        self._timeout = timeout_seconds
        self._connect_timeout = connect_timeout_seconds
        self._conn: _Conn | None = None
        self._connecting = asyncio.Lock()
        self._ids = itertools.count(1)
        self._closed = False
        self._held: dict[str, _Held] = {}
        self._locks: dict[str, _Lock] = {}  # idempotency keys this worker runs (NEW, not done)
        self._host_id: str | None = None
        self._revive: asyncio.Task[None] | None = None
        self._me = os.urandom(8).hex()  # this store (one per worker), for the host's "ready"
        self._pid = os.getpid()  # the supervisor names a dead worker to the host by its pid

    async def _connection(self) -> _Conn:
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        async with self._connecting:
            if self._closed:
                raise StateUnavailable("counter store is closed")
            if self._conn is not None and not self._conn.closed:
                return self._conn
            try:
                async with asyncio.timeout(self._connect_timeout):
                    reader, writer = await asyncio.open_unix_connection(
                        self._path, limit=MAX_FRAME + HEADER.size
                    )
            except (OSError, TimeoutError) as exc:
                raise StateUnavailable(
                    f"the state host is unreachable ({type(exc).__name__})"
                ) from exc
            conn = _Conn(reader, writer, self._broken)
            try:
                await self._greet(conn)
            except BaseException:
                conn.fail("the state host connection failed while restoring reservations")
                raise
            self._conn = conn
            return conn

    async def _greet(self, conn: _Conn) -> None:
        """Learn which host this is; a new one (a restart) gets this worker's live holds back
        (reservations, and the locks of idempotent requests still running here).

        A restarted host starts with no reservations, yet the calls that hold them are still
        running here: without them it would admit new calls into their room and drop their
        settles (spend never counted). Each comes back at its amount for the rest of its lease,
        before any other call of this worker reaches the new host. The same host (a connection
        that merely broke) keeps its own: restoring there could count a settle twice.
        """
        host_id = await self._send(conn, "hello", self._pid)
        if self._host_id is not None and host_id != self._host_id:
            now = time.monotonic()
            restores = []
            for rid, held in list(self._held.items()):
                args = held.restore(rid, now)
                if args is None:
                    del self._held[rid]  # its lease is over: the host would drop it too
                else:
                    restores.append(self._send(conn, "restore", *args))
            for key, lock in list(self._locks.items()):
                begin = lock.restore(key, now)
                if begin is None:
                    del self._locks[key]  # its lock ran out: a retry may take over anyway
                else:
                    restores.append(self._send(conn, "restore_idem", *begin))
            await asyncio.gather(*restores)
        self._host_id = host_id
        await self._send(conn, "ready", self._me)  # a restarted host holds new reservations

    def _broken(self) -> None:
        """A connection broke: reconnect now rather than at a next call, so a restarted host
        gets this worker's holds back (and its "ready") at once."""
        if self._closed or (self._revive and not self._revive.done()):
            return
        self._revive = asyncio.get_running_loop().create_task(
            self._reconnect(), name="bastion-statehost-revive"
        )

    async def _reconnect(self) -> None:
        delay = _REVIVE_FIRST_S
        give_up = time.monotonic() + _REVIVE_IDLE_S  # holding nothing, a next call reconnects
        while not self._closed and (self._held or self._locks or time.monotonic() < give_up):
            await asyncio.sleep(delay)
            try:
                await self._connection()
            except StateUnavailable:
                delay = min(delay * 2, _REVIVE_MAX_S)
                continue
            return

    def _hold(self, rid: str, caps: Sequence[Cap], amount: float, lease: float) -> None:
        if len(self._held) >= _PRUNE_AT:  # holds whose call never settled (it died): drop
            now = time.monotonic()
            for old in [r for r, h in self._held.items() if now - h.since >= h.lease]:
                del self._held[old]
        self._held.setdefault(rid, _Held(tuple(caps), amount, time.monotonic(), lease))

    async def _call(self, method: str, *args: Any) -> Any:
        return await self._send(await self._connection(), method, *args)

    async def _send(self, conn: _Conn, method: str, *args: Any) -> Any:
        rid = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        try:
            data = frame([rid, method, [encode(a) for a in args]])
        except FrameTooLarge as exc:  # e.g. a huge idempotent answer: the store cannot keep it
            raise StateUnavailable(f"{method} is too big for the state host: {exc}") from exc
        conn.pending[rid] = fut
        try:
            conn.writer.write(data)
        except (OSError, RuntimeError) as exc:
            conn.fail(f"the state host connection broke ({type(exc).__name__})")
            raise StateUnavailable("the state host connection broke") from exc
        try:
            async with asyncio.timeout(self._timeout):
                return await fut
        except TimeoutError as exc:
            self._orphan(conn, rid, method, args)
            raise StateUnavailable(
                f"the state host did not answer {method} within {self._timeout:g}s"
            ) from exc
        except asyncio.CancelledError:
            self._orphan(conn, rid, method, args)
            raise

    def _orphan(self, conn: _Conn, rid: int, method: str, args: tuple[Any, ...]) -> None:
        """A call its caller no longer waits for. A reservation it grants all the same (the
        host applied it late) belongs to a call that failed closed and will never settle it:
        give it back when the answer comes, rather than hold the room for its whole lease."""
        conn.pending.pop(rid, None)
        if method == "reserve":
            rids = [args[0]]
        elif method == "admit":
            rids = [op.reservation_id for op in args[0] if isinstance(op, Reserve)]
        else:
            return
        rids = [r for r in rids if r not in self._held]  # never a live hold of the same id
        if rids:
            conn.orphans[rid] = lambda result: self._give_back(conn, result, rids)

    def _give_back(self, conn: _Conn, result: Any, rids: list[str]) -> None:
        if not getattr(result, "ok", False) or conn.closed:
            return  # refused: nothing is held
        for r in rids:
            if r not in self._held:  # its answer is read and dropped: no caller waits
                with contextlib.suppress(OSError, RuntimeError):
                    conn.writer.write(frame([next(self._ids), "release", [encode(r)]]))

    # -- budgets -------------------------------------------------------------------------------

    async def reserve(
        self, reservation_id: str, caps: Sequence[Cap], amount: float, lease_seconds: float
    ) -> ReserveResult:
        result: ReserveResult = await self._call(
            "reserve", reservation_id, list(caps), amount, lease_seconds
        )
        if result.ok:
            self._hold(reservation_id, caps, amount, lease_seconds)
        return result

    async def settle(self, reservation_id: str, actual: float) -> bool:
        done = bool(await self._call("settle", reservation_id, actual))
        self._held.pop(reservation_id, None)  # answered: the host has it (or it was over)
        return done

    async def release(self, reservation_id: str) -> bool:
        done = bool(await self._call("release", reservation_id))
        self._held.pop(reservation_id, None)
        return done

    async def usage(self, cap_key: str) -> Usage:
        result: Usage = await self._call("usage", cap_key)
        return result

    # -- token buckets and counters ------------------------------------------------------------

    async def take(
        self, key: str, rate_per_second: float, burst: float, cost: float = 1.0
    ) -> TakeResult:
        result: TakeResult = await self._call("take", key, rate_per_second, burst, cost)
        return result

    async def charge(self, key: str, rate_per_second: float, burst: float, amount: float) -> float:
        return float(await self._call("charge", key, rate_per_second, burst, amount))

    async def incr(self, key: str, amount: float, ttl_seconds: float) -> float:
        return float(await self._call("incr", key, amount, ttl_seconds))

    async def incr_if_below(
        self, key: str, amount: float, limit: float, ttl_seconds: float
    ) -> IncrResult:
        result: IncrResult = await self._call("incr_if_below", key, amount, limit, ttl_seconds)
        return result

    async def get(self, key: str) -> float:
        return float(await self._call("get", key))

    # -- flags ---------------------------------------------------------------------------------

    async def set_flag(
        self, key: str, value: str | None, meta: Mapping[str, Any] | None = None
    ) -> None:
        await self._call("set_flag", key, value, None if meta is None else dict(meta))

    async def get_flags(self, prefix: str = "") -> dict[str, str]:
        result: dict[str, str] = await self._call("get_flags", prefix)
        return result

    async def flag_meta(self, key: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = await self._call("flag_meta", key)
        return result

    # -- circuit breakers ----------------------------------------------------------------------

    async def breaker_allow(self, key: str, policy: BreakerPolicy) -> BreakerDecision:
        result: BreakerDecision = await self._call("breaker_allow", key, policy)
        return result

    async def breaker_record(self, key: str, ok: bool, policy: BreakerPolicy) -> BreakerState:
        result: BreakerState = await self._call("breaker_record", key, ok, policy)
        return result

    async def breaker_peek(self, key: str) -> BreakerDecision:
        result: BreakerDecision = await self._call("breaker_peek", key)
        return result

    # -- idempotency ---------------------------------------------------------------------------

    async def idem_begin(
        self, key: str, fingerprint: str, ttl_seconds: float, lock_seconds: float, owner: str = ""
    ) -> IdemBegin:
        result: IdemBegin = await self._call(
            "idem_begin", key, fingerprint, ttl_seconds, lock_seconds, owner
        )
        if result.outcome is IdemOutcome.NEW:
            if len(self._locks) >= _PRUNE_AT:  # locks whose request never ended (it died)
                now = time.monotonic()
                for old in [k for k, v in self._locks.items() if now - v.since >= v.lock]:
                    del self._locks[old]
            lock = _Lock(fingerprint, ttl_seconds, lock_seconds, owner, time.monotonic())
            self._locks[key] = lock
        return result

    async def idem_complete(
        self, key: str, fingerprint: str, response: bytes, ttl_seconds: float
    ) -> bool:
        done = bool(await self._call("idem_complete", key, fingerprint, response, ttl_seconds))
        self._locks.pop(key, None)
        return done

    async def idem_abandon(self, key: str, owner: str | None = None) -> bool:
        done = bool(await self._call("idem_abandon", key, owner))
        self._locks.pop(key, None)
        return done

    # -- batches -------------------------------------------------------------------------------

    async def admit(self, ops: Sequence[AdmitOp]) -> AdmitResult:
        result: AdmitResult = await self._call("admit", list(ops))
        if result.ok:
            for op in ops:
                if isinstance(op, Reserve):
                    self._hold(op.reservation_id, op.caps, op.amount, op.lease_seconds)
        return result

    async def finish(self, ops: Sequence[FinishOp]) -> tuple[FinishAnswer, ...]:
        result: tuple[FinishAnswer, ...] = await self._call("finish", list(ops))
        for op in ops:
            if isinstance(op, Settle):
                self._held.pop(op.reservation_id, None)
        return result

    # -- lifecycle -----------------------------------------------------------------------------

    async def ping(self) -> None:
        await self._call("ping")

    async def close(self) -> None:
        """Drop this worker's connection (the host keeps, persists and closes the counters)."""
        self._closed = True
        if self._revive is not None:
            self._revive.cancel()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.fail("counter store is closed")
            conn.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await conn.task


def ping_sync(path: str, timeout: float) -> bool:
    """Whether a state host answers a ping at ``path`` within ``timeout`` (blocking; no loop)."""
    return ask_sync(path, "ping", timeout) == (True, None)


def ask_sync(path: str, method: str, timeout: float, *args: Any) -> tuple[bool, Any]:
    """(answered, value) of one call to the host at ``path`` (blocking; no event loop)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(frame([0, method, [encode(a) for a in args]]))
            head = _recv_exactly(sock, HEADER.size)
            (size,) = HEADER.unpack(head)
            message = unframe(_recv_exactly(sock, size))
            if message[0] == 0 and message[1] == 0:
                return True, decode(message[2])
    except (OSError, WireError, struct.error):
        pass
    return False, None


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(n)
        if not chunk:
            raise ConnectionResetError("closed")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)

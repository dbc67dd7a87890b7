"""Settles the counter store could not take, kept in a local file until they land.

A settle is spend that happened; losing it would let later calls spend it again. So when the
counter store is unreachable the settle is appended here (one line, no fsync: a process crash
keeps the OS page cache), retried in the background, and drained before this process makes
its next reservation, so a reservation never sees a cap without this process's own spend.
Settles are idempotent per server-minted reservation id in every backend, so a line replayed
twice (a crash between landing and truncating) counts once.

Each process writes its own file ``<base>.<pid>.<random>.jsonl`` under an exclusive ``flock``;
at start a process adopts the files of processes that died (those it can lock). Windows left
open: a machine crash loses lines not yet written back by the OS; and another replica does not
see this process's journaled spend until the store is back (its reservations' leases, held for
the call's deadline plus ``cost.lease_grace_seconds``, cover the usual outage).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import glob
import logging
import os
import uuid
from typing import IO

import orjson

from ..errors import StateUnavailable
from ..state import CounterStore

__all__ = ["SettleJournal"]

log = logging.getLogger("bastion.cost.journal")


class SettleJournal:
    """Pending settles (reservation id → actual, None to release), on disk until they land."""

    def __init__(self, base: str | None, *, retry_seconds: float = 1.0) -> None:
        self._base = base
        self._retry = retry_seconds
        self._pending: dict[str, float | None] = {}
        self._fh: IO[bytes] | None = None
        self._path: str | None = None
        self._adopted: list[str] = []
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._state: CounterStore | None = None

    def __len__(self) -> int:
        return len(self._pending)

    def open(self) -> None:
        """Adopt the journals of dead processes (any file under ``base`` nobody holds)."""
        if self._base is None:
            return
        for path in sorted(glob.glob(glob.escape(self._base) + ".*.jsonl")):
            try:
                fh = open(path, "rb+")  # noqa: SIM115 - held for the lock's lifetime
            except OSError:
                continue
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.close()  # a live process's journal
                continue
            for line in fh.read().splitlines():
                try:
                    rec = orjson.loads(line)
                    self._pending[str(rec["id"])] = rec["actual"]
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    log.warning("settle journal %s: unreadable line skipped", path)
            fh.close()
            self._adopted.append(path)
        if self._pending:
            log.warning("settle journal: %d settles adopted from earlier runs", len(self._pending))
            self._rewrite()
        for path in self._adopted:
            with contextlib.suppress(OSError):
                os.unlink(path)
        self._adopted.clear()

    def _file(self) -> IO[bytes] | None:
        if self._fh is None and self._base is not None:
            self._path = f"{self._base}.{os.getpid()}.{uuid.uuid4().hex[:8]}.jsonl"
            fh = open(self._path, "ab")  # noqa: SIM115 - kept open while the process lives
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._fh = fh
        return self._fh

    def _write(self, rid: str, actual: float | None) -> None:
        fh = self._file()
        if fh is not None:
            fh.write(orjson.dumps({"id": rid, "actual": actual}) + b"\n")
            fh.flush()

    def _rewrite(self) -> None:
        fh = self._file()
        if fh is None:
            return
        fh.seek(0)
        fh.truncate()
        for rid, actual in self._pending.items():
            fh.write(orjson.dumps({"id": rid, "actual": actual}) + b"\n")
        fh.flush()

    def add(self, state: CounterStore, rid: str, actual: float | None) -> None:
        """Keep a settle that could not land; a background task retries it."""
        self._pending[rid] = actual
        self._write(rid, actual)
        self._state = state
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._retry_loop())

    async def drain(self, state: CounterStore) -> None:
        """Land every pending settle, oldest first; raise ``StateUnavailable`` if the store is down."""
        if not self._pending:
            return
        async with self._lock:
            for rid, actual in list(self._pending.items()):
                if actual is None or actual <= 0:
                    await state.release(rid)
                else:
                    await state.settle(rid, actual)
                del self._pending[rid]
            self._rewrite()
            log.info("settle journal drained")

    async def _retry_loop(self) -> None:
        while self._pending and self._state is not None:
            await asyncio.sleep(self._retry)
            with contextlib.suppress(StateUnavailable):
                await self.drain(self._state)

    async def aclose(self, state: CounterStore) -> None:
        """A last try to land what is pending; whatever is left stays on disk for the next start."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, StateUnavailable):
                await self._task
        with contextlib.suppress(StateUnavailable):
            await self.drain(state)
        if self._fh is not None:
            empty = not self._pending
            self._fh.close()
            self._fh = None
            if empty and self._path is not None:
                with contextlib.suppress(OSError):
                    os.unlink(self._path)

"""Call records and spend-ledger entries, written off the request path.

A call only appends to a bounded in-memory queue; a background task drains it
in batches to the record store. When the store is down (or the queue is full)
records go to an append-only spill file, replayed once the store answers again.
Inserts are idempotent on request_id, so a replay after a crash never duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ..store import CallRecord, LedgerEntry, RecordStore

log = logging.getLogger("bastion.recorder")


@dataclass(slots=True)
class RecorderStats:
    queued: int = 0
    written: int = 0
    spilled: int = 0
    replayed: int = 0
    dropped: int = 0
    store_errors: int = 0


Item = tuple[CallRecord | None, LedgerEntry | None]


class Recorder:
    """Bounded queue → batched store writes, with a spill file for outages and overload."""

    def __init__(
        self,
        store: RecordStore,
        spill_path: str | Path,
        *,
        max_queue: int = 20_000,
        batch_size: int = 500,
        flush_interval: float = 0.2,
        retry_interval: float = 1.0,
    ) -> None:
        self._store = store
        self._spill = Path(spill_path)
        self._max = max_queue
        self._batch = batch_size
        self._interval = flush_interval
        self._retry = retry_interval
        self._queue: deque[Item] = deque()
        self._overflow: list[Item] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.stats = RecorderStats()

    # -- hot path -----------------------------------------------------------------------------

    def submit(self, record: CallRecord | None, ledger: LedgerEntry | None = None) -> None:
        """Never blocks on the store; a full queue spills to disk instead of growing.

        Overflow is parked in a second bounded buffer that the background task spills in
        one write per batch (an fsync per record on the event loop stalled every call);
        only when that is full too does a call spill its own record.
        """
        if len(self._queue) >= self._max:
            if len(self._overflow) < self._batch * 4:
                self._overflow.append((record, ledger))
                self._wake.set()
            else:
                self._spill_items([*self._overflow, (record, ledger)])
                self._overflow.clear()
            return
        self._queue.append((record, ledger))
        self.stats.queued += 1
        if len(self._queue) >= self._batch:
            self._wake.set()

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="bastion-recorder"
            )

    async def aclose(self) -> None:
        """Drain what is queued (to the store, or to the spill file if it is down)."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._queue:
            await self.flush()

    async def flush(self) -> None:
        """Write everything queued now; on store failure it lands in the spill file."""
        if self._overflow:
            parked, self._overflow = self._overflow, []
            await asyncio.to_thread(self._spill_items, parked)
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(self._batch, len(self._queue)))]
            await self._write(batch)

    # -- background ---------------------------------------------------------------------------

    async def _run(self) -> None:
        last_replay = 0.0
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue and not self._closing:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._interval):
                        await self._wake.wait()
            await self.flush()
            now = loop.time()
            if now - last_replay >= self._retry and self._spill.exists():
                last_replay = now
                await self.replay()
            if self._closing:
                return

    async def _write(self, batch: list[Item]) -> None:
        calls = [c for c, _ in batch if c is not None]
        ledger = [e for _, e in batch if e is not None]
        try:
            if ledger:
                await self._store.insert_ledger(ledger)
            if calls:
                await self._store.insert_calls(calls)
            self.stats.written += len(batch)
        except Exception as exc:  # any store failure: keep the records on disk
            self.stats.store_errors += 1
            log.warning(
                "record store write failed (%s); spilling %d records",
                type(exc).__name__,
                len(batch),
            )
            self._spill_items(batch)

    def _spill_items(self, items: list[Item]) -> None:
        lines = []
        for rec, led in items:
            lines.append(
                orjson.dumps(
                    {
                        "call": dataclasses.asdict(rec) if rec is not None else None,
                        "ledger": dataclasses.asdict(led) if led is not None else None,
                    }
                )
            )
        try:
            self._spill.parent.mkdir(parents=True, exist_ok=True)
            with self._spill.open("ab") as f:
                f.write(b"\n".join(lines) + b"\n")
                f.flush()
                os.fsync(f.fileno())
            self.stats.spilled += len(items)
        except OSError:
            self.stats.dropped += len(items)
            log.error("cannot write the spill file %s; %d records dropped", self._spill, len(items))

    async def replay(self) -> int:
        """Move spilled records into the store; the file is removed only once all are in."""
        work = self._spill.with_name(self._spill.name + ".replay")
        if not work.exists():
            try:
                os.replace(self._spill, work)
            except FileNotFoundError:
                return 0
        items: list[Item] = []
        for line in work.read_bytes().splitlines():
            if not line.strip():
                continue
            try:
                obj: dict[str, Any] = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # a torn last line from a crash mid-write
            call = CallRecord(**obj["call"]) if obj.get("call") else None
            led = LedgerEntry(**obj["ledger"]) if obj.get("ledger") else None
            items.append((call, led))
        try:
            for i in range(0, len(items), self._batch):
                chunk = items[i : i + self._batch]
                entries = [e for _, e in chunk if e is not None]
                calls = [c for c, _ in chunk if c is not None]
                if entries:
                    await self._store.insert_ledger(entries)
                if calls:
                    await self._store.insert_calls(calls)
        except Exception:
            self.stats.store_errors += 1
            return 0  # keep the file; try again later
        work.unlink(missing_ok=True)
        self.stats.replayed += len(items)
        return len(items)

    @property
    def pending(self) -> int:
        return len(self._queue) + len(self._overflow)

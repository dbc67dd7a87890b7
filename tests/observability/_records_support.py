"""Helpers for the record-durability tests: a store that fails on command, quarantine reading,
and a loopback TCP proxy that makes a real PostgreSQL outage."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from bastion.errors import StateUnavailable
from bastion.store import CallRecord, LedgerEntry, RecordStore


class Rejected(Exception):
    """What the flaky store raises for a record it refuses (not an outage)."""


class FlakyStore:
    """A real store behind switches: down (unreachable), fail the next N batches, refuse some
    request ids. Only the record-writing methods are wrapped; the rest pass through."""

    def __init__(self, inner: RecordStore) -> None:
        self.inner = inner
        self.down = False
        self.fail_batches = 0
        self.refuse: Callable[[str], bool] = lambda rid: False
        self.batches = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def ping(self) -> None:
        if self.down:
            raise StateUnavailable("flaky store is down")
        await self.inner.ping()

    def _gate(self, ids: Sequence[str]) -> None:
        self.batches += 1
        if self.down:
            raise StateUnavailable("flaky store is down")
        if self.fail_batches > 0 and len(ids) > 1:
            self.fail_batches -= 1
            raise RuntimeError("injected failure of a whole batch")
        bad = [i for i in ids if self.refuse(i)]
        if bad:
            raise Rejected(f"injected refusal of {bad[0][:40]!r}")

    async def insert_calls(self, records: Sequence[CallRecord]) -> int:
        self._gate([r.request_id for r in records])
        return await self.inner.insert_calls(records)

    async def insert_ledger(self, entries: Sequence[LedgerEntry]) -> int:
        self._gate([e.request_id for e in entries])
        return await self.inner.insert_ledger(entries)


def quarantined(path: Path) -> list[dict[str, Any]]:
    """Every quarantine entry (each has a reason, and the record or the raw line)."""
    if not path.exists():
        return []
    return [orjson.loads(ln) for ln in path.read_bytes().splitlines() if ln.strip()]


def down_after(flaky: FlakyStore, batch: int) -> None:
    """The store goes down during its ``batch``-th insert of calls (counted from 1): that
    batch still lands, every later one meets an outage until ``flaky.down`` is reset."""
    real = flaky.inner.insert_calls
    seen = 0

    async def insert_then_fail(records: Sequence[CallRecord]) -> int:
        nonlocal seen
        seen += 1
        if seen == batch:
            flaky.down = True
        return await real(records)

    flaky.inner.insert_calls = insert_then_fail  # type: ignore[method-assign]


def call(rid: str, **kw: Any) -> CallRecord:
    values: dict[str, Any] = {
        "request_id": rid,
        "trace_id": "t",
        "ts": 1_700_000_000.0,
        "api_format": "openai",
        "requested_model": "m",
    }
    values.update(kw)
    return CallRecord(**values)


class TcpProxy:
    """A loopback TCP forwarder that can be killed and restarted on the same port."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def kill(self) -> None:
        """Refuse new connections and reset every open one, as a crashed server would."""
        if self._server is None:
            return
        self._server.close()
        for w in list(self._conns):
            w.transport.abort()
        self._conns.clear()
        await self._server.wait_closed()
        self._server = None

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            w.transport.abort()
            return
        self._conns.update((w, uw))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(r, uw), pipe(ur, w))

"""A dead worker's last frames, read by the host after the supervisor reported its death.

A worker that connects, writes (its ``hello``, a restore, a reserve) and dies leaves those
frames in its connection's buffer. If the host is slow to read them (busy, or just restarted),
the supervisor's ``drop_worker`` can come first; before, the late ``hello`` was taken for a new
process under a reused pid and cleared the death, so the holds it took were kept until their
lease (a cap blocked by calls that no longer exist). A connection accepted before the death was
reported belongs to the dead process; a reused pid can only connect after (the supervisor
starts the replacement once ``drop_worker`` is answered).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.state import Cap, MemoryCounterStore
from bastion.state._wire import HEADER, decode, encode, frame, unframe
from bastion.state.host import StateHost
from bastion.state.remote import RemoteCounterStore

CAP = Cap("day:team", 10.0, 3600.0)


@pytest.fixture
async def host() -> AsyncIterator[StateHost]:
    d = tempfile.mkdtemp(prefix="shl-")
    h = StateHost(MemoryCounterStore(), os.path.join(d, "s.sock"))
    await h.start()
    try:
        yield h
    finally:
        await h.stop()
        shutil.rmtree(d, ignore_errors=True)


async def _ask(writer: asyncio.StreamWriter, reader: asyncio.StreamReader, *call: Any) -> Any:
    writer.write(frame([1, call[0], [encode(a) for a in call[1:]]]))
    (size,) = HEADER.unpack(await reader.readexactly(HEADER.size))
    answer = unframe(await reader.readexactly(size))
    assert answer[1] == 0, answer
    return decode(answer[2])


async def _dead_workers_frames(host: StateHost, pid: int, method: str) -> None:
    """A connection accepted, the death reported, then the dead worker's frames read."""
    reader, writer = await asyncio.open_unix_connection(host.path)
    await asyncio.sleep(0.05)  # accepted
    assert await host._drop_worker(pid) == 0  # nothing of it known yet
    await _ask(writer, reader, "hello", pid)
    granted = await _ask(writer, reader, method, "r1", [CAP], 4.0, 600.0)
    assert granted.ok
    writer.close()


async def _reserved(host: StateHost) -> float:
    for _ in range(100):
        await asyncio.sleep(0.01)
    return (await host.store.usage(CAP.key)).reserved


@pytest.mark.parametrize("method", ["reserve", "restore"])
async def test_holds_from_a_dead_workers_buffered_frames_are_released(
    host: StateHost, method: str
) -> None:
    await _dead_workers_frames(host, 301, method)
    assert await _reserved(host) == 0.0


async def test_a_reused_pid_connecting_after_the_report_keeps_its_holds(host: StateHost) -> None:
    await _dead_workers_frames(host, 302, "reserve")
    new = RemoteCounterStore(host.path, timeout_seconds=1.0)
    new._pid = 302  # the replacement, under the same pid, connects after the report
    try:
        assert (await new.reserve("n1", [CAP], 1.0, 600.0)).ok
        assert await _reserved(host) == pytest.approx(1.0)
    finally:
        await new.close()


@settings(max_examples=30, deadline=None)
@given(before=st.lists(st.booleans(), min_size=1, max_size=4))
def test_only_connections_accepted_before_the_report_are_the_dead_workers(
    before: list[bool],
) -> None:
    """Connections naming one pid, each accepted before or after its death was reported: the
    holds of the ones before are released when they close, the others' kept."""

    async def run() -> None:
        d = tempfile.mkdtemp(prefix="shl-")
        h = StateHost(MemoryCounterStore(), os.path.join(d, "s.sock"))
        await h.start()
        try:
            early = []
            for i, b in enumerate(before):
                if b:
                    early.append((i, *await asyncio.open_unix_connection(h.path)))
            await asyncio.sleep(0.05)
            await h._drop_worker(401)
            conns = list(early)
            for i, b in enumerate(before):
                if not b:
                    conns.append((i, *await asyncio.open_unix_connection(h.path)))
            for i, reader, writer in conns:
                await _ask(writer, reader, "hello", 401)
                assert (await _ask(writer, reader, "reserve", f"r{i}", [CAP], 1.0, 600.0)).ok
            for _, _, writer in early:
                writer.close()
            assert await _reserved(h) == pytest.approx(float(before.count(False)))
            for _, _, writer in conns:
                writer.close()
        finally:
            await h.stop()
            shutil.rmtree(d, ignore_errors=True)

    asyncio.run(run())

"""The embedded store's SQLite file: a restart keeps today's spend, counters, flags and keys."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from bastion.state import Cap, IdemOutcome, MemoryCounterStore, Usage

CAP = Cap("spend:2025-06-01:global", 10.0, 3600)


async def test_close_and_reopen_keeps_what_a_restart_must_not_reset(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    first = MemoryCounterStore(path)
    assert (await first.reserve("a", [CAP], 2.0, 60)).ok
    assert await first.settle("a", 1.5)
    assert (await first.reserve("in-flight", [CAP], 3.0, 60)).ok
    await first.incr("conv:c1:tokens", 1200.0, 3600)
    await first.set_flag("kill:global", "on", {"by": "ops"})
    await first.set_flag("kill:old", None, {"by": "ops", "note": "cleared"})
    await first.idem_begin("req:1", "fp", 3600, 30)
    await first.idem_complete("req:1", "fp", b"stored", 3600)
    await first.idem_begin("req:2", "fp", 3600, 30)
    await first.take("rl:user", 1.0, 5.0, cost=5.0)
    await first.close()

    second = MemoryCounterStore(path)
    try:
        # The in-flight reservation died with the process, as an expired lease would.
        assert await second.usage(CAP.key) == Usage(1.5, 0.0)
        assert await second.get("conv:c1:tokens") == 1200.0
        assert await second.get_flags("kill:") == {"kill:global": "on"}
        assert await second.flag_meta("kill:old") == {"by": "ops", "note": "cleared"}
        done = await second.idem_begin("req:1", "fp", 3600, 30)
        assert (done.outcome, done.response) == (IdemOutcome.DONE, b"stored")
        assert (await second.idem_begin("req:2", "fp", 3600, 30)).outcome is (
            IdemOutcome.IN_PROGRESS
        )
        assert not (await second.reserve("b", [CAP], 9.0, 60)).ok
        assert (await second.take("rl:user", 1.0, 5.0, cost=5.0)).allowed  # buckets refill
    finally:
        await second.close()


async def test_changes_reach_the_file_within_the_flush_interval_without_close(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    store = MemoryCounterStore(str(path), flush_interval=0.1)
    try:
        assert (await store.reserve("a", [CAP], 1.0, 60)).ok
        assert await store.settle("a", 0.75)
        await store.incr("calls:day", 3.0, 3600)
        await asyncio.sleep(0.4)
        with sqlite3.connect(path) as conn:  # what a crash right now would leave
            assert conn.execute("SELECT settled FROM caps").fetchall() == [(0.75,)]
            assert conn.execute("SELECT key, value FROM counters").fetchall() == [
                ("calls:day", 3.0)
            ]
    finally:
        await store.close()


async def test_expired_entries_are_not_loaded(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    first = MemoryCounterStore(path)
    await first.incr("short", 1.0, 0.2)
    await first.incr("long", 1.0, 3600)
    await first.close()
    await asyncio.sleep(0.3)
    second = MemoryCounterStore(path)
    try:
        assert await second.get("short") == 0.0
        assert await second.get("long") == 1.0
    finally:
        await second.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT key FROM counters").fetchall() == [("long",)]


async def test_a_cleared_key_is_deleted_from_the_file(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    first = MemoryCounterStore(path)
    await first.idem_begin("req:1", "fp", 3600, 30)
    await first.close()
    second = MemoryCounterStore(path)
    assert await second.idem_abandon("req:1")
    await second.close()
    third = MemoryCounterStore(path)
    try:
        assert (await third.idem_begin("req:1", "fp", 3600, 30)).outcome is IdemOutcome.NEW
    finally:
        await third.close()

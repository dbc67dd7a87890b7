"""The flag poll of the embedded state file (one statement: version joined with the rows).

Whatever another connection does to the flags table (the CLI's plain sqlite3, another
gateway process's store), the next poll returns exactly the table, including an empty one
after the last row is deleted; with nothing committed elsewhere it returns None.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import aiosqlite
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.state import MemoryCounterStore
from bastion.state._flag_file import FlagFile

KEYS = ("kill:global", "kill:feature:a", "kill:key:k1")


def _table(path: Path) -> list[tuple[str, str | None, bytes]]:
    with sqlite3.connect(path) as db:
        return sorted(db.execute("SELECT key, value, meta FROM flags").fetchall())


async def test_a_poll_returns_none_until_another_connection_commits_then_the_table(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    store = MemoryCounterStore(str(path))
    await store.set_flag("kill:global", "on", {"who": "a"})  # creates the file and table
    flags = FlagFile(str(path))
    try:
        assert await flags.open() == [("kill:global", "on", b'{"who":"a"}')]
        assert await flags.changed() is None
        await flags.write("kill:key:k1", "on", b"{}")  # its own write: no re-read
        assert await flags.changed() is None
        with sqlite3.connect(path) as db:  # the CLI: another connection
            db.execute("DELETE FROM flags")
        assert await flags.changed() == []  # the table emptied: [] (clear all), not None
        assert await flags.changed() is None
        with sqlite3.connect(path) as db:
            db.execute("INSERT INTO flags VALUES ('kill:feature:a', NULL, x'7b7d')")
        assert await flags.changed() == [("kill:feature:a", None, b"{}")]
    finally:
        await flags.close()
        await store.close()


OPS = st.lists(
    st.tuples(
        st.sampled_from(("store", "other", "cli", "cli_delete")),
        st.sampled_from(KEYS),
        st.booleans(),
        st.text(max_size=8),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS)
def test_every_writer_is_seen_exactly_by_the_next_read(
    ops: list[tuple[str, str, bool, str]],
) -> None:
    async def run(path: Path) -> None:
        mine, other = MemoryCounterStore(str(path)), MemoryCounterStore(str(path))
        await mine.get_flags()
        await other.get_flags()
        try:
            for who, key, on, note in ops:
                meta = {"who": who, "note": note}
                if who in ("store", "other"):
                    await (mine if who == "store" else other).set_flag(
                        key, "on" if on else None, meta
                    )
                else:
                    with sqlite3.connect(path) as db:
                        if who == "cli_delete":
                            db.execute("DELETE FROM flags WHERE key = ?", (key,))
                        else:
                            db.execute(
                                "INSERT OR REPLACE INTO flags VALUES (?, ?, ?)",
                                (key, "on" if on else None, orjson.dumps(meta)),
                            )
                table = _table(path)
                want = {k: v for k, v, _ in table if v is not None}
                assert await mine.get_flags("kill:") == want
                assert await other.get_flags("kill:") == want
                for k, _, raw in table:
                    assert await mine.flag_meta(k) == orjson.loads(raw)
        finally:
            await mine.close()
            await other.close()

    with tempfile.TemporaryDirectory() as d:
        asyncio.run(run(Path(d) / "state.db"))


async def test_a_poll_is_one_trip_to_the_connection_thread_changed_or_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The point of the single statement: an idle poll and a re-read each cost one trip
    (the pragma-then-select form took two and four), so the kill switch's poll stays cheap."""
    path = tmp_path / "state.db"
    store = MemoryCounterStore(str(path))
    await store.set_flag("kill:global", "on", {})
    flags = FlagFile(str(path))
    trips: list[object] = []
    real = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        trips.append(fn)
        return await real(self, fn, *args, **kwargs)

    try:
        await flags.open()
        monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
        assert await flags.changed() is None
        assert len(trips) == 1
        with sqlite3.connect(path) as db:
            db.execute("UPDATE flags SET value = NULL")
        assert await flags.changed() == [("kill:global", None, b"{}")]
        assert len(trips) == 2
    finally:
        monkeypatch.undo()
        await flags.close()
        await store.close()

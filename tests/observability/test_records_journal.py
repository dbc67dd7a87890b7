"""The record journal: what a killed process had queued is replayed exactly once by the next
one, a live process's journal is never taken, and the journal shrinks as records land."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest
from tests.observability._records_support import call

from bastion.observability.journal import Journal
from bastion.observability.recorder import Recorder
from bastion.store import LedgerEntry, open_store


def _journal_files(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir()) if d.exists() else []


async def test_the_journal_is_trimmed_as_records_land_and_removed_on_close(
    tmp_path: Path,
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'r.db'}")
    await store.migrate()
    rec = Recorder(store, tmp_path / "spill.jsonl", journal_segment_bytes=4096)
    jdir = rec.journal_dir
    assert jdir is not None
    for i in range(40):  # ~300 bytes a line: several segments
        rec.submit(call(f"r{i}", input_text="x" * 100))
    segments = [p for p in _journal_files(jdir) if p.suffix == ".jsonl"]
    assert len(segments) >= 3
    lines = sum(len(p.read_bytes().splitlines()) for p in segments)
    assert lines == 40
    await rec.flush()
    left = [p for p in _journal_files(jdir) if p.suffix == ".jsonl"]
    assert all(p.stat().st_size == 0 for p in left) and len(left) <= 1
    await rec.aclose()
    assert _journal_files(jdir) == []
    assert len(await store.recent_calls(100)) == 40
    await store.close()


async def test_a_spilled_record_is_released_from_the_journal(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'r.db'}")
    await store.migrate()
    await store.close()  # closed: every write fails as an outage
    rec = Recorder(store, tmp_path / "spill.jsonl")
    rec.submit(call("r1"))
    await rec.flush()
    assert rec.stats.spilled == 1
    assert rec._journal is not None and rec._journal.outstanding == 0


def test_a_live_process_journal_is_not_adopted(tmp_path: Path) -> None:
    live = Journal(tmp_path / "j")
    live.append(b'{"call": null}\n')
    other = Journal(tmp_path / "j")
    taken: list[bytes] = []
    assert other.adopt_orphans(taken.extend) == 0 and taken == []
    assert any(p.suffix == ".jsonl" for p in (tmp_path / "j").iterdir())
    live.close()


def test_adoption_hands_lines_on_before_deleting_them(tmp_path: Path) -> None:
    d = tmp_path / "j"
    d.mkdir()
    (d / "123-dead.lock").write_bytes(b"")
    (d / "123-dead.0.jsonl").write_bytes(b"a\nb\n")
    (d / "123-dead.1.jsonl").write_bytes(b"c\n")

    def failing_sink(lines: object) -> None:
        raise OSError("disk full")

    j = Journal(d)
    with pytest.raises(OSError):
        j.adopt_orphans(failing_sink)
    assert (d / "123-dead.0.jsonl").exists()  # not handed on: kept
    got: list[bytes] = []
    assert j.adopt_orphans(got.extend) == 3
    assert got == [b"a\n", b"b\n", b"c\n"] and list(d.iterdir()) == []


CRASHER = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from bastion.observability.recorder import Recorder
    from bastion.store import CallRecord, LedgerEntry, open_store

    async def main(db, spill):
        store = open_store("sqlite:///" + db)
        await store.migrate()
        rec = Recorder(store, spill)
        def sub(i):
            rid = f"k{i}"
            rec.submit(
                CallRecord(request_id=rid, trace_id="t", ts=1.0, api_format="openai",
                           requested_model="m", user_id="u\\x00" + "x" * 9000),
                LedgerEntry(request_id=rid, ts=1.0, day="2024-01-01", model="m", cost_usd=0.5),
            )
        for i in range(20):
            sub(i)
        await rec.flush()          # these 20 are in the store (and still in the journal file)
        for i in range(20, 50):
            sub(i)                 # these 30 are only queued in memory
        os.kill(os.getpid(), signal.SIGKILL)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


async def test_records_queued_by_a_killed_process_are_replayed_exactly_once(
    tmp_path: Path,
) -> None:
    db, spill = tmp_path / "r.db", tmp_path / "spill.jsonl"
    proc = subprocess.run(
        [sys.executable, "-c", CRASHER, str(db), str(spill)], capture_output=True, timeout=60
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    store = open_store(f"sqlite:///{db}")
    await store.migrate()
    assert len(await store.recent_calls(100)) == 20  # the 30 others died with the process
    rec = Recorder(store, spill, retry_interval=0.05)
    rec.start()
    try:
        for _ in range(200):
            if len(await store.recent_calls(100)) == 50 and not spill.exists():
                break
            await asyncio.sleep(0.05)
        calls = await store.recent_calls(100)
        assert sorted(c.request_id for c in calls) == sorted(f"k{i}" for i in range(50))
        assert all("\x00" not in (c.user_id or "") for c in calls)
        assert await store.spend_by_day("2024-01-01") == {None: 25.0}  # 50 x 0.5, none twice
        assert rec.stats.adopted >= 30
    finally:
        await rec.aclose()
        await store.close()
    jdir = spill.with_suffix(".journal")
    assert _journal_files(jdir) == []


def test_the_ledger_entry_is_journaled_with_its_call(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'r.db'}")
    rec = Recorder(store, tmp_path / "spill.jsonl")
    rec.submit(
        call("r1"), LedgerEntry(request_id="r1", ts=1.0, day="2024-01-01", model="m", cost_usd=1)
    )
    assert rec.journal_dir is not None
    (seg,) = [p for p in rec.journal_dir.iterdir() if p.suffix == ".jsonl"]
    obj = orjson.loads(seg.read_bytes())
    assert obj["call"]["request_id"] == "r1" and obj["ledger"]["cost_usd"] == 1

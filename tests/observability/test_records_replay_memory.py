"""Replaying a spill file takes memory for one batch, not for the file.

A long store outage can leave a spill file of any size; replay used to read it whole and
split it into a list of lines (twice the file in memory at once: 263 MB of RSS after 40,000
spilled records in `bench/startup.py`'s soak). Now it reads a batch of lines at a time.
Measured with tracemalloc over a replay of a file ~40x the batch: the peak stays a small
share of the file, every record lands once, and a store that goes away mid-replay gets the
rest of the file put back, streamed the same way.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import orjson
from tests.observability._records_support import FlakyStore, call, down_after

from bastion.observability.recorder import Recorder
from bastion.store import open_store

BODY = "x" * 2000  # a record of ~2.5 KB on its line
N = 4000


def write_spill(path: Path) -> int:
    with path.open("wb") as f:
        for i in range(N):
            rec = orjson.loads(orjson.dumps(call(f"r{i:05d}", input_text=BODY)))
            f.write(orjson.dumps({"call": rec, "ledger": None}) + b"\n")
            if i % 500 == 0:
                f.write(b"\n")  # blank lines are skipped, as before
    return path.stat().st_size


async def test_replay_memory_is_a_batch_not_the_file(tmp_path: Path) -> None:
    store = FlakyStore(open_store(f"sqlite:///{tmp_path / 'r.db'}"))
    await store.inner.migrate()
    spill = tmp_path / "spill.jsonl"
    size = write_spill(spill)
    rec = Recorder(store, spill, batch_size=100, journal=False)  # type: ignore[arg-type]
    try:
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            landed = await rec.replay()
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
        assert landed == N
        assert len(await store.inner.recent_calls(N + 10)) == N
        assert not spill.exists()
        # reading the file whole peaked above twice its size; 100 lines are ~1/40 of it
        assert peak < size / 4, (peak, size)
    finally:  # a store left open keeps its thread, and the test process, alive
        await rec.aclose()
        await store.inner.close()


async def test_an_outage_mid_replay_puts_back_the_rest_of_a_big_file(tmp_path: Path) -> None:
    store = FlakyStore(open_store(f"sqlite:///{tmp_path / 'r.db'}"))
    await store.inner.migrate()
    spill = tmp_path / "spill.jsonl"
    write_spill(spill)
    rec = Recorder(store, spill, batch_size=100, journal=False)  # type: ignore[arg-type]
    down_after(store, 7)
    try:
        first = await rec.replay()
        assert 0 < first < N
        store.down = False
        second = await rec.replay()
        ids = [c.request_id for c in await store.inner.recent_calls(N + 10)]
        assert first + second == N and sorted(ids) == [f"r{i:05d}" for i in range(N)]
    finally:
        await rec.aclose()
        await store.inner.close()

"""Overload: the record queue stays bounded, the overflow goes to the spill file in batches, and
after replay every record is in the store exactly once."""

from __future__ import annotations

import time
from pathlib import Path

from bastion.observability.recorder import Recorder
from bastion.store import CallRecord, open_store


async def test_overflow_is_bounded_spilled_and_replayed_without_loss(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'r.db'}")
    await store.migrate()
    rec = Recorder(store, tmp_path / "spill.jsonl", max_queue=10, batch_size=5)
    try:
        for i in range(300):  # a burst with no chance for the writer to run
            rec.submit(
                CallRecord(
                    request_id=f"r{i}",
                    trace_id="t",
                    ts=time.time(),
                    api_format="openai",
                    requested_model="m",
                )
            )
            assert rec.pending <= 10 + 5 * 4
        assert rec.stats.spilled > 0
        await rec.flush()
        assert await rec.replay() > 0
        rows = await store.recent_calls(1000)
        assert len(rows) == 300 and len({r.request_id for r in rows}) == 300
        assert rec.stats.dropped == 0
    finally:
        await store.close()

"""``Recorder.flush`` returns only when every record submitted before it is written.

The background task takes a batch off the queue and then awaits the store; a ``flush`` called
meanwhile found the queue empty and returned at once, so a caller that read the store next
missed a record it had just submitted (the hedging test lost that race about one run in
four). Here the store's insert is held open on purpose while the background task writes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from tests.observability._records_support import FlakyStore, call

from bastion.observability.recorder import Recorder
from bastion.store import CallRecord, open_store


async def test_flush_waits_for_the_batch_the_background_task_is_writing(tmp_path: Path) -> None:
    store = FlakyStore(open_store(f"sqlite:///{tmp_path / 'r.db'}"))
    await store.inner.migrate()
    real = store.inner.insert_calls
    entered, release = asyncio.Event(), asyncio.Event()

    async def held_insert(records: Sequence[CallRecord]) -> int:
        entered.set()
        await release.wait()
        return await real(records)

    store.inner.insert_calls = held_insert  # type: ignore[method-assign]
    rec = Recorder(store, tmp_path / "spill.jsonl", batch_size=1, flush_interval=0.01)  # type: ignore[arg-type]
    rec.start()
    try:
        rec.submit(call("r1"))
        await asyncio.wait_for(entered.wait(), 5)  # the background task is mid-write
        assert rec.pending == 0
        flushing = asyncio.ensure_future(rec.flush())
        await asyncio.sleep(0.1)
        assert not flushing.done()  # it waits for the write in flight
        release.set()
        await asyncio.wait_for(flushing, 5)
        assert [c.request_id for c in await store.inner.recent_calls(5)] == ["r1"]
    finally:
        release.set()
        await rec.aclose()
        await store.inner.close()

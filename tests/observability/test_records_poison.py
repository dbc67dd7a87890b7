"""A record the store refuses is isolated: its batch lands record by record, it is quarantined
with a logged reason, and a spill replay makes progress past it instead of retrying forever."""

from __future__ import annotations

import logging
from pathlib import Path

import asyncpg
import orjson
import pytest
from tests.observability._records_support import FlakyStore, call, down_after, quarantined
from tests.store.conftest import pg_schema

from bastion.observability.recorder import Recorder
from bastion.store import open_store


@pytest.fixture
async def flaky(tmp_path: Path) -> FlakyStore:
    inner = open_store(f"sqlite:///{tmp_path / 'r.db'}")
    await inner.migrate()
    return FlakyStore(inner)


async def _ids(store: FlakyStore) -> list[str]:
    return sorted(c.request_id for c in await store.inner.recent_calls(10_000))


async def test_one_refused_record_is_quarantined_and_the_rest_of_its_batch_lands(
    flaky: FlakyStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    flaky.refuse = lambda rid: rid == "r5"
    rec = Recorder(flaky, tmp_path / "spill.jsonl")  # type: ignore[arg-type]
    for i in range(10):
        rec.submit(call(f"r{i}"))
    with caplog.at_level(logging.WARNING, "bastion.recorder"):
        await rec.flush()
    assert await _ids(flaky) == sorted(f"r{i}" for i in range(10) if i != 5)
    (q,) = quarantined(rec.quarantine_path)
    assert q["call"]["request_id"] == "r5" and "injected refusal" in q["reason"]
    assert any("r5" in m and "quarantined" in m for m in caplog.messages)
    assert rec.stats.quarantined == 1 and rec.stats.written == 9 and rec.stats.spilled == 0
    assert not rec.spill_path.exists()
    await rec.aclose()
    await flaky.inner.close()


async def test_an_outage_keeps_every_record_and_quarantines_none(
    flaky: FlakyStore, tmp_path: Path
) -> None:
    rec = Recorder(flaky, tmp_path / "spill.jsonl")  # type: ignore[arg-type]
    flaky.down = True
    for i in range(7):
        rec.submit(call(f"r{i}"))
    await rec.flush()
    assert rec.stats.spilled == 7 and rec.stats.quarantined == 0
    assert await rec.replay() == 0  # still down: the spill file is kept as it is
    flaky.down = False
    assert await rec.replay() == 7
    assert await _ids(flaky) == [f"r{i}" for i in range(7)]
    assert not rec.spill_path.exists() and not quarantined(rec.quarantine_path)
    await rec.aclose()
    await flaky.inner.close()


async def test_a_failed_batch_is_retried_record_by_record_when_the_store_answers(
    flaky: FlakyStore, tmp_path: Path
) -> None:
    flaky.fail_batches = 1  # e.g. a deadlock or a driver hiccup: nothing wrong with any record
    rec = Recorder(flaky, tmp_path / "spill.jsonl")  # type: ignore[arg-type]
    for i in range(6):
        rec.submit(call(f"r{i}"))
    await rec.flush()
    assert await _ids(flaky) == [f"r{i}" for i in range(6)]
    assert rec.stats.quarantined == 0 and rec.stats.spilled == 0
    await rec.aclose()
    await flaky.inner.close()


async def test_replay_skips_what_it_cannot_write_logs_it_and_finishes(
    flaky: FlakyStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spill = tmp_path / "spill.jsonl"
    lines = [
        orjson.dumps({"call": orjson.loads(orjson.dumps(call(f"s{i}"))), "ledger": None})
        for i in range(5)
    ]
    lines.insert(2, b'{"call": {"request_id": "torn')  # a line torn by a crash mid-write
    lines.insert(4, b'{"call": {"unknown": 1}, "ledger": null}')
    spill.write_bytes(b"\n".join(lines) + b"\n")
    flaky.refuse = lambda rid: rid == "s3"
    rec = Recorder(flaky, spill)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, "bastion.recorder"):
        assert await rec.replay() == 4
    assert await _ids(flaky) == ["s0", "s1", "s2", "s4"]
    q = quarantined(rec.quarantine_path)
    assert len(q) == 3 and all(e["reason"] for e in q)
    assert [e["call"]["request_id"] for e in q if e.get("call")] == ["s3"]
    assert sum("raw" in e for e in q) == 2
    assert any("s3" in m for m in caplog.messages)
    assert sum("not a record" in m for m in caplog.messages) == 2
    assert not spill.exists() and not rec._spill.work.exists()
    assert await rec.replay() == 0  # nothing blocks a later round
    await rec.aclose()
    await flaky.inner.close()


async def test_replay_interrupted_by_an_outage_puts_back_only_what_is_left(
    flaky: FlakyStore, tmp_path: Path
) -> None:
    rec = Recorder(flaky, tmp_path / "spill.jsonl", batch_size=3)  # type: ignore[arg-type]
    flaky.down = True
    for i in range(9):
        rec.submit(call(f"r{i}"))
    await rec.flush()
    flaky.down = False
    down_after(flaky, 2)
    landed = await rec.replay()
    assert 0 < landed < 9
    flaky.down = False
    landed += await rec.replay()
    assert landed == 9 and await _ids(flaky) == [f"r{i}" for i in range(9)]
    await rec.aclose()
    await flaky.inner.close()


async def test_postgres_refusing_a_record_quarantines_only_that_record(tmp_path: Path) -> None:
    async with pg_schema() as url:
        store = open_store(url)
        await store.migrate()
        conn = await asyncpg.connect(url)
        await conn.execute("ALTER TABLE calls ADD CONSTRAINT no_poison CHECK (feature <> 'poison')")
        rec = Recorder(store, tmp_path / "spill.jsonl")
        try:
            for i in range(20):
                rec.submit(call(f"p{i}", feature="poison" if i in (3, 11) else "ok"))
            await rec.flush()
            rows = await conn.fetch("SELECT request_id FROM calls ORDER BY request_id")
            assert len(rows) == 18
            q = quarantined(rec.quarantine_path)
            assert sorted(e["call"]["request_id"] for e in q) == ["p11", "p3"]
            assert all("CheckViolation" in e["reason"] for e in q)
        finally:
            await rec.aclose()
            await conn.close()
            await store.close()

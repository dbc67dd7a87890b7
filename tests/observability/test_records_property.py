"""Property: whatever the records hold and however the store fails, after the recorder drains
every record is in the store exactly once or in the quarantine with a reason; none is lost and
none is duplicated.

Records carry random hostile text (NUL, lone surrogates, 8,000+ characters, any unicode) in ids,
texts and JSON flags; the real store (SQLite and PostgreSQL) sits behind a wrapper that goes down
(unreachable), fails whole batches, or refuses chosen records, between the recorder's writes.
"""

from __future__ import annotations

import asyncio
import operator
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.observability._records_support import FlakyStore, quarantined
from tests.store.conftest import PG_URL, with_search_path

from bastion.observability.recorder import Recorder
from bastion.store import CallRecord, LedgerEntry, open_store
from bastion.store.sanitize import sanitize_call

HOSTILE = st.one_of(
    st.text(alphabet=st.characters(categories=["Cs", "Cc", "L", "So", "Nd", "Zs"]), max_size=40),
    st.sampled_from(["\x00", "\ud800", "a\udfffb", "\ud83d\ude00", "x" * 8000, "漢" * 3000]),
    st.builds(
        operator.mul, st.sampled_from(["a", "\x00", "é", "\ud83d", "漢"]), st.integers(500, 9000)
    ),
)
JSONISH = st.one_of(HOSTILE, st.integers(-(2**80), 2**80), st.floats(), st.none(), st.booleans())


@dataclass
class Scenario:
    records: list[tuple[CallRecord, LedgerEntry | None]]
    refuse: set[int]
    steps: list[tuple[str, int]]
    batch_size: int
    max_queue: int


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    ex = uuid.uuid4().hex[:12]
    n = draw(st.integers(1, 20))
    records: list[tuple[CallRecord, LedgerEntry | None]] = []
    for i in range(n):
        suffix = draw(st.one_of(st.just(""), HOSTILE))
        rid = f"{ex}-{i}-{suffix}"
        call = CallRecord(
            request_id=rid,
            trace_id=ex,
            ts=1_700_000_000.0 + i,
            api_format="openai",
            requested_model="m",
            user_id=draw(st.none() | HOSTILE),
            feature=draw(st.none() | HOSTILE),
            conversation_id=draw(st.none() | HOSTILE),
            input_text=draw(st.none() | HOSTILE),
            output_text=draw(st.none() | HOSTILE),
            client_request_id=draw(st.none() | HOSTILE),
            flags=draw(st.dictionaries(HOSTILE, JSONISH, max_size=3)),
        )
        ledger = (
            LedgerEntry(request_id=rid, ts=1.0, day=ex, model=draw(HOSTILE), cost_usd=1.0)
            if draw(st.booleans())
            else None
        )
        records.append((call, ledger))
    refuse = draw(st.sets(st.integers(0, n - 1), max_size=3))
    ops = st.sampled_from(["down", "up", "fail_batch", "flush", "replay"])
    steps: list[tuple[str, int]] = []
    i = 0
    while i < n:
        k = draw(st.integers(1, n - i))
        steps.append(("submit", k))
        i += k
        steps.extend((op, 0) for op in draw(st.lists(ops, max_size=3)))
    return Scenario(records, refuse, steps, draw(st.integers(1, 8)), draw(st.integers(1, 30)))


async def run_scenario(url: str, sc: Scenario) -> None:
    inner = open_store(url)
    await inner.migrate()
    store = FlakyStore(inner)
    sanitized = [sanitize_call(c)[0].request_id for c, _ in sc.records]
    refused = {sanitized[i] for i in sc.refuse}
    store.refuse = lambda rid: rid in refused
    with tempfile.TemporaryDirectory() as tmp:
        rec = Recorder(
            store,  # type: ignore[arg-type]
            Path(tmp) / "spill.jsonl",
            batch_size=sc.batch_size,
            max_queue=sc.max_queue,
        )
        try:
            pos = 0
            for op, k in sc.steps:
                if op == "submit":
                    for call, ledger in sc.records[pos : pos + k]:
                        rec.submit(call, ledger)
                    pos += k
                elif op == "down":
                    store.down = True
                elif op == "up":
                    store.down = False
                elif op == "fail_batch":
                    store.fail_batches += 1
                elif op == "flush":
                    await rec.flush()
                else:
                    await rec.replay()
            store.down = False
            store.fail_batches = 0
            await rec.flush()
            for _ in range(5):
                if not rec._spill.exists():
                    break
                await rec.replay()
            assert not rec._spill.exists(), "the spill file was not fully replayed"
            assert rec._journal is not None and rec._journal.outstanding == 0
            q = quarantined(rec.quarantine_path)
        finally:
            await rec.aclose()
    ex = sc.records[0][0].trace_id
    stored = [c for c in await inner.get_calls_by_trace(ex)]
    spent = (await inner.spend_by_day(ex))[None]
    await inner.close()

    stored_ids = [c.request_id for c in stored]
    q_ids = [e["call"]["request_id"] for e in q]
    assert all(e["reason"] for e in q)
    assert len(stored_ids) == len(set(stored_ids)) and len(q_ids) == len(set(q_ids))
    assert set(stored_ids).isdisjoint(q_ids)
    assert set(q_ids) == refused
    assert set(stored_ids) == set(sanitized) - refused
    assert spent == sum(
        1.0 for i, (_, led) in enumerate(sc.records) if led is not None and i not in sc.refuse
    )
    for c in stored:
        for name in ("request_id", "user_id", "feature", "input_text", "client_request_id"):
            value = getattr(c, name)
            if value is not None:
                assert "\x00" not in value
                value.encode("utf-8")  # raises on a lone surrogate


def _settings(examples: int) -> Any:
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('prop') / 'r.db'}"


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    schema = f"bastion_test_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_URL, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE SCHEMA "{schema}"'))
    try:
        yield with_search_path(PG_URL, schema)
    finally:
        asyncio.run(admin(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


def test_no_record_is_lost_or_duplicated_on_sqlite(sqlite_url: str) -> None:
    @_settings(60)
    @given(sc=scenarios())
    def prop(sc: Scenario) -> None:
        asyncio.run(run_scenario(sqlite_url, sc))

    prop()


def test_no_record_is_lost_or_duplicated_on_postgres(pg_url: str) -> None:
    @_settings(30)
    @given(sc=scenarios())
    def prop(sc: Scenario) -> None:
        asyncio.run(run_scenario(pg_url, sc))

    prop()

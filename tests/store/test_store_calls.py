"""The call log: replay-safe batch inserts, trace lookup, and retention that deletes just enough."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from bastion.errors import StateUnavailable
from bastion.store import CallRecord, RecordStore

MakeCall = Callable[..., CallRecord]


async def test_call_record_round_trips_every_field(store: RecordStore, make_call: MakeCall) -> None:
    full = make_call("req-full")
    sparse = CallRecord(
        request_id="req-sparse",
        trace_id="trace-2",
        ts=1_700_000_001.5,
        api_format="openai",
        requested_model="gpt-4o-mini",
        status=502,
        error_type="upstream_error",
    )
    assert await store.insert_calls([full, sparse]) == 2

    assert await store.get_calls_by_trace("trace-1") == [full]
    assert await store.get_calls_by_trace("trace-2") == [sparse]


async def test_reinserting_known_request_ids_is_a_no_op(
    store: RecordStore, make_call: MakeCall
) -> None:
    first = [make_call(f"req-{i}", ts=1000.0 + i) for i in range(3)]
    assert await store.insert_calls(first) == 3

    # A replay after a crash resends old rows (with their own ts; PostgreSQL's key is
    # (request_id, ts) since the call table is partitioned by ts), possibly changed.
    replay = [make_call("req-1", ts=1001.0, output_text="CHANGED"), make_call("req-9", ts=2000.0)]
    assert await store.insert_calls(replay) == 1
    assert await store.insert_calls(replay) == 0

    calls = await store.get_calls_by_trace("trace-1")
    assert [c.request_id for c in calls] == ["req-0", "req-1", "req-2", "req-9"]
    assert calls[1].output_text == "hi there"


async def test_duplicates_inside_one_batch_keep_the_first(
    store: RecordStore, make_call: MakeCall
) -> None:
    batch = [make_call("req-a", output_text="first"), make_call("req-a", output_text="second")]
    assert await store.insert_calls(batch) == 1
    assert [c.output_text for c in await store.get_calls_by_trace("trace-1")] == ["first"]


async def test_empty_batch_writes_nothing(store: RecordStore) -> None:
    assert await store.insert_calls([]) == 0
    assert await store.recent_calls(10) == []


async def test_trace_lookup_returns_only_that_trace_oldest_first(
    store: RecordStore, make_call: MakeCall
) -> None:
    await store.insert_calls(
        [
            make_call("late", trace_id="t-a", ts=30.0),
            make_call("other", trace_id="t-b", ts=20.0),
            make_call("early", trace_id="t-a", ts=10.0),
        ]
    )
    assert [c.request_id for c in await store.get_calls_by_trace("t-a")] == ["early", "late"]
    assert await store.get_calls_by_trace("t-none") == []


async def test_recent_calls_are_newest_first_limited_and_filterable(
    store: RecordStore, make_call: MakeCall
) -> None:
    await store.insert_calls(
        [
            make_call("r1", ts=1.0, feature="chat"),
            make_call("r2", ts=2.0, feature="search"),
            make_call("r3", ts=3.0, feature="chat"),
            make_call("r4", ts=4.0, feature=None),
        ]
    )
    assert [c.request_id for c in await store.recent_calls(3)] == ["r4", "r3", "r2"]
    assert [c.request_id for c in await store.recent_calls(10, feature="chat")] == ["r3", "r1"]
    assert await store.recent_calls(0) == []


async def test_body_retention_clears_only_old_texts_and_keeps_metadata(
    store: RecordStore, make_call: MakeCall
) -> None:
    await store.insert_calls(
        [
            make_call("old-1", ts=100.0),
            make_call("old-2", ts=199.9, input_text=None, output_text="only output"),
            make_call("old-bare", ts=150.0, input_text=None, output_text=None),
            make_call("edge", ts=200.0),
            make_call("new", ts=300.0),
        ]
    )

    # Only rows that still had a body count; the cutoff itself is kept.
    assert await store.delete_call_bodies_before(200.0) == 2
    assert await store.delete_call_bodies_before(200.0) == 0

    by_id = {c.request_id: c for c in await store.recent_calls(10)}
    assert set(by_id) == {"old-1", "old-2", "old-bare", "edge", "new"}
    for rid in ("old-1", "old-2", "old-bare"):
        assert by_id[rid].input_text is None and by_id[rid].output_text is None
    assert by_id["old-1"].cost_usd == 0.00123 and by_id["old-1"].flags == make_call("x").flags
    for rid in ("edge", "new"):
        assert by_id[rid].input_text == "hello [EMAIL]" and by_id[rid].output_text == "hi there"


async def test_call_retention_deletes_exactly_the_old_rows_and_spares_the_ledger(
    store: RecordStore, make_call: MakeCall, make_entry: Callable[..., Any]
) -> None:
    await store.insert_calls([make_call(f"c{i}", ts=float(i)) for i in range(10)])
    await store.insert_ledger([make_entry("c1", 1.0, ts=1.0)])

    assert await store.delete_calls_before(4.0) == 4
    assert await store.delete_calls_before(4.0) == 0

    remaining = sorted(c.request_id for c in await store.recent_calls(100))
    assert remaining == [f"c{i}" for i in range(4, 10)]
    assert await store.spend_by_day("2023-11-14") == {None: 1.0}

    # Deleted request_ids may be written again (a replay older than retention is not special).
    assert await store.insert_calls([make_call("c0", ts=0.0)]) == 1


async def test_json_flags_survive_odd_values(store: RecordStore, make_call: MakeCall) -> None:
    record = make_call("odd", flags={"nested": {"list": [1, "two", None]}, "unicode": "é ✓"})
    await store.insert_calls([record])
    (got,) = await store.get_calls_by_trace("trace-1")
    assert got.flags == {"nested": {"list": [1, "two", None]}, "unicode": "é ✓"}


async def test_closed_store_refuses_with_state_unavailable(
    backend: Any, make_call: MakeCall
) -> None:
    from bastion.store import open_store

    store = open_store(backend.url)
    await store.migrate()
    await store.close()
    with pytest.raises(StateUnavailable):
        await store.insert_calls([make_call("late")])

"""The record writer's per-record work made cheaper (issue 16) decides and writes exactly as the
field-by-field code it replaces: the whole-record sanitiser check never passes a record a
per-field check would stop, and rows are the rows the old flattening built."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.findings import Finding
from bastion.store import CallRecord, LedgerEntry
from bastion.store._rows import CALL_COLUMNS, LEDGER_COLUMNS, call_to_row, ledger_to_row
from bastion.store.sanitize import (
    _CALL_CHECKS,
    _CALL_OK,
    _LEDGER_CHECKS,
    _LEDGER_OK,
    sanitize_call,
    sanitize_entry,
)

FINDING = Finding(
    detector="pii", kind="pii", action="redacted", where="request", version="1", counts=(("x", 1),)
)
TEXT = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["nul\x00", "lone \ud800", "x" * 513, "x" * 512, "é ✓", "", "\udc00é"]),
)
ANY = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**31 - 1, 2**31, -(2**31), 2**63 - 1, 2**63]),
    st.floats(),
    TEXT,
)
JSON = st.one_of(
    st.dictionaries(st.text(max_size=5), st.one_of(st.floats(), TEXT, st.integers()), max_size=3),
    ANY,
)
OPTIONAL: dict[str, Any] = {
    "key_id": ANY,
    "user_id": ANY,
    "feature": ANY,
    "input_text": ANY,
    "output_text": ANY,
    "stream": ANY,
    "status": ANY,
    "input_tokens": ANY,
    "cost_usd": ANY,
    "latency_ms": ANY,
    "ttft_ms": ANY,
    "attempts": ANY,
    "hedged": ANY,
    "flags": JSON,
    "stages": JSON,
    "findings": st.sampled_from([(), (FINDING,), [FINDING.as_dict()], "junk"]),
}


@st.composite
def calls(draw: st.DrawFn) -> CallRecord:
    values: dict[str, Any] = {
        "request_id": draw(TEXT),
        "trace_id": draw(TEXT),
        "ts": draw(st.one_of(st.floats(), st.integers(min_value=0, max_value=2**40))),
        "api_format": "openai",
        "requested_model": draw(TEXT),
    }
    for name, strat in OPTIONAL.items():
        if draw(st.booleans()):
            values[name] = draw(strat)
    return CallRecord(**values)


def _clean_call(**kw: Any) -> CallRecord:
    base: dict[str, Any] = {
        "request_id": "req_" + "a" * 32,
        "trace_id": "b" * 32,
        "ts": 1_700_000_000.5,
        "api_format": "openai",
        "requested_model": "gpt-4.1",
        "user_id": "user-1",
        "input_text": "Bonjour, ça va ?",
        "output_text": "Oui ✓",
        "input_tokens": 5,
        "cost_usd": 0.001,
        "ttft_ms": 3.5,
        "attempts": 1,
        "flags": {"reserved_usd": 0.002},
        "stages": {"auth": 0.1},
        "findings": (FINDING,),
    }
    return CallRecord(**(base | kw))


@settings(max_examples=500, deadline=None)
@given(record=calls())
def test_the_whole_record_check_passes_only_records_every_field_check_passes(
    record: CallRecord,
) -> None:
    if _CALL_OK(record):
        assert all(ok(getattr(record, name)) for name, ok in _CALL_CHECKS)
        assert sanitize_call(record) == (record, ())


@settings(max_examples=300, deadline=None)
@given(
    request_id=TEXT,
    ts=st.one_of(st.floats(), st.integers(min_value=0, max_value=2**40)),
    cost=ANY,
    tokens=ANY,
    user=ANY,
)
def test_the_whole_entry_check_passes_only_entries_every_field_check_passes(
    request_id: str, ts: float, cost: Any, tokens: Any, user: Any
) -> None:
    entry = LedgerEntry(
        request_id=request_id,
        ts=ts,
        day="2026-01-01",
        model="m",
        user_id=user,
        input_tokens=tokens,
        cost_usd=cost,
    )
    if _LEDGER_OK(entry):
        assert all(ok(getattr(entry, name)) for name, ok in _LEDGER_CHECKS)


def test_clean_records_take_the_one_test_path_and_each_bad_field_leaves_it() -> None:
    record = _clean_call()
    assert _CALL_OK(record)  # the common case pays one check, not one per field
    assert sanitize_call(record)[0] is record
    bad = {
        "user_id": "a\x00b",
        "output_text": "lone \ud800",
        "trace_id": "x" * 513,
        "status": 2**31,
        "input_tokens": 2**63,
        "cost_usd": float("nan"),
        "ttft_ms": float("inf"),
        "flags": {"k": "\x00"},
    }
    for name, value in bad.items():
        odd = dataclasses.replace(record, **{name: value})
        assert not _CALL_OK(odd), name
        fixed, changed = sanitize_call(odd)
        assert name in changed and fixed is not odd
    entry = LedgerEntry(request_id="r", ts=1.0, day="2026-01-01", model="m", cost_usd=0.5)
    assert _LEDGER_OK(entry) and sanitize_entry(entry)[0] is entry


def _old_call_row(record: CallRecord) -> tuple[Any, ...]:
    """The flattening before (the specification), verbatim."""

    def dump(value: Any) -> str:
        return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()

    row = [getattr(record, name) for name in CALL_COLUMNS]
    row[CALL_COLUMNS.index("flags")] = dump(record.flags)
    row[CALL_COLUMNS.index("stages")] = dump(record.stages)
    row[CALL_COLUMNS.index("findings")] = dump([f.as_dict() for f in record.findings])
    return tuple(row)


@settings(max_examples=300, deadline=None)
@given(record=calls())
def test_rows_are_the_rows_the_field_by_field_flattening_built(record: CallRecord) -> None:
    record = sanitize_call(record)[0]  # what the writer hands the store
    assert repr(call_to_row(record)) == repr(_old_call_row(record))  # repr: NaN != NaN
    entry = LedgerEntry(request_id=record.request_id, ts=1.0, day="d", model="m")
    assert ledger_to_row(entry) == tuple(getattr(entry, n) for n in LEDGER_COLUMNS)

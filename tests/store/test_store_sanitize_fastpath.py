"""The sanitiser's fast path (one cheap test per field) decides exactly as the full field-by-field
repair does: any record it passes untouched, the full path would leave untouched too."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.findings import Finding
from bastion.store import CallRecord, LedgerEntry
from bastion.store.sanitize import (
    _CALL_KINDS,
    _LEDGER_KINDS,
    _sanitize,
    sanitize_call,
    sanitize_entry,
)

ALWAYS_SLOW = (("request_id", lambda _v: False),)

TEXT = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["nul\x00", "lone \ud800", "x" * 600, "é ✓", ""]),
)
ANY = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    TEXT,
)
JSON = st.one_of(
    st.dictionaries(st.text(max_size=5), st.one_of(st.floats(), TEXT, st.integers()), max_size=3),
    ANY,
)
FINDING = Finding(detector="pii", kind="pii", action="redacted", where="request", version="1")


@st.composite
def calls(draw: st.DrawFn) -> CallRecord:
    values: dict[str, Any] = {
        "request_id": draw(TEXT),
        "trace_id": draw(TEXT),
        "ts": draw(st.one_of(st.floats(), st.integers(min_value=0, max_value=2**40))),
        "api_format": "openai",
        "requested_model": draw(TEXT),
    }
    optional = {
        "key_id": ANY,
        "user_id": ANY,
        "input_text": ANY,
        "output_text": ANY,
        "stream": ANY,
        "status": ANY,
        "input_tokens": ANY,
        "cost_usd": ANY,
        "ttft_ms": ANY,
        "attempts": ANY,
        "flags": JSON,
        "stages": JSON,
        "findings": st.sampled_from([(), (FINDING,), [FINDING.as_dict()], "junk"]),
    }
    for name, strat in optional.items():
        if draw(st.booleans()):
            values[name] = draw(strat)
    return CallRecord(**values)


@settings(max_examples=400, deadline=None)
@given(record=calls())
def test_fast_and_full_paths_agree_on_call_records(record: CallRecord) -> None:
    fast = sanitize_call(record)
    full = _sanitize(record, _CALL_KINDS, ALWAYS_SLOW)
    assert fast[1] == full[1]
    assert repr(fast[0]) == repr(full[0])  # repr: NaN != NaN, but prints the same
    if not full[1]:
        assert fast[0] is record  # a clean record is not copied


@settings(max_examples=200, deadline=None)
@given(
    request_id=TEXT,
    ts=st.one_of(st.floats(), st.integers(min_value=0, max_value=2**40)),
    cost=ANY,
    tokens=ANY,
    user=ANY,
)
def test_fast_and_full_paths_agree_on_ledger_entries(
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
    fast = sanitize_entry(entry)
    full = _sanitize(entry, _LEDGER_KINDS, ALWAYS_SLOW)
    assert fast[1] == full[1]
    assert repr(fast[0]) == repr(full[0])

"""Hostile field values: whatever a client put in a record, its sanitised form lands on both
backends, and sanitising never merges two records or touches a clean one."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.store.conftest import pg_schema

from bastion.store import CallRecord, LedgerEntry, RecordStore, open_store
from bastion.store.sanitize import ID_MAX_CHARS, SANITIZED_FLAG, sanitize_call, sanitize_entry

LONG = "x" * 8000
HOSTILE = [
    "nul\x00inside",
    "\x00",
    "lone \ud800 high",
    "lone \udfff low",
    "pair \ud83d\ude00 as two code points",
    "é ✓ 漢字 🙂",
    LONG,
    "".join(chr(0x4E00 + i % 2000) for i in range(8000)),  # 24,000 UTF-8 bytes
]


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RecordStore]:
    if request.param == "sqlite":
        s = open_store(f"sqlite:///{tmp_path / 'r.db'}")
        await s.migrate()
        yield s
        await s.close()
    else:
        async with pg_schema() as url:
            s = open_store(url)
            await s.migrate()
            yield s
            await s.close()


def _call(rid: str, text: str, **kw: object) -> CallRecord:
    values: dict[str, object] = {
        "request_id": rid,
        "trace_id": "t-" + rid[:20],
        "ts": 1_700_000_000.0,
        "api_format": "openai",
        "requested_model": text,
        "user_id": text,
        "feature": text,
        "conversation_id": text,
        "input_text": text,
        "output_text": text,
        "client_request_id": text,
        "flags": {"text": text, text[:50]: [text, 1, None]},
    }
    values.update(kw)
    return CallRecord(**values)  # type: ignore[arg-type]


def test_a_clean_record_is_returned_unchanged() -> None:
    rec = _call("req_1", "plain text é ✓")
    assert sanitize_call(rec) == (rec, ())
    assert sanitize_call(rec)[0] is rec


def test_every_hostile_text_is_made_safe_and_the_record_says_so() -> None:
    for text in HOSTILE:
        fixed, changed = sanitize_call(_call("req_1", text))
        for name in ("user_id", "feature", "conversation_id", "input_text", "client_request_id"):
            value = getattr(fixed, name)
            assert "\x00" not in value
            value.encode("utf-8")  # no lone surrogate left
            limit = ID_MAX_CHARS if name != "input_text" else 1_000_000
            assert len(value) <= limit
        if text not in ("é ✓ 漢字 🙂",):
            assert changed and fixed.flags[SANITIZED_FLAG] == list(changed)


def test_a_surrogate_pair_is_joined_and_a_lone_one_replaced() -> None:
    fixed, _ = sanitize_call(_call("req_1", "a\ud83d\ude00b\ud800c"))
    assert fixed.user_id == "a😀b\ufffdc"


def test_hostile_request_ids_stay_distinct() -> None:
    ids = [LONG + "a", LONG + "b", "same\x00", "same", "\ud800", "\udfff"]
    fixed = [sanitize_call(_call(i, "t"))[0].request_id for i in ids]
    assert len(set(fixed)) == len(ids)
    assert all(len(i) <= ID_MAX_CHARS and "\x00" not in i for i in fixed)
    assert sanitize_call(_call(LONG + "a", "t"))[0].request_id == fixed[0]  # deterministic


def test_numbers_every_backend_refuses_are_made_safe() -> None:
    rec = _call(
        "req_n",
        "t",
        ts=math.nan,
        cost_usd=math.inf,
        ttft_ms=math.nan,
        input_tokens=2**70,
        status=2**40,
        flags={"big": 2**80, "nan": math.nan, (1, 2): "tuple key"},
    )
    fixed, changed = sanitize_call(rec)
    assert fixed.ts == 0.0 and fixed.cost_usd == 0.0 and fixed.ttft_ms is None
    assert fixed.input_tokens == 2**63 - 1 and fixed.status == 2**31 - 1
    assert fixed.flags["big"] == str(2**80) and fixed.flags["nan"] is None
    assert {"ts", "cost_usd", "ttft_ms", "input_tokens", "status", "flags"} <= set(changed)
    entry, changed_l = sanitize_entry(
        LedgerEntry(request_id="req_n", ts=1.0, day="d\x00", model=LONG, cost_usd=math.nan)
    )
    assert entry.day == "d" and len(entry.model) == ID_MAX_CHARS and entry.cost_usd == 0.0
    assert set(changed_l) == {"day", "model", "cost_usd"}


async def test_sanitised_hostile_records_land_on_both_backends(store: RecordStore) -> None:
    records = [sanitize_call(_call(f"req_{i}", text))[0] for i, text in enumerate(HOSTILE)]
    records.append(sanitize_call(_call(LONG, "t"))[0])  # an 8,000-character id
    assert await store.insert_calls(records) == len(records)
    got = {r.request_id: r for r in await store.recent_calls(100)}
    assert set(got) == {r.request_id for r in records}
    for r in records:
        assert got[r.request_id] == r
    entries = [
        sanitize_entry(LedgerEntry(request_id=f"l{i}", ts=1.0, day="2024-01-01", model=t))[0]
        for i, t in enumerate(HOSTILE)
    ]
    assert await store.insert_ledger(entries) == len(entries)

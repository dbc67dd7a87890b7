"""The spend ledger: replay-safe inserts and per-day sums by group."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bastion.store import LedgerEntry, RecordStore

MakeEntry = Callable[..., LedgerEntry]


async def _seed(store: RecordStore, make_entry: MakeEntry) -> None:
    await store.insert_ledger(
        [
            make_entry("l1", 1.25, feature="chat", user_id="u1", key_id="k1", model="m-a"),
            make_entry("l2", 0.50, feature="chat", user_id="u2", key_id="k1", model="m-b"),
            make_entry("l3", 2.00, feature="search", user_id="u1", key_id="k2", model="m-a"),
            make_entry("l4", 0.25, feature=None, user_id=None, key_id=None, model="m-a"),
            make_entry("other-day", 100.0, day="2023-11-15", feature="chat"),
        ]
    )


async def test_total_spend_for_a_day(store: RecordStore, make_entry: MakeEntry) -> None:
    await _seed(store, make_entry)
    assert await store.spend_by_day("2023-11-14") == {None: pytest.approx(4.0)}
    assert await store.spend_by_day("2023-11-15") == {None: pytest.approx(100.0)}
    assert await store.spend_by_day("1999-01-01") == {None: 0.0}


@pytest.mark.parametrize(
    ("group_by", "expected"),
    [
        ("feature", {"chat": 1.75, "search": 2.0, None: 0.25}),
        ("user_id", {"u1": 3.25, "u2": 0.5, None: 0.25}),
        ("key_id", {"k1": 1.75, "k2": 2.0, None: 0.25}),
        ("model", {"m-a": 3.5, "m-b": 0.5}),
    ],
)
async def test_spend_sums_by_group(
    store: RecordStore, make_entry: MakeEntry, group_by: str, expected: dict[str | None, float]
) -> None:
    await _seed(store, make_entry)
    got = await store.spend_by_day("2023-11-14", group_by)  # type: ignore[arg-type]
    assert got == pytest.approx(expected)
    assert await store.spend_by_day("1999-01-01", group_by) == {}  # type: ignore[arg-type]


async def test_ledger_replay_never_double_counts(store: RecordStore, make_entry: MakeEntry) -> None:
    batch = [make_entry("x1", 1.0), make_entry("x2", 2.0), make_entry("x1", 50.0)]
    assert await store.insert_ledger(batch) == 2
    assert await store.insert_ledger(batch) == 0
    assert await store.insert_ledger([make_entry("x3", 4.0), make_entry("x2", 9.0)]) == 1
    assert await store.spend_by_day("2023-11-14") == {None: pytest.approx(7.0)}
    assert await store.insert_ledger([]) == 0


async def test_unknown_group_is_refused_before_reaching_sql(store: RecordStore) -> None:
    with pytest.raises(ValueError, match="group_by"):
        await store.spend_by_day("2023-11-14", "feature; DROP TABLE ledger")  # type: ignore[arg-type]

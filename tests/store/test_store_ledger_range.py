"""The spend ledger summed over a time range (the dashboard's range), on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.store import LedgerEntry, RecordStore

MakeEntry = Callable[..., LedgerEntry]
T0 = 1_700_000_000.0


async def test_range_sums_keep_entries_from_start_up_to_but_not_at_end(
    store: RecordStore, make_entry: MakeEntry
) -> None:
    await store.insert_ledger(
        [
            make_entry("before", 100.0, ts=T0 - 0.001),
            make_entry("at-start", 1.0, ts=T0, user_id="u1", key_id="k1", model="m-a"),
            make_entry("inside", 2.0, ts=T0 + 30, user_id=None, key_id="k2", model="m-b"),
            make_entry("no-feature", 4.0, ts=T0 + 59, feature=None, model="m-a"),
            make_entry("at-end", 1000.0, ts=T0 + 60),
        ]
    )
    assert await store.spend_between(T0, T0 + 60) == {None: pytest.approx(7.0)}
    assert await store.spend_between(T0, T0 + 60, "user_id") == pytest.approx(
        {"u1": 1.0, None: 2.0, "user-1": 4.0}
    )
    assert await store.spend_between(T0, T0 + 60, "model") == pytest.approx(
        {"m-a": 5.0, "m-b": 2.0}
    )
    assert await store.spend_between(T0, T0 + 60, "feature") == pytest.approx(
        {"chat": 3.0, None: 4.0}
    )
    # a day's entries outside the range do not count, whatever their ``day`` says
    assert await store.spend_between(T0 + 61, T0 + 3600) == {None: 0.0}
    assert await store.spend_between(T0 + 61, T0 + 3600, "key_id") == {}


async def test_range_group_is_refused_before_reaching_sql(store: RecordStore) -> None:
    with pytest.raises(ValueError, match="group_by"):
        await store.spend_between(0, 1, "model; DROP TABLE ledger")  # type: ignore[arg-type]


_RUN = itertools.count()
offsets = st.lists(
    st.tuples(st.integers(0, 3600), st.sampled_from(["k1", "k2", None]), st.integers(0, 10_000)),
    max_size=12,
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(entries=offsets, lo=st.integers(0, 3600), width=st.integers(0, 3600))
async def test_range_sum_is_the_sum_of_exactly_the_entries_in_range(
    store: RecordStore,
    make_entry: MakeEntry,
    entries: list[tuple[int, str | None, int]],
    lo: int,
    width: int,
) -> None:
    # each example writes into its own stretch of time, so examples sharing the store never mix
    run = next(_RUN)
    base = T0 + run * 10_000
    await store.insert_ledger(
        [
            make_entry(f"p{run}-{i}", cents / 100, ts=base + off, key_id=key)
            for i, (off, key, cents) in enumerate(entries)
        ]
    )
    start, end = base + lo, base + lo + width
    inside = [(key, cents / 100) for off, key, cents in entries if start <= base + off < end]
    total = await store.spend_between(start, end)
    assert total == {None: pytest.approx(sum(usd for _, usd in inside))}
    by_key = await store.spend_between(start, end, "key_id")
    want: dict[str | None, float] = {}
    for key, usd in inside:
        want[key] = want.get(key, 0.0) + usd
    assert by_key == pytest.approx(want)

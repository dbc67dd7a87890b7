"""Idempotency keys: a request runs at most once; retries replay, wait, or are refused."""

from __future__ import annotations

import asyncio

from bastion.state import CounterStore, IdemOutcome

TTL = 3600


async def test_a_key_goes_new_then_in_progress_then_done(store: CounterStore) -> None:
    assert (await store.idem_begin("req:1", "fp-a", TTL, 30)).outcome is IdemOutcome.NEW
    waiting = await store.idem_begin("req:1", "fp-a", TTL, 30)
    assert waiting.outcome is IdemOutcome.IN_PROGRESS
    assert 29 < waiting.retry_after_seconds <= 30
    body = b'{"id":"msg_1"}\x00\xff'
    assert await store.idem_complete("req:1", "fp-a", body, TTL)
    done = await store.idem_begin("req:1", "fp-a", TTL, 30)
    assert done.outcome is IdemOutcome.DONE
    assert done.response == body


async def test_a_different_body_under_the_same_key_is_a_mismatch(store: CounterStore) -> None:
    await store.idem_begin("req:2", "fp-a", TTL, 30)
    assert (await store.idem_begin("req:2", "fp-b", TTL, 30)).outcome is IdemOutcome.MISMATCH
    assert not await store.idem_complete("req:2", "fp-b", b"x", TTL)
    await store.idem_complete("req:2", "fp-a", b"a", TTL)
    assert (await store.idem_begin("req:2", "fp-b", TTL, 30)).outcome is IdemOutcome.MISMATCH


async def test_the_first_stored_result_is_kept(store: CounterStore) -> None:
    await store.idem_begin("req:3", "fp", TTL, 30)
    assert await store.idem_complete("req:3", "fp", b"first", TTL)
    assert not await store.idem_complete("req:3", "fp", b"second", TTL)
    assert (await store.idem_begin("req:3", "fp", TTL, 30)).response == b"first"


async def test_abandon_lets_a_retry_run_but_never_drops_a_result(store: CounterStore) -> None:
    await store.idem_begin("req:4", "fp", TTL, 30)
    assert await store.idem_abandon("req:4")
    assert (await store.idem_begin("req:4", "fp", TTL, 30)).outcome is IdemOutcome.NEW
    await store.idem_complete("req:4", "fp", b"ok", TTL)
    assert not await store.idem_abandon("req:4")
    assert (await store.idem_begin("req:4", "fp", TTL, 30)).outcome is IdemOutcome.DONE


async def test_concurrent_begins_have_exactly_one_owner(store: CounterStore) -> None:
    results = await asyncio.gather(*(store.idem_begin("req:5", "fp", TTL, 30) for _ in range(100)))
    outcomes = [r.outcome for r in results]
    assert outcomes.count(IdemOutcome.NEW) == 1
    assert outcomes.count(IdemOutcome.IN_PROGRESS) == 99


async def test_a_crashed_holder_loses_the_lock_after_lock_seconds(store: CounterStore) -> None:
    assert (await store.idem_begin("req:6", "fp", TTL, 0.2)).outcome is IdemOutcome.NEW
    assert (await store.idem_begin("req:6", "fp", TTL, 0.2)).outcome is IdemOutcome.IN_PROGRESS
    await asyncio.sleep(0.3)
    assert (await store.idem_begin("req:6", "fp", TTL, 0.2)).outcome is IdemOutcome.NEW
    assert (await store.idem_begin("req:6", "fp", TTL, 0.2)).outcome is IdemOutcome.IN_PROGRESS


async def test_a_stored_result_expires_after_its_ttl(store: CounterStore) -> None:
    await store.idem_begin("req:7", "fp", TTL, 30)
    await store.idem_complete("req:7", "fp", b"ok", 0.2)
    await asyncio.sleep(0.3)
    assert (await store.idem_begin("req:7", "fp-new", TTL, 30)).outcome is IdemOutcome.NEW

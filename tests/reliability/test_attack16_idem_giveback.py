"""Attack (issue #16): Redis stalls after an idempotent request claimed its key.

- The request failed and its give-back times out: the key is given back once Redis answers,
  so the caller's retry runs (before: locked out for the claim's whole lock, deadline + 30 s).
- The request was served and keeping its answer times out: the caller still gets its answer
  (before: a 503 for a request that ran and was billed), and the claim is never given back,
  so a duplicate waiting meanwhile can not run the request a second time.

A real RedisCounterStore on a private redis-server stopped with SIGSTOP.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest
from tests.server._attack16_support import private_redis

from bastion.reliability.idempotency import Idempotency, StoredResponse, new_owner
from bastion.state import IdemOutcome
from bastion.state.redis import RedisCounterStore

LOCK = 120.0


@pytest.fixture
def server() -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    with private_redis() as s:
        yield s


async def _stalled(proc: subprocess.Popen[bytes], step: asyncio.Future[None] | None) -> None:
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        assert step is not None
        await step
    finally:
        os.kill(proc.pid, signal.SIGCONT)


async def test_a_give_back_that_timed_out_lands_once_redis_answers(
    server: tuple[int, subprocess.Popen[bytes]],
) -> None:
    port, proc = server
    store = RedisCounterStore(f"redis://127.0.0.1:{port}/0", prefix="a16g", timeout_seconds=0.5)
    idem = Idempotency(store, ttl=3600, wait=0.2, retry_seconds=0.1)
    key, owner = "k-" + uuid.uuid4().hex, new_owner()
    try:
        assert await idem.claim(key, "fp", stream=False, lock_seconds=LOCK, owner=owner) is None
        await _stalled(proc, asyncio.ensure_future(idem.abandon(key, owner)))  # no raise
        end = time.monotonic() + 5
        while (b := await store.idem_begin(key, "fp", 3600, LOCK, "retry")).outcome is not (
            IdemOutcome.NEW
        ):
            assert b.outcome is IdemOutcome.IN_PROGRESS
            assert time.monotonic() < end, "the key was never given back"
            await asyncio.sleep(0.05)
    finally:
        await idem.aclose()
        await store.close()


async def test_an_answer_that_could_not_be_kept_is_served_and_never_runs_again(
    server: tuple[int, subprocess.Popen[bytes]],
) -> None:
    port, proc = server
    store = RedisCounterStore(f"redis://127.0.0.1:{port}/0", prefix="a16g", timeout_seconds=0.5)
    idem = Idempotency(store, ttl=3600, wait=0.2, retry_seconds=0.1)
    key, owner = "k-" + uuid.uuid4().hex, new_owner()
    answer = StoredResponse(b'{"id":"msg_1"}', False, {"x-request-id": "req_1"})
    try:
        assert await idem.claim(key, "fp", stream=False, lock_seconds=LOCK, owner=owner) is None
        await _stalled(proc, asyncio.ensure_future(idem.complete(key, "fp", answer)))  # no raise
        await asyncio.sleep(1.0)  # anything queued would have landed by now
        for _ in range(3):  # a duplicate replays the answer (if it landed late) or waits
            b = await store.idem_begin(key, "fp", 3600, LOCK, "duplicate")
            assert b.outcome in (IdemOutcome.DONE, IdemOutcome.IN_PROGRESS), b
    finally:
        await idem.aclose()
        await store.close()

"""A breaker driven one script per call and one driven through the batches stay identical.

The single-operation path (``breaker_allow`` / ``breaker_record``: ``_lua.BREAKER``) and the
batched one (``admit`` with ``AllowBreaker`` / ``finish`` with ``RecordBreaker``: ``ADMIT``
and ``FINISH``) are fed the same random outcomes on two keys of one real Redis; after every
step both answer alike and both breaker hashes hold the same fields (cooldown ends aside,
which are server times). Cooldowns are either far away or below the clock's resolution, so
whether an ``allow`` finds the cooldown over never depends on when it runs; the window's
buckets are a day wide, so both keys always write the same bucket.

The moment a cooldown (or a probe's lease) ends is covered twice: on a controlled clock (the
scripts' prelude reads ``now`` from a Redis key the test sets instead of ``TIME``; every other
line is the shipped text) the property steps the clock onto, just before and just past each
end; and on the shipped scripts, cooldowns straddle a real sleep.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

import redis
from _state_support import REDIS_URL
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.state import (
    BreakerDecision,
    BreakerPolicy,
    BreakerState,
    RedisCounterStore,
    _lua,
    _lua_batch,
)
from bastion.state.plan import AllowBreaker, RecordBreaker
from bastion.state.redis import redis_key

# cooldown end times differ by when each script ran; every other field must be equal
_CLOCK_FIELDS = frozenset({"ou", "pu"})

policies = st.builds(
    BreakerPolicy,
    failure_threshold=st.integers(0, 4),
    error_rate=st.sampled_from([0.25, 0.5, 0.75, 1.0]),
    window_seconds=st.just(864_000.0),  # ten one-day buckets: no bucket edge during a test
    min_calls=st.integers(1, 6),
    cooldown_seconds=st.sampled_from([1e-9, 1e6]),  # over at once, or never during a test
)
steps = st.lists(st.sampled_from(["ok", "fail", "allow"]), min_size=1, max_size=40)


def _fields(client: redis.Redis, key: str) -> dict[str, str]:
    raw = client.hgetall(key)
    return {k.decode(): v.decode() for k, v in raw.items() if k.decode() not in _CLOCK_FIELDS}


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(policy=policies, ops=steps)
async def test_single_and_batched_breaker_scripts_agree_step_by_step(
    redis_prefix: str, policy: BreakerPolicy, ops: list[str]
) -> None:
    store = RedisCounterStore(REDIS_URL, prefix=redis_prefix, timeout_seconds=10.0)
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=10)
    name = uuid.uuid4().hex[:8]
    one, batched = f"one-{name}", f"batch-{name}"
    one_key, batched_key = (
        redis_key(redis_prefix, "br", one),
        redis_key(redis_prefix, "br", batched),
    )
    try:
        for op in ops:
            if op == "allow":
                a = await store.breaker_allow(one, policy)
                result = await store.admit([AllowBreaker(batched, policy)])
                (b,) = result.results
                assert isinstance(b, BreakerDecision)
                assert (result.refused is None) == b.allowed
                assert (b.allowed, b.state, b.probe) == (a.allowed, a.state, a.probe)
                assert (b.retry_after_seconds > 0) == (a.retry_after_seconds > 0)
            else:
                state = await store.breaker_record(one, op == "ok", policy)
                (batched_state,) = await store.finish([RecordBreaker(batched, op == "ok", policy)])
                assert batched_state is state
            assert _fields(client, batched_key) == _fields(client, one_key)
            assert client.hexists(batched_key, "ou") == client.hexists(one_key, "ou")
            assert client.hexists(batched_key, "pu") == client.hexists(one_key, "pu")
    finally:
        client.delete(one_key, batched_key)
        client.close()
        await store.close()


def test_the_breaker_record_text_is_shared_not_copied() -> None:
    """Both scripts carry the one ``record`` function, once each (no second, drifting copy)."""
    for script in (_lua.BREAKER, _lua_batch.FINISH):
        assert script.count(_lua._RECORD) == 1
        assert script.count("local function record(") == 1


def test_the_breaker_allow_text_is_shared_not_copied() -> None:
    """``BREAKER`` and ``ADMIT`` carry the one check/probe pair, and no other probe write."""
    for script in (_lua.BREAKER, _lua_batch.ADMIT):
        assert script.count(_lua._ALLOW) == 1
        assert script.count("local function allow_check(") == 1
        assert script.count("local function allow_probe(") == 1
        assert script.count("'half_open', 'pu'") == 1  # only allow_probe marks a probe
        assert script.count("'ou', 'pu'") == 1  # only allow_check reads the cooldown ends


# -- the moment a cooldown ends, on a controlled clock ----------------------------------------

_TIME = "local t = redis.call('TIME')\nlocal now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000\n"
_START_MS = 1_767_225_600_000  # 2026-01-01, a realistic epoch in ms


def _clocked(script: str, clock_key: str) -> str:
    """The script with ``now`` read from ``clock_key`` (ms) instead of the server's ``TIME``."""
    assert script.count(_TIME) == 1
    return script.replace(_TIME, f"local now = tonumber(redis.call('GET', '{clock_key}'))\n")


@contextmanager
def _clocked_scripts(clock_key: str) -> Iterator[None]:
    """Stores opened inside register the breaker scripts with the controlled clock."""
    with (
        mock.patch.object(_lua, "BREAKER", _clocked(_lua.BREAKER, clock_key)),
        mock.patch.object(_lua_batch, "ADMIT", _clocked(_lua_batch.ADMIT, clock_key)),
        mock.patch.object(_lua_batch, "FINISH", _clocked(_lua_batch.FINISH, clock_key)),
    ):
        yield


clocked_policies = st.builds(
    BreakerPolicy,
    failure_threshold=st.integers(0, 3),
    error_rate=st.sampled_from([0.25, 0.5, 1.0]),
    window_seconds=st.sampled_from([0.01, 0.05, 864_000.0]),  # 1 ms buckets slide too
    min_calls=st.integers(1, 4),
    cooldown_seconds=st.sampled_from([0.001, 0.002, 0.005]),
)
# a tick (ms) of 0..6 lands before, on and past every cooldown end of 1, 2 or 5 ms
clocked_steps = st.lists(
    st.one_of(st.sampled_from(["ok", "fail", "allow"]), st.integers(0, 6)),
    min_size=1,
    max_size=40,
)


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(policy=clocked_policies, ops=clocked_steps)
async def test_breaker_scripts_agree_as_cooldowns_end_on_a_controlled_clock(
    redis_prefix: str, policy: BreakerPolicy, ops: list[str | int]
) -> None:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=10)
    name = uuid.uuid4().hex[:8]
    clock_key = f"{redis_prefix}:clock:{name}"
    one, batched = f"one-{name}", f"batch-{name}"
    one_key, batched_key = (
        redis_key(redis_prefix, "br", one),
        redis_key(redis_prefix, "br", batched),
    )
    now = _START_MS
    client.set(clock_key, now)
    with _clocked_scripts(clock_key):
        store = RedisCounterStore(REDIS_URL, prefix=redis_prefix, timeout_seconds=10.0)
    try:
        for op in ops:
            if isinstance(op, int):
                now += op
                client.set(clock_key, now)
            elif op == "allow":
                a = await store.breaker_allow(one, policy)
                result = await store.admit([AllowBreaker(batched, policy)])
                (b,) = result.results
                assert isinstance(b, BreakerDecision)
                assert (result.refused is None) == b.allowed
                assert b == a  # the same clock: even the wait is equal
            else:
                state = await store.breaker_record(one, op == "ok", policy)
                (batched_state,) = await store.finish([RecordBreaker(batched, op == "ok", policy)])
                assert batched_state is state
            # the same clock: the cooldown and probe ends are equal too
            assert client.hgetall(batched_key) == client.hgetall(one_key)
    finally:
        client.delete(one_key, batched_key, clock_key)
        client.close()
        await store.close()


async def test_a_cooldown_ends_on_the_controlled_clock_exactly_at_its_end(
    redis_prefix: str,
) -> None:
    """The boundary itself, on both paths: refused 1 ms before the end, the probe at it."""
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=10)
    clock_key = f"{redis_prefix}:clock"
    client.set(clock_key, _START_MS)
    with _clocked_scripts(clock_key):
        store = RedisCounterStore(REDIS_URL, prefix=redis_prefix, timeout_seconds=10.0)
    policy = BreakerPolicy(failure_threshold=1, cooldown_seconds=0.005)
    try:
        assert await store.breaker_record("one", False, policy) is BreakerState.OPEN
        assert await store.finish([RecordBreaker("batch", False, policy)]) == (BreakerState.OPEN,)
        client.set(clock_key, _START_MS + 4)
        a = await store.breaker_allow("one", policy)
        result = await store.admit([AllowBreaker("batch", policy)])
        refused = BreakerDecision(False, BreakerState.OPEN, retry_after_seconds=0.001)
        assert (a, result.refused, result.results) == (refused, 0, (refused,))
        client.set(clock_key, _START_MS + 5)
        a = await store.breaker_allow("one", policy)
        result = await store.admit([AllowBreaker("batch", policy)])
        probe = BreakerDecision(True, BreakerState.HALF_OPEN, probe=True)
        assert (a, result.refused, result.results) == (probe, None, (probe,))
        for name in ("one", "batch"):  # the probe's lease: a cooldown from now
            pu = client.hget(redis_key(redis_prefix, "br", name), "pu")
            assert pu is not None and float(pu) == _START_MS + 10
    finally:
        client.delete(clock_key)
        client.close()
        await store.close()


# -- the moment a cooldown ends, on the shipped scripts and the server's clock ----------------


async def test_shipped_breaker_scripts_agree_across_a_cooldown_that_ends_during_a_sleep(
    redis_prefix: str,
) -> None:
    """Cooldowns of 0.3 s straddle a 0.5 s sleep: refused before it, probed after, on both."""
    store = RedisCounterStore(REDIS_URL, prefix=redis_prefix, timeout_seconds=10.0)
    policy = BreakerPolicy(failure_threshold=1, cooldown_seconds=0.3)
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=10)

    async def both_allow() -> tuple[BreakerDecision, BreakerDecision]:
        a = await store.breaker_allow("one", policy)
        result = await store.admit([AllowBreaker("batch", policy)])
        (b,) = result.results
        assert isinstance(b, BreakerDecision)
        assert (result.refused is None) == b.allowed
        return a, b

    def same_fields() -> bool:
        one, batch = (
            _fields(client, redis_key(redis_prefix, "br", name)) for name in ("one", "batch")
        )
        return one == batch

    try:
        assert await store.breaker_record("one", False, policy) is BreakerState.OPEN
        assert await store.finish([RecordBreaker("batch", False, policy)]) == (BreakerState.OPEN,)
        for d in await both_allow():
            assert (d.allowed, d.state, d.probe) == (False, BreakerState.OPEN, False)
            assert 0 < d.retry_after_seconds <= 0.3
        await asyncio.sleep(0.5)
        for d in await both_allow():  # the cooldown is over: the one probe is let through
            assert (d.allowed, d.state, d.probe, d.retry_after_seconds) == (
                True,
                BreakerState.HALF_OPEN,
                True,
                0.0,
            )
        assert same_fields()
        for d in await both_allow():  # the probe's lease (another 0.3 s) holds the rest back
            assert (d.allowed, d.state, d.probe) == (False, BreakerState.HALF_OPEN, False)
            assert 0 < d.retry_after_seconds <= 0.3
        await asyncio.sleep(0.5)
        for d in await both_allow():  # the probe never answered: its lease ends, a new probe
            assert (d.allowed, d.state, d.probe) == (True, BreakerState.HALF_OPEN, True)
        assert await store.breaker_record("one", True, policy) is BreakerState.CLOSED
        assert await store.finish([RecordBreaker("batch", True, policy)]) == (BreakerState.CLOSED,)
        assert same_fields()
    finally:
        client.close()
        await store.close()

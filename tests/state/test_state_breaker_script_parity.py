"""A breaker driven one script per call and one driven through the batches stay identical.

The single-operation path (``breaker_allow`` / ``breaker_record``: ``_lua.BREAKER``) and the
batched one (``admit`` with ``AllowBreaker`` / ``finish`` with ``RecordBreaker``: ``ADMIT``
and ``FINISH``) are fed the same random outcomes on two keys of one real Redis; after every
step both answer alike and both breaker hashes hold the same fields (cooldown ends aside,
which are server times). Cooldowns are either far away or below the clock's resolution, so
whether an ``allow`` finds the cooldown over never depends on when it runs; the window's
buckets are a day wide, so both keys always write the same bucket.
"""

from __future__ import annotations

import uuid

import redis
from _state_support import REDIS_URL
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.state import BreakerDecision, BreakerPolicy, RedisCounterStore, _lua, _lua_batch
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

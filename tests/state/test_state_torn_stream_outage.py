"""A connection redis-py closes under a command in flight fails the call closed, on one Redis
as on a Cluster: ``StateUnavailable`` (the store's typed outage error), never the
``AttributeError`` redis-py raises on the closed stream, and the store serves again next call.

The race is reproduced, not imitated: redis-py's own ``disconnect`` closes the connection's
stream just before redis-py's own send code writes to it, so the ``AttributeError`` comes
from redis-py's connection module exactly as when another task tears the connection down.
An ``AttributeError`` raised anywhere else is a bug and still propagates.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from _redis_cluster_harness import RedisClusterProcs
from _state_support import REDIS_URL
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio.connection import Connection

from bastion.errors import StateUnavailable
from bastion.state import BreakerPolicy, Cap, RedisCounterStore
from bastion.state.plan import Incr, RecordBreaker, Take

POLICY = BreakerPolicy()
Op = Callable[[RedisCounterStore], Awaitable[Any]]

# one of each way the store talks to Redis: scripts (single and batched), plain commands,
# a MULTI pipeline, a TIME pipeline or node lookup, and the health check
OPS: dict[str, Op] = {
    "take": lambda s: s.take("k", 1.0, 5.0),
    "incr": lambda s: s.incr("k", 1.0, 60.0),
    "reserve": lambda s: s.reserve(f"r-{uuid.uuid4().hex}", [Cap("c", 10.0, 60.0)], 1.0, 60.0),
    "admit": lambda s: s.admit([Take("k", 1.0, 5.0), Incr("k", 1.0, 60.0)]),
    "finish": lambda s: s.finish([RecordBreaker("b", False, POLICY)]),
    "breaker": lambda s: s.breaker_allow("b", POLICY),
    "idem": lambda s: s.idem_begin(f"i-{uuid.uuid4().hex}", "fp", 60.0, 5.0),
    "get": lambda s: s.get("k"),
    "set_flag": lambda s: s.set_flag("f", "on"),
    "get_flags": lambda s: s.get_flags(),
    "peek": lambda s: s.breaker_peek("b"),
    "ping": lambda s: s.ping(),
}


class Tearer:
    """While armed, each send first has redis-py close that connection's stream."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.armed = False
        self.torn = 0
        real = Connection._send_packed_command

        async def send(conn: Connection, command: Any) -> None:
            if self.armed:
                self.torn += 1
                await conn.disconnect()  # redis-py's own close: _reader/_writer become None
            await real(conn, command)  # redis-py writes to the closed stream

        monkeypatch.setattr(Connection, "_send_packed_command", send)


@pytest.fixture
def tearer(monkeypatch: pytest.MonkeyPatch) -> Iterator[Tearer]:
    yield Tearer(monkeypatch)


@pytest.fixture(params=["redis", "cluster"])
def torn_url(request: pytest.FixtureRequest) -> str:
    if request.param == "redis":
        return REDIS_URL
    cluster: RedisClusterProcs = request.getfixturevalue("redis_cluster")
    return cluster.url


async def _fails_closed(store: RedisCounterStore, tearer: Tearer, op: Op) -> None:
    await store.ping()  # connected, topology known: the tear hits a command in flight
    tearer.armed = True
    try:
        with pytest.raises(StateUnavailable) as info:
            await op(store)
    finally:
        tearer.armed = False
    assert tearer.torn >= 1  # the stream really was closed under this command
    cause = info.value.__cause__
    assert isinstance(cause, AttributeError) and cause.obj is None
    await op(store)  # the next call reconnects and is served


@pytest.mark.parametrize("name", sorted(OPS))
async def test_a_stream_closed_under_a_command_is_an_outage(
    torn_url: str, redis_prefix: str, tearer: Tearer, name: str
) -> None:
    store = RedisCounterStore(torn_url, prefix=redis_prefix, timeout_seconds=10.0)
    try:
        await _fails_closed(store, tearer, OPS[name])
    finally:
        await store.close()


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(names=st.lists(st.sampled_from(sorted(OPS)), min_size=1, max_size=4))
async def test_every_torn_command_fails_closed_and_the_store_recovers(
    redis_prefix: str, tearer: Tearer, names: list[str]
) -> None:
    """On one Redis, any sequence of operations each torn mid-send fails closed each time,
    and every one is served right after."""
    store = RedisCounterStore(REDIS_URL, prefix=redis_prefix, timeout_seconds=10.0)
    try:
        for name in names:
            await _fails_closed(store, tearer, OPS[name])
    finally:
        await store.close()


async def test_an_attribute_error_outside_redis_py_is_a_bug_not_an_outage(
    redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RedisCounterStore(REDIS_URL, prefix=redis_prefix, timeout_seconds=10.0)

    async def buggy(conn: Connection, command: Any) -> None:
        broken: Any = None
        broken.writelines(command)  # same error, but raised here, not in redis-py

    try:
        await store.ping()
        monkeypatch.setattr(Connection, "_send_packed_command", buggy)
        with pytest.raises(AttributeError):
            await store.take("k", 1.0, 5.0)
    finally:
        monkeypatch.undo()
        await store.close()

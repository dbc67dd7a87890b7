"""A connection redis-py closes under a command in flight fails the call closed, on one Redis
as on a Cluster: ``StateUnavailable`` (the store's typed outage error), never the
``AttributeError`` redis-py raises on the closed stream, and the store serves again next call.

The race is reproduced, not imitated: redis-py's own ``disconnect`` closes the connection's
stream just before redis-py's own send code writes to it, so the ``AttributeError`` comes
from redis-py's connection module exactly as when another task tears the connection down.
An ``AttributeError`` raised anywhere else is a bug and still propagates.

On a plain ``redis://`` URL the scripts go through the store's own RESP client
(``state/_resp.py``), not redis-py: there the tear is that client dropping its connection just
before the write, and the cause is its ``ConnectionError``. ``REDIS_PY_URL`` (a query option
sends every command through redis-py) keeps redis-py's own tear covered for scripts too.
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
from redis.exceptions import ConnectionError as RedisConnectionError

from bastion.errors import StateUnavailable
from bastion.state import BreakerPolicy, Cap, RedisCounterStore
from bastion.state._resp import _Conn
from bastion.state.plan import Incr, RecordBreaker, Take

POLICY = BreakerPolicy()
REDIS_PY_URL = f"{REDIS_URL}?protocol=3"  # redis-py's default protocol: redis-py for everything
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
        self.torn_resp = 0  # of which through the store's own RESP client
        real = Connection._send_packed_command
        real_request = _Conn.request

        def request(conn: _Conn, payload: bytes) -> Any:
            if self.armed:
                self.torn += 1
                self.torn_resp += 1
                conn.fail(RedisConnectionError, "torn")  # the client's own drop, then the write
            return real_request(conn, payload)

        monkeypatch.setattr(_Conn, "request", request)

        async def send(conn: Connection, command: Any) -> None:
            if self.armed:
                self.torn += 1
                await conn.disconnect()  # redis-py's own close: _reader/_writer become None
            await real(conn, command)  # redis-py writes to the closed stream

        monkeypatch.setattr(Connection, "_send_packed_command", send)


@pytest.fixture
def tearer(monkeypatch: pytest.MonkeyPatch) -> Iterator[Tearer]:
    yield Tearer(monkeypatch)


@pytest.fixture(params=["redis", "redis-py", "cluster"])
def torn_url(request: pytest.FixtureRequest) -> str:
    if request.param == "redis":
        return REDIS_URL
    if request.param == "redis-py":
        return REDIS_PY_URL
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
    if tearer.torn_resp:
        assert isinstance(cause, RedisConnectionError)
        tearer.torn_resp = 0
    else:
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
            await store.get("k")  # a redis-py command on every URL
    finally:
        monkeypatch.undo()
        await store.close()

"""The store's own RESP client (``state/_resp.py``) against the real Redis at 127.0.0.1:6379:
pipelining on one shared connection, NOSCRIPT, URLs, and the outage semantics of the store
(timeout with CLIENT PAUSE, reset with CLIENT KILL, a Lua error, close). An unreachable Redis
fails these tests (the ``redis_prefix`` fixture), never skips them. The shared server is
never stopped; CLIENT PAUSE holds it for under a second."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from _state_support import REDIS_URL
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio.connection import parse_url
from redis.exceptions import AuthenticationError, ConnectionError, ResponseError, TimeoutError

from bastion.errors import StateUnavailable
from bastion.state import Cap, RedisCounterStore
from bastion.state._resp import RespClient, _Conn, resp_params
from bastion.state.plan import Incr, Reserve, Settle, Take

REDIS_PY_URL = f"{REDIS_URL}?protocol=3"  # any query option: redis-py for everything


@pytest.fixture
def sync_redis(redis_prefix: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(REDIS_URL, socket_timeout=5) as r:
        yield r


def _client() -> RespClient:
    params = resp_params(REDIS_URL)
    assert params is not None
    return RespClient.from_params(params, 5.0)


def _connections(monkeypatch: pytest.MonkeyPatch) -> list[_Conn]:
    made: list[_Conn] = []
    real = _Conn.connection_made

    def counted(self: _Conn, transport: asyncio.BaseTransport) -> None:
        made.append(self)
        real(self, transport)

    monkeypatch.setattr(_Conn, "connection_made", counted)
    return made


# -- pipelining ---------------------------------------------------------------------------


async def test_concurrent_callers_share_one_connection_and_each_gets_its_own_reply(
    redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = _connections(monkeypatch)
    client = _client()
    try:
        tokens = [f"{redis_prefix}-{i}".encode() for i in range(300)]
        echoed, ids = await asyncio.gather(
            asyncio.gather(*(client.execute("ECHO", t) for t in tokens)),
            asyncio.gather(*(client.execute("CLIENT", "ID") for _ in range(20))),
        )
        assert echoed == tokens
        assert len(made) == 1 and len(set(ids)) == 1
    finally:
        await client.close()


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(plan=st.lists(st.tuples(st.integers(0, 4), st.integers(1, 3)), min_size=1, max_size=30))
async def test_concurrent_admits_match_the_memory_store(
    redis_prefix: str, plan: list[tuple[int, int]]
) -> None:
    """Many admits in flight at once on the one pipelined connection: each caller's answer
    is its own (the cap's totals add up to the admitted ones, nothing lost or swapped)."""
    run = uuid.uuid4().hex[:8]
    store = RedisCounterStore(REDIS_URL, prefix=redis_prefix, timeout_seconds=10.0)
    cap = Cap(f"{run}:cap", 10.0, 600.0)
    try:
        results = await asyncio.gather(
            *(
                store.admit(
                    [Take(f"{run}:tb{k}", 0.001, 5.0), Reserve(f"{run}-{i}", (cap,), n, 60)]
                )
                for i, (k, n) in enumerate(plan)
            )
        )
        usage = await store.usage(cap.key)
        took: dict[int, int] = {}
        reserved = 0.0
        for (k, n), res in zip(plan, results, strict=True):
            if res.ok:
                took[k] = took.get(k, 0) + 1
                reserved += n
        assert usage.reserved == reserved <= cap.limit
        assert all(v <= 5 for v in took.values())
    finally:
        await store.close()


# -- scripts ------------------------------------------------------------------------------


async def test_a_flushed_script_is_evaluated_once_then_cached_again(
    redis_prefix: str, sync_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RedisCounterStore(REDIS_URL, prefix=redis_prefix)
    sent: list[bytes] = []
    real = RespClient.execute

    async def recorded(self: RespClient, *args: Any) -> Any:
        sent.append(args[0].encode() if isinstance(args[0], str) else args[0])
        return await real(self, *args)

    monkeypatch.setattr(RespClient, "execute", recorded)
    try:
        assert (await store.incr_if_below("n", 1.0, 5.0, 60.0)).ok
        sync_redis.script_flush()
        assert (await store.incr_if_below("n", 1.0, 5.0, 60.0)).value == 2.0
        assert (await store.incr_if_below("n", 1.0, 5.0, 60.0)).value == 3.0
        sent_after_first = sent[1:]
        assert sent_after_first == [b"EVALSHA", b"EVAL", b"EVALSHA"]
    finally:
        await store.close()


async def test_a_lua_error_is_the_same_exception_as_through_redis_py(redis_prefix: str) -> None:
    a, b = Cap("spend:a", 5.0, 3600.0), Cap("spend:b", 5.0, 3600.0)
    errors = []
    for url in (REDIS_URL, REDIS_PY_URL):
        store = RedisCounterStore(url, prefix=redis_prefix)
        try:
            assert (url == REDIS_URL) is (store._resp is not None)
            rid = f"r-{uuid.uuid4().hex}"
            assert (await store.admit([Reserve(rid, (a,), 1.0, 60.0)])).ok
            with pytest.raises(ResponseError) as info:
                await store.finish([Incr("n", 1.0, 60.0), Settle(rid, (b,), 1.0)])
            errors.append((type(info.value), str(info.value)))
        finally:
            await store.close()
    assert errors[0] == errors[1]
    assert errors[0] == (ResponseError, "settle caps differ from the reservation")


# -- URLs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "redis://127.0.0.1",
        "redis://localhost:6390/3",
        "redis://user:p%40ss@127.0.0.1:6379/2",
        "redis://:secret@127.0.0.1/1",
        "REDIS://127.0.0.1:6379",
    ],
)
def test_plain_urls_parse_as_redis_py_parses_them(url: str) -> None:
    want = parse_url(url)
    got = resp_params(url)
    assert got is not None
    assert got["host"] == want.get("host", "localhost")
    assert got["port"] == want.get("port", 6379)
    assert got["db"] == want.get("db", 0)
    assert (got["username"], got["password"]) == (want.get("username"), want.get("password"))


@pytest.mark.parametrize(
    "url",
    [
        "rediss://127.0.0.1:6379/0",
        "unix:///tmp/redis.sock",
        "redis+cluster://127.0.0.1:7000",
        "redis://127.0.0.1:6379/0?protocol=3",
        "redis://127.0.0.1:6379/0?socket_timeout=1",
    ],
)
def test_everything_else_stays_with_redis_py(url: str) -> None:
    assert resp_params(url) is None


def test_a_bad_port_is_a_value_error_as_in_redis_py() -> None:
    with pytest.raises(ValueError):
        resp_params("redis://127.0.0.1:notaport/0")


async def test_the_db_number_selects_the_database(redis_prefix: str) -> None:
    url = REDIS_URL.rpartition("/")[0] + "/7"
    store = RedisCounterStore(url, prefix=redis_prefix)
    with redis.Redis.from_url(url) as db7, redis.Redis.from_url(REDIS_URL) as db0:
        try:
            assert store._resp is not None
            await store.incr("n", 2.0, 60.0)
            assert await store.get("n") == 2.0  # redis-py's get reads the script's write
            assert db7.keys(f"{redis_prefix}:*") and not db0.keys(f"{redis_prefix}:*")
        finally:
            await store.close()
            for k in db7.keys(f"{redis_prefix}:*"):
                db7.delete(k)


async def test_credentials_from_the_url_authenticate(
    redis_prefix: str, sync_redis: redis.Redis
) -> None:
    user, password = f"bastion-test-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    sync_redis.acl_setuser(
        user, enabled=True, passwords=[f"+{password}"], keys="*", commands=["+@all"]
    )
    host = REDIS_URL.partition("://")[2].partition("/")[0]
    try:
        good = RedisCounterStore(f"redis://{user}:{password}@{host}/0", prefix=redis_prefix)
        bad = RedisCounterStore(f"redis://{user}:wrong@{host}/0", prefix=redis_prefix)
        try:
            assert (await good.incr_if_below("n", 1.0, 5.0, 60.0)).ok
            assert good._resp is not None
            assert await good._resp.execute("ACL", "WHOAMI") == user.encode()
            with pytest.raises(StateUnavailable) as info:
                await bad.incr_if_below("n", 1.0, 5.0, 60.0)
            assert isinstance(info.value.__cause__, AuthenticationError)
        finally:
            await good.close()
            await bad.close()
    finally:
        sync_redis.acl_deluser(user)


async def test_a_refused_connection_is_an_outage() -> None:
    store = RedisCounterStore("redis://127.0.0.1:1/0", timeout_seconds=2.0)
    try:
        with pytest.raises(StateUnavailable) as info:
            await store.admit([Take("k", 1.0, 5.0)])
        assert isinstance(info.value.__cause__, ConnectionError)
    finally:
        await store.close()


# -- outages ------------------------------------------------------------------------------


async def _client_id(store: RedisCounterStore) -> int:
    assert store._resp is not None
    return int(await store._resp.execute("CLIENT", "ID"))


async def test_a_late_reply_times_out_every_caller_in_flight_and_the_next_call_reconnects(
    redis_prefix: str, sync_redis: redis.Redis
) -> None:
    store = RedisCounterStore(REDIS_URL, prefix=redis_prefix, timeout_seconds=0.25)
    try:
        before = await _client_id(store)
        sync_redis.client_pause(800, all=True)
        paused_until = time.monotonic() + 0.8
        t0 = time.monotonic()
        outcomes = await asyncio.gather(
            *(store.admit([Take(f"k{i}", 1.0, 5.0)]) for i in range(5)), return_exceptions=True
        )
        elapsed = time.monotonic() - t0
        assert all(isinstance(o, StateUnavailable) for o in outcomes), outcomes
        assert all(isinstance(o.__cause__, TimeoutError) for o in outcomes)
        assert elapsed >= 0.2  # the store's timeout, not an instant failure
        await asyncio.sleep(max(0.0, paused_until - time.monotonic()) + 0.1)
        assert (await store.admit([Take("k0", 1.0, 5.0)])).ok
        assert await _client_id(store) != before  # the timed-out connection was dropped
    finally:
        sync_redis.client_unpause()
        await store.close()


async def test_a_killed_connection_fails_every_caller_in_flight_and_the_next_call_reconnects(
    redis_prefix: str, sync_redis: redis.Redis
) -> None:
    store = RedisCounterStore(REDIS_URL, prefix=redis_prefix, timeout_seconds=10.0)
    assert store._resp is not None
    try:
        victim = await _client_id(store)
        # a blocking pop holds the connection; an admit is pipelined behind it
        blocked = asyncio.ensure_future(store._resp.execute("BLPOP", f"{redis_prefix}:none", 5))
        behind = asyncio.ensure_future(store.admit([Take("k", 1.0, 5.0)]))
        await asyncio.sleep(0.1)
        assert not blocked.done() and not behind.done()
        sync_redis.client_kill_filter(_id=str(victim))
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(blocked, 5)
        with pytest.raises(StateUnavailable) as info:
            await asyncio.wait_for(behind, 5)
        assert isinstance(info.value.__cause__, ConnectionError)
        assert (await store.admit([Take("k", 1.0, 5.0)])).ok
        # killed while idle: the next call is served on a new connection
        idle = await _client_id(store)
        sync_redis.client_kill_filter(_id=str(idle))
        await asyncio.sleep(0.2)
        assert (await store.admit([Take("k", 1.0, 5.0)])).ok
        assert len({victim, idle, await _client_id(store)}) == 3
    finally:
        await store.close()


# -- close --------------------------------------------------------------------------------


async def test_close_leaves_no_task_or_socket_behind(
    redis_prefix: str, sync_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = _connections(monkeypatch)
    tasks_before = asyncio.all_tasks()
    store = RedisCounterStore(REDIS_URL, prefix=redis_prefix)
    assert store._resp is not None
    await store.admit([Take("k", 1.0, 5.0)])
    ours = await _client_id(store)
    blocked = asyncio.ensure_future(store._resp.execute("BLPOP", f"{redis_prefix}:none", 5))
    await asyncio.sleep(0.05)
    await store.close()
    with pytest.raises(ConnectionError):
        await blocked  # a call in flight at close fails, it is not left waiting
    assert asyncio.all_tasks() == tasks_before
    assert len(made) == 1 and made[0].lost.done() and made[0].failed
    for _ in range(50):  # the server sees the socket closed
        clients = sync_redis.client_list()
        if all(int(c["id"]) != ours for c in clients):
            break
        await asyncio.sleep(0.02)
    else:
        pytest.fail("the store's RESP connection is still open on the server after close()")


async def test_a_refused_select_is_an_outage(redis_prefix: str) -> None:
    store = RedisCounterStore(REDIS_URL.rpartition("/")[0] + "/99999", prefix=redis_prefix)
    try:
        with pytest.raises(StateUnavailable) as info:
            await store.admit([Take("k", 1.0, 5.0)])
        assert isinstance(info.value.__cause__, ConnectionError)
    finally:
        await store.close()


async def test_a_caller_cancelled_while_connecting_leaves_no_socket(
    redis_prefix: str, sync_redis: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = _connections(monkeypatch)
    store = RedisCounterStore(REDIS_URL.rpartition("/")[0] + "/7", prefix=redis_prefix)
    try:
        sync_redis.client_pause(400, all=True)  # the SELECT waits: the connect is half done
        call = asyncio.ensure_future(store.admit([Take("k", 1.0, 5.0)]))
        for _ in range(100):
            if made:
                break
            await asyncio.sleep(0.01)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert len(made) == 1 and made[0].failed
        await asyncio.wait_for(made[0].lost, 2)
    finally:
        sync_redis.client_unpause()
        await store.close()


def test_the_same_on_uvloop_the_servers_loop(redis_prefix: str, sync_redis: redis.Redis) -> None:
    """The gateway runs on uvloop, whose transports are not ``asyncio.Transport``
    subclasses: pipelining, a kill under a call in flight, reconnect and close there."""
    uvloop = pytest.importorskip("uvloop")  # a dev dependency; present wherever tests run

    async def run() -> None:
        store = RedisCounterStore(REDIS_URL, prefix=redis_prefix, timeout_seconds=10.0)
        assert store._resp is not None
        try:
            tokens = [f"t{i}".encode() for i in range(100)]
            assert await asyncio.gather(*(store._resp.execute("ECHO", t) for t in tokens)) == tokens
            assert all(
                r.ok
                for r in await asyncio.gather(
                    *(store.admit([Take(f"k{i}", 1.0, 5.0)]) for i in range(20))
                )
            )
            victim = await _client_id(store)
            blocked = asyncio.ensure_future(store._resp.execute("BLPOP", f"{redis_prefix}:none", 5))
            behind = asyncio.ensure_future(store.admit([Take("k", 1.0, 5.0)]))
            await asyncio.sleep(0.1)
            sync_redis.client_kill_filter(_id=str(victim))
            with pytest.raises(ConnectionError):
                await asyncio.wait_for(blocked, 5)
            with pytest.raises(StateUnavailable):
                await asyncio.wait_for(behind, 5)
            assert (await store.admit([Take("k", 1.0, 5.0)])).ok
        finally:
            await store.close()
        assert asyncio.all_tasks() == {asyncio.current_task()}

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run())

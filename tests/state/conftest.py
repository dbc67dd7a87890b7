"""Fixtures running every counter-store test on every backend, isolated from other runs.

Backends: in process, one Redis, and a private 3-master Redis Cluster started for the session.

Redis tests use a unique key prefix per test and delete their keys afterwards (never FLUSHDB:
other suites share the server). An unreachable Redis fails the tests, never skips them.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
from _redis_cluster_harness import RedisClusterProcs, running_cluster
from _state_support import REDIS_URL, StateBackend

from bastion.state import CounterStore


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A fresh key prefix on the shared Redis; its keys are deleted after the test."""
    prefix = f"bastion-test-{uuid.uuid4().hex[:12]}"
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis is required for the state tests but unreachable at {REDIS_URL}: {exc}")
    try:
        yield prefix
    finally:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcs]:
    """A private 3-master Redis Cluster (6 redis-server processes), for the whole session."""
    with running_cluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


@pytest.fixture(params=["memory", "redis", "cluster"])
def state_backend(request: pytest.FixtureRequest) -> Iterator[StateBackend]:
    if request.param == "memory":
        yield StateBackend("memory")
    elif request.param == "redis":
        yield StateBackend("redis", request.getfixturevalue("redis_prefix"))
    else:  # the same Redis store through the cluster client; the cluster is private
        cluster: RedisClusterProcs = request.getfixturevalue("redis_cluster")
        yield StateBackend("redis", f"bastion-test-{uuid.uuid4().hex[:12]}", url=cluster.url)


@pytest.fixture
def redis_backend(redis_prefix: str) -> StateBackend:
    """For behaviour only Redis has: several clients, processes, keys and slots."""
    return StateBackend("redis", redis_prefix)


@pytest.fixture
async def redis_store(redis_backend: StateBackend) -> AsyncIterator[CounterStore]:
    first = redis_backend.open()
    yield first
    for opened in redis_backend.opened:
        await opened.close()


@pytest.fixture
async def store(state_backend: StateBackend) -> AsyncIterator[CounterStore]:
    """One store per test; every store the test opened is closed afterwards."""
    first = state_backend.open()
    yield first
    for opened in state_backend.opened:
        await opened.close()

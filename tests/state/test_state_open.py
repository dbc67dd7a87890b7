"""Opening a store by URL, and failing closed when Redis cannot be reached."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from _state_support import REDIS_URL

from bastion.errors import ConfigError, StateUnavailable
from bastion.state import (
    BreakerPolicy,
    Cap,
    MemoryCounterStore,
    RedisCounterStore,
    open_state,
)


async def test_urls_pick_the_backend(tmp_path: Path) -> None:
    assert isinstance(open_state("memory://"), MemoryCounterStore)
    assert isinstance(open_state("sqlite://:memory:"), MemoryCounterStore)
    persisted = open_state(f"sqlite:///{tmp_path / 'state.db'}")
    assert isinstance(persisted, MemoryCounterStore)
    await persisted.incr("k", 1.0, 60)
    await persisted.close()
    assert (tmp_path / "state.db").exists()
    remote = open_state(REDIS_URL, prefix="bastion-test-open")
    assert isinstance(remote, RedisCounterStore)
    await remote.ping()
    await remote.close()


@pytest.mark.parametrize(
    "url", ["", "ftp://x", "sqlite://", "memory://somewhere", "redis://127.0.0.1:notaport/0"]
)
def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        open_state(url)


def test_a_prefix_with_braces_would_break_hash_tags() -> None:
    with pytest.raises(ConfigError):
        RedisCounterStore(REDIS_URL, prefix="a{b}")


async def test_unreachable_redis_raises_state_unavailable_quickly() -> None:
    store = RedisCounterStore("redis://127.0.0.1:1/0")
    policy = BreakerPolicy()
    operations = [
        store.ping(),
        store.reserve("r", [Cap("c", 1.0, 60)], 0.5, 60),
        store.settle("r", 0.5),
        store.usage("c"),
        store.take("k", 1.0, 1.0),
        store.incr("k", 1.0, 60),
        store.get("k"),
        store.set_flag("kill", "on"),
        store.get_flags(),
        store.breaker_allow("b", policy),
        store.idem_begin("i", "fp", 60, 30),
    ]
    started = time.monotonic()
    for operation in operations:
        with pytest.raises(StateUnavailable):
            await operation
    assert time.monotonic() - started < 2.0
    await store.close()


async def test_a_closed_memory_store_refuses_work() -> None:
    store = MemoryCounterStore()
    await store.incr("k", 1.0, 60)
    await store.close()
    with pytest.raises(StateUnavailable):
        await store.incr("k", 1.0, 60)

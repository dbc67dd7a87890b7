"""Attack (issue #16): Redis restarts under a gateway; once it answers again, every call must.

redis-py (8.x, RESP3) turns on maintenance notifications by default, and with them on its pool
skips the check that an idle connection is still open before lending it. After a Redis restart
every connection pooled before it was dead, and each failed one call (a 503 to a caller) on its
first use, however long after the restart: a gateway that had pooled 20 connections failed 20
calls spread over its next requests. Not retrying a failed script is right (it may have run);
lending a connection known to be closed is not.

A private redis-server on a free port, killed with SIGKILL and started again on the same port.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Iterator

import pytest
import redis
from tests.conftest import free_port, wait_port

from bastion.errors import StateUnavailable
from bastion.state.redis import RedisCounterStore

_NO_DISK = ("--save", "", "--appendonly", "no")


class _Server:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [*("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"), *_NO_DISK],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port, self.proc, timeout=10)
        with redis.Redis(port=self.port, socket_timeout=2) as r:
            assert r.ping()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)


@pytest.fixture
def server() -> Iterator[_Server]:
    s = _Server()
    s.start()
    try:
        yield s
    finally:
        s.kill()


async def _outcomes(store: RedisCounterStore, n: int, *, parallel: bool) -> list[str]:
    async def one(i: int) -> str:
        try:
            await store.incr(f"after-{i}", 1.0, 60.0)
            await store.idem_begin(f"idem-{uuid.uuid4().hex}", "fp", 60.0, 10.0, "me")
        except StateUnavailable as exc:
            return f"unavailable: {exc.__cause__!r}"
        return "ok"

    if parallel:
        return list(await asyncio.gather(*(one(i) for i in range(n))))
    return [await one(i) for i in range(n)]


async def test_every_call_is_served_once_a_restarted_redis_answers(server: _Server) -> None:
    store = RedisCounterStore(f"redis://127.0.0.1:{server.port}/0", prefix="a16r")
    try:
        # 24 calls at once: the pool holds 24 connections, all idle afterwards
        assert set(await _outcomes(store, 24, parallel=True)) == {"ok"}
        server.kill()
        server.start()  # the same port, an empty server
        await asyncio.sleep(0.5)  # every old connection's close has reached this process
        sequential = await _outcomes(store, 30, parallel=False)
        parallel = await _outcomes(store, 30, parallel=True)
        assert [o for o in sequential + parallel if o != "ok"] == []
    finally:
        await store.close()

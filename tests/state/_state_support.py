"""Helpers shared by the state tests, including code run in spawned OS processes."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier

from bastion.state import Cap, CounterStore, MemoryCounterStore, RedisCounterStore

REDIS_URL = os.environ.get("BASTION_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@dataclass
class StateBackend:
    """Opens stores of one kind; Redis stores opened by one test share its key prefix."""

    kind: str
    prefix: str = ""
    opened: list[CounterStore] = field(default_factory=list)
    url: str = REDIS_URL  # or a test cluster's redis+cluster:// URL

    def open(self) -> CounterStore:
        store: CounterStore
        if self.kind == "memory":
            store = MemoryCounterStore()
        else:
            # semantics, not outages, are tested through this: a generous socket timeout so a
            # loaded CI box (six cluster nodes beside the suite) does not read as an outage
            store = RedisCounterStore(self.url, prefix=self.prefix, timeout_seconds=10.0)
        self.opened.append(store)
        return store


def reserve_many(
    url: str, prefix: str, cap: Cap, amount: float, n: int, barrier: Barrier, out: Queue[int]
) -> None:
    """Fire ``n`` concurrent reservations once every process is ready; report how many fit."""

    async def run() -> int:
        store = RedisCounterStore(url, prefix=prefix)
        await store.ping()  # connect and import everything before the start line
        await asyncio.to_thread(barrier.wait, 30)
        results = await asyncio.gather(
            *(store.reserve(f"p{os.getpid()}-{i}", [cap], amount, 60) for i in range(n))
        )
        await store.close()
        return sum(r.ok for r in results)

    out.put(asyncio.run(run()))

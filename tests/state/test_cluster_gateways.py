"""Three `bastion serve` replicas share a spend cap on a real Redis Cluster, through a failover.

The replicas' counter state is ``redis+cluster://`` on the session's private 3-master cluster;
the upstream is a separate ``bastion sim`` process, whose count of served calls is the ground
truth. After one call per replica, 240 calls from the official Anthropic SDK (no retries) go at
once, spread over the three replicas, against a daily cap that affords about 50; while they run, the master holding the
calls' slot is failed over (``CLUSTER FAILOVER`` on its replica). Afterwards: every call was
answered 200 or refused 429 (none failed for the failover), the upstream served exactly the 200s,
the ledger's spend stays within the cap and equals, to the last digit, the spend the cluster
settled.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import anthropic
import pytest
from _redis_cluster_harness import RedisClusterProcs, running_sim
from tests.conftest import (
    BIN,
    RunningGateway,
    free_port,
    start_gateway,
    stop,
    wait_port,
    write_config,
)

from bastion.clock import DayClock
from bastion.state.redis import redis_key

CAP_USD = 1.25
PRICE = {"input": 100.0, "output": 1000.0, "cache_write": 100.0, "cache_read": 100.0}
CALLS = 240


@pytest.fixture
def sim_upstream() -> Iterator[str]:
    with running_sim() as url:
        yield url


def _serve(first: RunningGateway, tmp: Path) -> RunningGateway:
    """Another `bastion serve` replica on ``first``'s config (same key, database, state)."""
    port = free_port()
    log_path = tmp / f"serve-{port}.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(BIN / "bastion"),
                "serve",
                "--config",
                str(first.config_path),
                "--port",
                str(port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return RunningGateway(f"http://127.0.0.1:{port}", first.key, first.config_path, proc, log_path)


async def _call(client: anthropic.AsyncAnthropic) -> int:
    try:
        await client.messages.create(
            model="capped", max_tokens=40, messages=[{"role": "user", "content": "hello"}]
        )
    except anthropic.APIStatusError as exc:
        return exc.status_code
    return 200


async def _served(sim_url: str) -> int:
    async with aiohttp.ClientSession() as s, s.get(sim_url + "/_sim/requests") as r:
        recs = await r.json()
    return sum(1 for rec in recs if rec["path"] == "/v1/messages")


async def _ledger(db: Path, rows_expected: int) -> float:
    from bastion.store import open_store

    store = open_store(f"sqlite:///{db}")
    try:
        for _ in range(100):  # records are written off the request path: wait for the flush
            spend = await store.spend_by_day(DayClock().day())
            if len(await store.recent_calls(10_000)) >= rows_expected:
                break
            await asyncio.sleep(0.1)
        return float(sum(spend.values()))
    finally:
        await store.close()


def _cap_state(cluster: RedisClusterProcs, prefix: str) -> tuple[float, float]:
    """The global cap's settled and reserved dollars, read from the master that holds them."""
    key = redis_key(prefix, "cap", f"spend:{DayClock().day()}:global")
    with cluster.node(cluster.master_of(key)) as r:
        settled, reserved = r.hmget(key, "settled", "reserved")
    return float(settled or 0), float(reserved or 0)


async def test_three_replicas_on_a_cluster_keep_the_cap_exact_through_a_failover(
    tmp_path: Path, sim_upstream: str, redis_cluster: RedisClusterProcs
) -> None:
    prefix = "gw-" + uuid.uuid4().hex[:8]
    cfg = write_config(
        tmp_path,
        providers={"up": {"kind": "anthropic", "base_url": sim_upstream}},
        models={"capped": {"deployments": [{"provider": "up", "model": "capped-model"}]}},
        cost={"prices": {"capped-model": PRICE}, "caps": {"global_daily_usd": CAP_USD}},
        state={"url": redis_cluster.url, "prefix": prefix},
    )
    gws: list[RunningGateway] = []
    try:
        t_start = time.monotonic()
        first = start_gateway(cfg)  # creates the database and the API key
        gws.append(first)
        more = [_serve(first, tmp_path) for _ in range(2)]  # two more on the same config
        gws.extend(more)
        for g in more:
            wait_port(int(g.url.rpartition(":")[2]), g.proc)
        t_started = time.monotonic() - t_start
        clients = [
            anthropic.AsyncAnthropic(base_url=g.url, api_key=gws[0].key, max_retries=0, timeout=60)
            for g in gws
        ]
        master = redis_cluster.master_of(redis_key(prefix, "cap", "x"))
        replica = redis_cluster.replica_of(master)
        # one call per replica first, so each knows the topology the failover will change
        warm = [await _call(c) for c in clients]
        burst = asyncio.gather(*(_call(clients[i % 3]) for i in range(CALLS)))
        await asyncio.sleep(0.2)  # the burst is under way
        t0 = time.monotonic()
        took = await asyncio.to_thread(redis_cluster.failover, replica)
        statuses = warm + await burst
        burst_s = time.monotonic() - t0
        for c in clients:
            await c.close()
        served = await _served(sim_upstream)
        spent = await _ledger(tmp_path / "bastion.db", len(statuses))
        for _ in range(50):  # settles land as each answer ends
            settled, reserved = _cap_state(redis_cluster, prefix)
            if reserved == 0:
                break
            await asyncio.sleep(0.1)
        moved_to = redis_cluster.master_of(redis_key(prefix, "cap", "x"))
        with redis_cluster.node(master) as r:  # the old master sent the replicas on with MOVED
            moved = int(r.info("errorstats").get("errorstat_MOVED", {}).get("count", 0))
        redis_cluster.wait_healthy()
    finally:
        for g in gws:
            stop(g.proc)
    ok = statuses.count(200)
    print(
        f"\n{len(statuses)} SDK calls over 3 replicas: {ok} served, {statuses.count(429)} refused; "
        f"failover took {took:.2f} s and the burst ended {burst_s:.2f} s after it began; "
        f"spent ${spent:.4f} of ${CAP_USD}; {moved} MOVED replies followed; "
        f"replicas started in {t_started:.1f} s"
    )
    assert moved_to == replica and moved > 0  # the failover happened under the replicas' feet
    assert set(statuses) <= {200, 429}, sorted(set(statuses))
    assert ok >= 10 and statuses.count(429) >= CALLS // 2
    assert served == ok, f"upstream served {served} calls but {ok} were answered 200"
    assert 0 < spent <= CAP_USD + 1e-9, f"spent ${spent:.4f} over the ${CAP_USD} cap"
    assert reserved == 0
    assert settled == pytest.approx(spent, abs=1e-9)  # the cluster and the ledger agree

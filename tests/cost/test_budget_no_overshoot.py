"""A daily cap cannot be overshot: 500 concurrent calls against a cap that affords about 50.

Runs against a real simulator process (so the upstream's own count of served calls
is the ground truth) and real gateway processes: one on the embedded backend, and
three sharing Redis and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import redis
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

PG = "postgresql://postgres@127.0.0.1:5432/test"
CAP_USD = 1.25
PRICE = {"input": 100.0, "output": 1000.0, "cache_write": 100.0, "cache_read": 100.0}


@pytest.fixture
def sim_server() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "bastion"), "sim", "--port", str(port), "--ttft-ms", "20"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


def capped_config(tmp: Path, sim_url: str, **extra: Any) -> Path:
    return write_config(
        tmp,
        providers={"up": {"kind": "anthropic", "base_url": sim_url}},
        models={"capped": {"deployments": [{"provider": "up", "model": "capped-model"}]}},
        cost={"prices": {"capped-model": PRICE}, "caps": {"global_daily_usd": CAP_USD}},
        **extra,
    )


async def _fire(urls: list[str], key: str, n: int) -> list[int]:
    body = json.dumps(
        {"model": "capped", "max_tokens": 40, "messages": [{"role": "user", "content": "hello"}]}
    )
    conn = aiohttp.TCPConnector(limit=n)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=120)) as s:

        async def one(i: int) -> int:
            async with s.post(
                urls[i % len(urls)] + "/v1/messages",
                data=body,
                headers={"x-api-key": key, "content-type": "application/json"},
            ) as r:
                await r.read()
                return r.status

        return list(await asyncio.gather(*(one(i) for i in range(n))))


async def _upstream_served(sim_url: str) -> int:
    async with aiohttp.ClientSession() as s, s.get(sim_url + "/_sim/requests") as r:
        recs = await r.json()
    return sum(1 for rec in recs if rec["path"] == "/v1/messages")


async def _ledger(store_url: str, n_expected: int) -> tuple[int, float]:
    from bastion.store import open_store

    store = open_store(store_url)
    try:
        for _ in range(100):  # records are written off the request path: wait for the flush
            spend = await store.spend_by_day(DayClock().day())
            rows = len(await store.recent_calls(10_000))
            if rows >= n_expected:
                break
            await asyncio.sleep(0.1)
        return rows, sum(spend.values())
    finally:
        await store.close()


def _check(statuses: list[int], served: int, rows: int, spent: float) -> None:
    ok = statuses.count(200)
    assert set(statuses) <= {200, 429}, statuses
    assert ok >= 10, f"too few calls served ({ok}): the cap should afford about 50"
    assert statuses.count(429) >= 400
    assert served == ok, f"upstream served {served} calls but {ok} were answered 200"
    assert spent <= CAP_USD + 1e-9, f"spent ${spent:.4f} over the ${CAP_USD} cap"
    assert spent > 0


async def test_embedded_backend_never_overshoots(tmp_path: Path, sim_server: str) -> None:
    gw = start_gateway(capped_config(tmp_path, sim_server))
    try:
        statuses = await _fire([gw.url], gw.key, 500)
        served = await _upstream_served(sim_server)
        rows, spent = await _ledger(
            f"sqlite:///{tmp_path / 'bastion.db'}", statuses.count(200) + statuses.count(429)
        )
    finally:
        stop(gw.proc)
    _check(statuses, served, rows, spent)


async def test_three_replicas_on_redis_never_overshoot(tmp_path: Path, sim_server: str) -> None:
    schema = "bastion_test_" + uuid.uuid4().hex[:10]
    prefix = "bastiontest-" + uuid.uuid4().hex[:10]
    conn = await asyncpg.connect(PG)
    await conn.execute(f"CREATE SCHEMA {schema}")
    store_url = f"{PG}?search_path={schema}"
    gws: list[RunningGateway] = []
    try:
        cfg = capped_config(
            tmp_path,
            sim_server,
            store={"url": store_url},
            state={"url": "redis://127.0.0.1:6379/0", "prefix": prefix},
        )
        first = start_gateway(cfg)
        gws.append(first)
        for _ in range(2):
            g = start_gateway(cfg)
            gws.append(g)
        statuses = await _fire([g.url for g in gws], first.key, 500)
        served = await _upstream_served(sim_server)
        rows, spent = await _ledger(store_url, statuses.count(200) + statuses.count(429))
        _check(statuses, served, rows, spent)
    finally:
        for g in gws:
            stop(g.proc)
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()
        r = redis.Redis(host="127.0.0.1", port=6379)
        for k in r.scan_iter(match=f"{prefix}*", count=1000):
            r.delete(k)
        r.close()

"""Helpers for the budget attack tests: bounded bursts, the record ledger, upstream bodies, a
simulator that logs each upstream request next to the budget operations, worst cases."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import orjson

from bastion.clock import DayClock
from bastion.cost.pricing import PriceTable
from bastion.cost.tokens import input_upper_bound, output_upper_bound
from bastion.providers.sim import Simulator
from bastion.store.models import CallRecord

PG = "postgresql://postgres@127.0.0.1:5432/test"
AV = {"anthropic-version": "2023-06-01"}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any


async def burst(
    urls: Sequence[str],
    key: str,
    bodies: Sequence[Mapping[str, Any]],
    *,
    path: str = "/v1/messages",
    headers: Mapping[str, str] | None = None,
    concurrency: int = 100,
) -> list[Answer]:
    """POST every body (round-robin over ``urls``), at most ``concurrency`` at once."""
    sem = asyncio.Semaphore(concurrency)
    hs = {"x-api-key": key, "content-type": "application/json", **AV, **(headers or {})}
    conn = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as s:

        async def one(i: int, body: Mapping[str, Any]) -> Answer:
            async with (
                sem,
                s.post(urls[i % len(urls)] + path, data=json.dumps(body), headers=hs) as r,
            ):
                raw = await r.read()
                return Answer(
                    r.status, {k.lower(): v for k, v in r.headers.items()}, json.loads(raw)
                )

        return list(await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies))))


async def records(store_url: str, n_expected: int, wait_s: float = 15.0) -> list[CallRecord]:
    """The call records in a gateway's store, once at least ``n_expected`` were flushed."""
    from bastion.store import open_store

    store = open_store(store_url)
    try:
        deadline = asyncio.get_running_loop().time() + wait_s
        while True:
            recs = await store.recent_calls(100_000)
            if len(recs) >= n_expected or asyncio.get_running_loop().time() > deadline:
                return recs
            await asyncio.sleep(0.1)
    finally:
        await store.close()


async def ledger_total(store_url: str) -> float:
    """Today's spend in the gateway's ledger (what the dashboard and alerts see)."""
    from bastion.store import open_store

    store = open_store(store_url)
    try:
        return sum((await store.spend_by_day(DayClock().day())).values())
    finally:
        await store.close()


async def upstream_bodies(sim_url: str) -> list[dict[str, Any]]:
    """Every LLM request body a `bastion sim` process has received, oldest first."""
    async with aiohttp.ClientSession() as s, s.get(sim_url + "/_sim/requests") as r:
        recs = await r.json()
    return [rec["body"] for rec in recs if rec["method"] == "POST"]


@asynccontextmanager
async def pg_schema() -> AsyncIterator[str]:
    """A fresh PostgreSQL schema for one test's record store; dropped afterwards."""
    schema = "bastion_test_" + uuid.uuid4().hex[:10]
    conn = await asyncpg.connect(PG)
    await conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG}?search_path={schema}"
    finally:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


def worst_case(prices: PriceTable, model: str, kind: str, body: Mapping[str, Any]) -> float:
    """What BudgetGuard must hold for one upstream request with this body, priced at ``model``.

    Recomputed here from the body the provider actually received (serialized as the gateway
    serializes it), so a reservation priced at another model or another body cannot match.
    """
    price = prices.for_deployment(model, kind)
    assert price is not None, model
    raw = orjson.dumps(dict(body))
    return price.worst_case(input_upper_bound(dict(body), len(raw)), output_upper_bound(dict(body)))


class LoggedSimulator(Simulator):
    """The in-process simulator, writing each upstream request into a shared event log.

    Shared with a ``RecordingState``'s ``log``, it shows whether every request that reached the
    provider was reserved before it was sent: ``("send", model, parsed body)``.
    """

    def __init__(self, log: list[Any], **kw: Any) -> None:
        super().__init__(**kw)
        self.event_log = log

    async def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Any:
        parsed = orjson.loads(body) if body else {}
        self.event_log.append(("send", parsed.get("model"), parsed))
        return await super().handle(method, path, headers, body)


def check_every_send_was_reserved(log: Sequence[tuple[Any, ...]]) -> None:
    """At every point of the log, upstream requests so far <= reservations so far."""
    held = sent = 0
    for event in log:
        if event[0] == "reserve":
            held += 1
        elif event[0] == "send":
            sent += 1
            assert sent <= held, f"upstream request #{sent} was sent without a reservation: {log}"

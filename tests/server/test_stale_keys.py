"""Stale-while-error keys: a record store outage does not 503 callers this process already knows.

A real PostgreSQL behind a TCP forwarder that the tests cut and restore. A key resolved
before the outage keeps working for ``server.key_stale_seconds``; a key never seen fails
closed; a key revoked during the outage is refused as soon as the store answers again.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx2 as httpx
import pytest
from tests.conftest import RunningGateway, start_gateway, stop, write_config
from tests.server._tcp_proxy import TcpProxy

from bastion.auth import KeyResolver, new_key
from bastion.errors import AuthenticationFailed, StateUnavailable
from bastion.store import open_store

PG = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
async def pg_schema() -> AsyncIterator[str]:
    schema = "bastion_test_" + uuid.uuid4().hex[:10]
    conn = await asyncpg.connect(PG)
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield schema
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    p = TcpProxy(5432)
    p.up()
    try:
        yield p
    finally:
        p.close()


async def test_known_keys_survive_an_outage_unknown_fail_closed_revocations_land_on_recovery(
    pg_schema: str, proxy: TcpProxy
) -> None:
    direct = open_store(f"{PG}?search_path={pg_schema}")
    proxied = open_store(
        f"postgresql://postgres@127.0.0.1:{proxy.port}/test?search_path={pg_schema}"
    )
    try:
        await direct.migrate()
        known, known_rec = new_key("known")
        doomed, doomed_rec = new_key("doomed")
        stranger, stranger_rec = new_key("stranger")
        for rec in (known_rec, doomed_rec, stranger_rec):
            await direct.create_key(rec)
        keys = KeyResolver(proxied, ttl=0.1, stale=2.0)
        assert (await keys.resolve(known)).key_id == known_rec.id
        assert (await keys.resolve(doomed)).key_id == doomed_rec.id

        proxy.down()
        await asyncio.sleep(0.15)  # past the cache: every lookup now goes to a dead store
        assert (await keys.resolve(known)).key_id == known_rec.id
        with pytest.raises(StateUnavailable):
            await keys.resolve(stranger)  # never seen: fail closed
        with pytest.raises(StateUnavailable):
            await keys.resolve("bst-bogus")
        await direct.revoke_key(doomed_rec.id)  # revoked while this process cannot see it
        assert (await keys.resolve(doomed)).key_id == doomed_rec.id

        proxy.up()
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            try:
                await keys.resolve(doomed)
            except AuthenticationFailed:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("a key revoked during the outage was still accepted after recovery")
        assert time.monotonic() - (end - 3.0) < 1.5  # the store is asked again within a second
        assert (await keys.resolve(known)).key_id == known_rec.id

        proxy.down()
        await asyncio.sleep(0.3)
        assert (await keys.resolve(known)).key_id == known_rec.id  # within the stale window
        await asyncio.sleep(2.0)
        with pytest.raises(StateUnavailable):
            await keys.resolve(known)  # the window is bounded
    finally:
        await proxied.close()
        await direct.close()


async def test_a_flood_of_bogus_keys_does_not_evict_the_keys_an_outage_falls_back_on(
    tmp_path: Path,
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'k.db'}")
    await store.migrate()
    secret, rec = new_key("real")
    await store.create_key(rec)
    keys = KeyResolver(store, ttl=0.0, stale=60.0, max_entries=50)
    await keys.resolve(secret)
    for i in range(200):
        with pytest.raises(AuthenticationFailed):
            await keys.resolve(f"bst-bogus-{i}")
    await store.close()  # now every lookup fails: the real key is served from its last lookup
    assert (await keys.resolve(secret)).key_id == rec.id


# -- a real gateway process ------------------------------------------------------------------


@pytest.fixture
def pg_gateway(
    tmp_path: Path, pg_schema: str, proxy: TcpProxy
) -> Iterator[tuple[RunningGateway, str]]:
    url = f"postgresql://postgres@127.0.0.1:{proxy.port}/test?search_path={pg_schema}"
    cfg = write_config(
        tmp_path,
        store={"url": url},
        server={"key_cache_seconds": 0.2, "key_stale_seconds": 4.0},
    )
    gw = start_gateway(cfg)
    try:
        yield gw, pg_schema
    finally:
        stop(gw.proc)


def _call(gw: RunningGateway, key: str) -> httpx.Response:
    return httpx.post(
        gw.url + "/v1/messages",
        headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
        json={
            "model": "claude-sonnet-5",
            "max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}],
        },
        timeout=20,
    )


def _mint(gw: RunningGateway, name: str) -> str:
    out = gw.cli("keys", "create", "--name", name)
    assert out.returncode == 0, out.stderr
    return next(ln.split()[-1] for ln in out.stdout.splitlines() if ln.startswith("secret:"))


def test_a_gateway_keeps_serving_known_keys_through_a_record_store_outage(
    pg_gateway: tuple[RunningGateway, str], proxy: TcpProxy
) -> None:
    gw, schema = pg_gateway
    doomed = _mint(gw, "doomed")
    stranger = _mint(gw, "stranger")
    assert _call(gw, gw.key).status_code == 200
    assert _call(gw, doomed).status_code == 200

    proxy.down()
    time.sleep(0.3)
    for _ in range(5):
        assert _call(gw, gw.key).status_code == 200
    r = _call(gw, stranger)
    assert r.status_code == 503
    assert r.json()["type"] == "error" and "record store" in r.json()["error"]["message"]
    assert str(proxy.port) not in r.text and "postgresql" not in r.text

    async def revoke() -> None:
        conn = await asyncpg.connect(PG)
        try:
            await conn.execute(
                f'UPDATE "{schema}".keys SET revoked_at = extract(epoch from now()) WHERE name = $1',
                "doomed",
            )
        finally:
            await conn.close()

    asyncio.run(revoke())
    proxy.up()
    deadline = time.monotonic() + 5
    status = 0
    while time.monotonic() < deadline:
        status = _call(gw, doomed).status_code
        if status == 401:
            break
        time.sleep(0.1)
    assert status == 401
    assert _call(gw, gw.key).status_code == 200
    assert _call(gw, stranger).status_code == 200

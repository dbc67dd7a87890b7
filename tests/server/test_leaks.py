"""Nothing internal in responses: no store URL, no host:port of a store or provider, no secret.

A real ``bastion serve`` on PostgreSQL records and Redis counters, each reached through a
TCP forwarder the test cuts, with providers at ports where nothing listens. Every error
path a client can reach is triggered (bad key, bad body, unknown model, upstream down,
record store down, counter store down, budget refusal, admin and probe routes), and no
response header or body may carry a configured URL, the host:port of a store or
upstream, or any secret.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx2 as httpx
import pytest
import redis
from tests.conftest import RunningGateway, free_port, sim_models, start_gateway, stop, write_config
from tests.server._tcp_proxy import TcpProxy

PG = "postgresql://postgres@127.0.0.1:5432/test"
UPSTREAM_SECRET = "sk-ant-leaktest-" + uuid.uuid4().hex
OPENAI_SECRET = "sk-leaktest-" + uuid.uuid4().hex
ADMIN_SECRET = "bst-admin-leaktest-" + uuid.uuid4().hex
AV = {"anthropic-version": "2023-06-01"}
MSG = [{"role": "user", "content": "hello"}]


class Leaks:
    """A running gateway and every string that must never reach a client."""

    def __init__(
        self, gw: RunningGateway, pg: TcpProxy, rds: TcpProxy, forbidden: list[str]
    ) -> None:
        self.gw = gw
        self.pg = pg
        self.rds = rds
        self.forbidden = forbidden
        self.seen: list[tuple[str, httpx.Response]] = []

    def request(self, label: str, method: str, path: str, **kw: Any) -> httpx.Response:
        r = httpx.request(method, self.gw.url + path, timeout=30, **kw)
        self.seen.append((label, r))
        return r

    def assert_clean(self) -> None:
        bad = []
        for label, r in self.seen:
            text = r.text + "\n" + "\n".join(f"{k}: {v}" for k, v in r.headers.items())
            for f in self.forbidden:
                if f.lower() in text.lower():
                    bad.append(f"{label} (HTTP {r.status_code}) carries {f!r}: {r.text[:300]}")
        assert not bad, "\n".join(bad)


@pytest.fixture(scope="module")
def leaks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Leaks]:
    tmp = tmp_path_factory.mktemp("leaks")
    schema = "bastion_test_" + uuid.uuid4().hex[:10]
    prefix = "bastionleak-" + uuid.uuid4().hex[:8]

    async def ddl(sql: str) -> None:
        conn = await asyncpg.connect(PG)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(ddl(f'CREATE SCHEMA "{schema}"'))
    pg, rds = TcpProxy(5432), TcpProxy(6379)
    pg.up()
    rds.up()
    dead_a, dead_o = free_port(), free_port()
    store_url = f"postgresql://postgres@127.0.0.1:{pg.port}/test?search_path={schema}"
    state_url = f"redis://127.0.0.1:{rds.port}/0"
    models = sim_models(
        {
            "down-anthropic": {
                "deployments": [
                    {"provider": "anthropic", "model": "claude-sonnet-5"},
                    {"provider": "openai", "model": "gpt-4.1"},
                ]
            },
            "down-openai": {"deployments": [{"provider": "openai", "model": "gpt-4.1"}]},
        }
    )
    cfg = write_config(
        tmp,
        store={"url": store_url},
        state={"url": state_url, "prefix": prefix},
        providers={
            "sim": {"kind": "sim"},
            "anthropic": {
                "kind": "anthropic",
                "base_url": f"http://127.0.0.1:{dead_a}",
                "api_key_env": "LEAK_ANTHROPIC_KEY",
            },
            "openai": {
                "kind": "openai-compatible",
                "base_url": f"http://localhost:{dead_o}/v1",
                "api_key_env": "LEAK_OPENAI_KEY",
            },
        },
        models=models,
        features={"capped": {"daily_budget_usd": 0.0000001}},
        reliability={"retry": {"attempts_per_deployment": 1, "backoff_base": 0.01}},
        server={"key_cache_seconds": 0.1, "key_stale_seconds": 0.5},
    )
    env = {
        "LEAK_ANTHROPIC_KEY": UPSTREAM_SECRET,
        "LEAK_OPENAI_KEY": OPENAI_SECRET,
        "BASTION_ADMIN_KEY": ADMIN_SECRET,
    }
    gw = start_gateway(cfg, env=env)
    forbidden = [
        store_url,
        state_url,
        "postgresql://",
        "redis://",
        "search_path",
        schema,
        prefix,
        UPSTREAM_SECRET,
        OPENAI_SECRET,
        ADMIN_SECRET,
        gw.key,
        str(tmp),
    ]
    for port in (pg.port, rds.port, dead_a, dead_o, 5432, 6379):
        forbidden += [f"127.0.0.1:{port}", f"localhost:{port}", f"', {port})", f"port={port}"]
    try:
        yield Leaks(gw, pg, rds, forbidden)
    finally:
        stop(gw.proc)
        pg.close()
        rds.close()
        asyncio.run(ddl(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        r = redis.Redis(host="127.0.0.1", port=6379)
        for k in r.scan_iter(match=f"{prefix}*", count=1000):
            r.delete(k)
        r.close()


def _anthropic(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "max_tokens": 20, "messages": MSG, **extra}


def _openai(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": MSG, **extra}


def _every_error_path(x: Leaks, phase: str) -> None:
    key = {"x-api-key": x.gw.key, **AV}
    bearer = {"authorization": f"Bearer {x.gw.key}"}
    admin = {"x-api-key": ADMIN_SECRET}
    a, o = "/v1/messages", "/v1/chat/completions"
    x.request(f"{phase}: ok", "POST", a, headers=key, json=_anthropic("claude-sonnet-5"))
    x.request(f"{phase}: bad key", "POST", a, headers={"x-api-key": "bst-nope", **AV}, json={})
    x.request(f"{phase}: no key", "POST", o, json=_openai("gpt-4.1"))
    x.request(f"{phase}: not json", "POST", a, headers=key, content=b"{nope")
    x.request(
        f"{phase}: deep",
        "POST",
        o,
        headers=bearer,
        content=b'{"x":' + b"[" * 300 + b"]" * 300 + b"}",
    )
    x.request(f"{phase}: bad model", "POST", a, headers=key, json=_anthropic("a\u00e9"))
    x.request(f"{phase}: unknown model", "POST", o, headers=bearer, json=_openai("nope-9"))
    for model in ("down-anthropic", "down-openai"):
        x.request(f"{phase}: {model}", "POST", a, headers=key, json=_anthropic(model))
        x.request(f"{phase}: {model} oa", "POST", o, headers=bearer, json=_openai(model))
        x.request(
            f"{phase}: {model} stream",
            "POST",
            a,
            headers=key,
            json=_anthropic(model, stream=True),
        )
        x.request(
            f"{phase}: {model} oa stream",
            "POST",
            o,
            headers=bearer,
            json=_openai(model, stream=True),
        )
    capped = {**key, "x-bastion-feature": "capped"}
    x.request(f"{phase}: budget", "POST", a, headers=capped, json=_anthropic("claude-sonnet-5"))
    x.request(f"{phase}: readyz", "GET", "/readyz")
    x.request(f"{phase}: healthz", "GET", "/healthz")
    x.request(f"{phase}: models", "GET", "/v1/models", headers=bearer)
    x.request(f"{phase}: metrics anon", "GET", "/metrics")
    x.request(f"{phase}: metrics admin", "GET", "/metrics", headers=admin)
    x.request(f"{phase}: kill anon", "GET", "/admin/kill")
    x.request(f"{phase}: kill admin", "GET", "/admin/kill", headers=admin)
    x.request(f"{phase}: kill bad", "POST", "/admin/kill", headers=admin, content=b"[")
    for api in ("summary", "calls", "breakers"):
        x.request(f"{phase}: {api}", "GET", f"/admin/api/{api}", headers=admin)
    x.request(f"{phase}: 404", "GET", "/nowhere", headers=key)


def test_no_response_carries_an_address_or_a_secret_through_every_error_path(
    leaks: Leaks,
) -> None:
    x = leaks
    _every_error_path(x, "healthy")
    statuses = {label: r.status_code for label, r in x.seen}
    assert statuses["healthy: ok"] == 200
    assert statuses["healthy: budget"] == 429
    assert statuses["healthy: down-anthropic"] in (502, 503)
    assert statuses["healthy: metrics anon"] == 401  # spend is only for the admin key
    assert statuses["healthy: metrics admin"] == 200

    x.rds.down()  # the counter store goes away
    _every_error_path(x, "redis down")
    x.rds.up()

    x.pg.down()  # the record store goes away (and stays away past the stale window)
    time.sleep(0.7)
    _every_error_path(x, "postgres down")
    down = {label: r.status_code for label, r in x.seen if label.startswith("postgres down")}
    assert down["postgres down: ok"] == 503
    assert down["postgres down: readyz"] == 503

    x.rds.down()
    _every_error_path(x, "both down")
    x.pg.up()
    x.rds.up()
    x.assert_clean()
    assert x.gw.proc.poll() is None

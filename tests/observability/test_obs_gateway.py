"""Observability through the real gateway: record fields, trace ids end to end, metrics, and a
store outage that loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import anthropic
import asyncpg
import httpx2 as httpx
import openai
from tests.asgi import asgi_request
from tests.conftest import BIN, RunningGateway, sim_models

import bastion
from bastion.store import CallRecord, open_store

PG = "postgresql://postgres@127.0.0.1:5432/test"


async def _records_of_trace(store_url: str, trace_id: str, n: int) -> list[CallRecord]:
    store = open_store(store_url)
    try:
        for _ in range(100):
            recs = await store.get_calls_by_trace(trace_id)
            if len(recs) >= n:
                return recs
            await asyncio.sleep(0.05)
        return await store.get_calls_by_trace(trace_id)
    finally:
        await store.close()


async def test_records_of_sdk_calls_carry_every_field(gateway_proc: RunningGateway) -> None:
    trace = uuid.uuid4().hex
    tp = f"00-{trace}-{'1' * 16}-01"
    ac = anthropic.Anthropic(base_url=gateway_proc.url, api_key=gateway_proc.key, max_retries=0)
    oc = openai.OpenAI(base_url=gateway_proc.url + "/v1", api_key=gateway_proc.key, max_retries=0)
    # only a version the registry has is recorded: publish the one the calls name
    text = gateway_proc.config_path.parent / f"drafter-{trace[:8]}.txt"
    text.write_text("You draft support replies.")
    published = gateway_proc.cli("prompts", "publish", f"drafter-{trace[:8]}", "--file", str(text))
    version = published.stdout.split()[0]
    assert version == f"drafter-{trace[:8]}@1", published.stderr
    hs = {
        "traceparent": tp,
        "x-bastion-feature": "obs",
        "x-bastion-conversation": "conv-1",
        "x-bastion-prompt-version": version,
        "x-bastion-user": "user-42",
    }
    ac.messages.create(
        model="claude-sonnet-5",
        max_tokens=50,
        extra_headers=hs,
        messages=[{"role": "user", "content": "record me"}],
    )
    with ac.messages.stream(
        model="claude-sonnet-5",
        max_tokens=50,
        extra_headers=hs,
        messages=[{"role": "user", "content": "stream me"}],
    ) as s:
        s.get_final_message()
    list(
        oc.chat.completions.create(
            model="gpt-4.1",
            stream=True,
            extra_headers=hs,
            messages=[{"role": "user", "content": "openai stream"}],
        )
    )
    store_url = f"sqlite:///{gateway_proc.config_path.parent / 'bastion.db'}"
    recs = await _records_of_trace(store_url, trace, 3)
    assert len(recs) == 3
    for r in recs:
        assert r.trace_id == trace and r.status == 200
        assert r.feature == "obs" and r.conversation_id == "conv-1"
        assert r.prompt_version == version and r.user_id == "user-42"
        assert r.input_tokens > 0 and r.output_tokens > 0 and r.cost_usd > 0
        assert r.latency_ms > 0 and r.attempts == 1 and r.provider == "sim"
        assert r.served_model in ("claude-sonnet-5", "gpt-4.1")
        assert r.input_text and r.output_text
    streams = [r for r in recs if r.stream]
    assert len(streams) == 2 and all(r.ttft_ms is not None and r.ttft_ms > 0 for r in streams)
    assert {r.api_format for r in recs} == {"anthropic", "openai"}
    # and the on-call engineer's view of the trace
    out = subprocess.run(
        [str(BIN / "bastion"), "trace", trace, "--config", str(gateway_proc.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert out.count("claude-sonnet-5") >= 2 and "gpt-4.1" in out


def test_metrics_endpoint_has_low_cardinality_series(gateway_proc: RunningGateway) -> None:
    oc = openai.OpenAI(base_url=gateway_proc.url + "/v1", api_key=gateway_proc.key, max_retries=0)
    oc.chat.completions.create(
        model="gpt-4.1", messages=[{"role": "user", "content": "m"}], user="someone-secret-id"
    )
    text = httpx.get(gateway_proc.url + "/metrics", headers={"x-api-key": gateway_proc.key}).text
    for name in (
        "bastion_requests_total",
        "bastion_request_duration_seconds_bucket",
        "bastion_tokens_total",
        "bastion_cost_usd_total",
        "bastion_recorder_written_total",
    ):
        assert name in text, name
    assert "someone-secret-id" not in text


async def test_trace_id_flows_from_client_to_upstream_and_back(tmp_path: Path) -> None:
    trace = uuid.uuid4().hex
    async with bastion.Gateway.from_config(None, **_cfg(tmp_path)) as gw:
        app = bastion.server_app(gw)
        status, headers, _ = await asgi_request(
            app,
            "POST",
            "/v1/messages",
            b'{"model":"claude-sonnet-5","max_tokens":20,"messages":[{"role":"user","content":"t"}]}',
            {"x-api-key": await _key(gw), "traceparent": f"00-{trace}-{'a' * 16}-01"},
        )
        assert status == 200
        upstream = gw.simulator.requests[-1].headers["traceparent"]
    sent_trace, sent_span = upstream.split("-")[1:3]
    assert sent_trace == trace
    assert (
        headers["traceparent"] == f"00-{trace}-{sent_span}-01"
    )  # echoed: the same span we sent upstream


async def _key(gw: bastion.Gateway) -> str:
    from bastion.auth import new_key

    secret, rec = new_key("t")
    await gw.store.create_key(rec)
    return secret


def _cfg(tmp: Path, store_url: str | None = None) -> dict[str, Any]:
    return {
        "store": {"url": store_url or f"sqlite:///{tmp / 'o.db'}"},
        "state": {"url": "memory://"},
        "observability": {"spill_path": str(tmp / "spill.jsonl")},
        "providers": {"sim": {"kind": "sim"}},
        "models": sim_models(),
    }


class TcpCut:
    """A loopback TCP forwarder to PostgreSQL that can be cut and restored: a real outage."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._conns):
            w.transport.abort()
        self._conns.clear()
        await self._server.wait_closed()

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        ur, uw = await asyncio.open_connection("127.0.0.1", self.target)
        self._conns.update((w, uw))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(r, uw), pipe(ur, w))


async def test_store_outage_loses_no_record_and_duplicates_none(tmp_path: Path) -> None:
    schema = "bastion_test_" + uuid.uuid4().hex[:10]
    conn = await asyncpg.connect(PG)
    await conn.execute(f"CREATE SCHEMA {schema}")
    cut = TcpCut(5432)
    await cut.up()
    url = f"postgresql://postgres@127.0.0.1:{cut.port}/test?search_path={schema}"
    body = {
        "model": "claude-sonnet-5",
        "max_tokens": 20,
        "messages": [{"role": "user", "content": "x"}],
    }
    try:
        async with bastion.Gateway.from_config(None, **_cfg(tmp_path, url)) as gw:
            gw.recorder._retry = 0.2  # replay promptly for the test
            for _ in range(10):
                await gw.messages(body)
            await gw.recorder.flush()
            await cut.down()
            for _ in range(25):
                await gw.messages(body)  # calls keep working while the store is down
            await gw.recorder.flush()
            assert gw.recorder.stats.spilled >= 25
            assert (tmp_path / "spill.jsonl").exists()
            await cut.up()
            deadline = time.monotonic() + 15
            n = 0
            while time.monotonic() < deadline:
                n = await conn.fetchval(f"SELECT count(*) FROM {schema}.calls")
                if n >= 35:
                    break
                await asyncio.sleep(0.1)
            assert gw.recorder.stats.dropped == 0
        n = await conn.fetchval(f"SELECT count(*) FROM {schema}.calls")
        distinct = await conn.fetchval(f"SELECT count(DISTINCT request_id) FROM {schema}.calls")
        assert n == distinct == 35
    finally:
        with contextlib.suppress(Exception):
            await cut.down()
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()

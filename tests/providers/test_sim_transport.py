"""The in-process ``SimTransport`` fails and paces the way the HTTP path does."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest

from bastion.errors import UpstreamConnectError, UpstreamTimeout
from bastion.providers.base import UpstreamRequest
from bastion.providers.sim import SimTransport, Simulator
from bastion.providers.sse import SSEDecoder

A_HEADERS = {"anthropic-version": "2023-06-01", "content-type": "application/json"}


def anthropic_req(headers: dict[str, str] | None = None, **body: Any) -> UpstreamRequest:
    payload = {
        "model": "sim-small",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "Hi"}],
    }
    payload.update(body)
    return UpstreamRequest(
        "POST",
        "sim://local/v1/messages",
        {**A_HEADERS, **(headers or {})},
        orjson.dumps(payload),
        stream=bool(body.get("stream")),
    )


def openai_req(url: str = "sim://local/v1/chat/completions", **body: Any) -> UpstreamRequest:
    payload = {"model": "sim-small", "messages": [{"role": "user", "content": "Hi"}], **body}
    return UpstreamRequest("POST", url, {}, orjson.dumps(payload), stream=bool(body.get("stream")))


async def test_send_and_read_a_message() -> None:
    transport = SimTransport(Simulator())
    resp = await transport.send(anthropic_req(), timeout=1.0)
    assert resp.status == 200
    assert resp.headers["content-type"] == "application/json"
    body = orjson.loads(await resp.read())
    assert body["type"] == "message" and body["usage"]["output_tokens"] == 24
    await resp.aclose()
    await transport.aclose()


async def test_openai_path_works_with_and_without_the_v1_prefix() -> None:
    transport = SimTransport()
    for url in ("sim://local/v1/chat/completions", "sim://local/chat/completions"):
        resp = await transport.send(openai_req(url), timeout=1.0)
        assert resp.status == 200
        assert orjson.loads(await resp.read())["object"] == "chat.completion"
    assert transport.sim.request_count() == 2


async def test_stream_chunks_are_whole_sse_events() -> None:
    resp = await SimTransport().send(anthropic_req(stream=True), timeout=1.0)
    decoder = SSEDecoder()
    chunks = [c async for c in resp.iter_chunks()]
    events = [e for c in chunks for e in decoder.feed(c)]
    assert len(events) == len(chunks)
    assert events[-1].event == "message_stop"
    assert decoder.pending == b""


async def test_pacing_spreads_chunks_over_time() -> None:
    sim = Simulator(ttft_ms=60, chunk_ms=15, reply_tokens=5)
    started = time.monotonic()
    resp = await SimTransport(sim).send(openai_req(stream=True), timeout=1.0)
    assert time.monotonic() - started < 0.05  # headers come at once, the first token later
    stamps = []
    async for chunk in resp.iter_chunks():
        stamps.append((time.monotonic() - started, chunk))
    content = [t for t, c in stamps if b'"content":"' in c and b'"content":""' not in c]
    assert len(content) == 5
    assert stamps[0][0] >= 0.06
    assert content[-1] - content[0] >= 4 * 0.015 * 0.9


async def test_per_request_pacing_headers_override_the_defaults() -> None:
    sim = Simulator()
    req = anthropic_req({"x-sim-ttft-ms": "80"})
    started = time.monotonic()
    resp = await SimTransport(sim).send(req, timeout=1.0)
    await resp.read()
    assert time.monotonic() - started >= 0.08


async def test_unary_headers_wait_for_the_whole_answer() -> None:
    sim = Simulator(chunk_ms=20, reply_tokens=10)
    with pytest.raises(UpstreamTimeout):
        await SimTransport(sim).send(openai_req(), timeout=0.05)


async def test_silence_becomes_upstream_timeout() -> None:
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        await SimTransport().send(anthropic_req({"x-sim-fault": "silence"}), timeout=0.1)
    assert time.monotonic() - started < 0.5


async def test_reset_becomes_upstream_connect_error() -> None:
    with pytest.raises(UpstreamConnectError):
        await SimTransport().send(openai_req(model="sim-small+fault=reset"), timeout=1.0)


async def test_non_sim_urls_are_refused() -> None:
    with pytest.raises(UpstreamConnectError):
        await SimTransport().send(
            openai_req("https://api.openai.com/v1/chat/completions"), timeout=1
        )


async def test_cut_stream_just_ends_early() -> None:
    resp = await SimTransport().send(
        anthropic_req({"x-sim-fault": "cut_after:3"}, stream=True), timeout=1.0
    )
    chunks = [c async for c in resp.iter_chunks()]
    assert len(chunks) == 3
    assert not any(b"message_stop" in c for c in chunks)


async def test_stall_leaves_the_consumer_to_time_out() -> None:
    resp = await SimTransport().send(
        openai_req(stream=True, model="sim-small+fault=stall_after:2"), timeout=1.0
    )
    got: list[bytes] = []

    async def consume() -> None:
        async for chunk in resp.iter_chunks():
            got.append(chunk)

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(consume(), timeout=0.1)
    assert len(got) == 2
    await resp.aclose()


async def test_error_status_comes_back_as_a_response() -> None:
    resp = await SimTransport().send(anthropic_req({"x-sim-fault": "status:529"}), timeout=1.0)
    assert resp.status == 529
    assert resp.headers["request-id"].startswith("req_")
    assert orjson.loads(await resp.read())["error"]["type"] == "overloaded_error"

"""SIGTERM on a real `bastion serve`: calls in flight finish within the drain bound, new
connections are refused, records are flushed and the process exits 0; what outlives the drain
is cut (never ended cleanly), and a second signal exits at once."""

from __future__ import annotations

import asyncio
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from tests.conftest import RunningGateway, sim_models, start_gateway, stop, write_config

CHUNK_MS = 200
MARGIN_S = 2.0  # start of the drain (a 0.1 s tick), cut grace, record flush, interpreter exit


def _paced(tokens: int) -> dict[str, Any]:
    """An alias whose simulator answers ``tokens`` tokens, one every CHUNK_MS."""
    headers = {"x-sim-chunk-ms": str(CHUNK_MS), "x-sim-reply-tokens": str(tokens)}
    return {"deployments": [{"provider": "sim", "model": "paced", "headers": headers}]}


StartGateway = Callable[[float], RunningGateway]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[StartGateway]:
    """Start a gateway with a 20-token and a 60-token paced alias and the given drain bound."""
    started: list[RunningGateway] = []

    def run(drain: float) -> RunningGateway:
        models = sim_models({"paced-20": _paced(20), "paced-60": _paced(60)})
        server = {"shutdown_drain_seconds": drain}
        started.append(start_gateway(write_config(tmp_path, models=models, server=server)))
        return started[-1]

    yield run
    for gw in started:
        stop(gw.proc)


@dataclass
class Seen:
    """What a client got from one call."""

    request_id: str = ""
    status: int = 0
    events: list[str] = field(default_factory=list)
    body: bytes = b""
    error: BaseException | None = None
    ended_at: float = 0.0


def _request(
    gw: RunningGateway, alias: str, *, stream: bool
) -> tuple[dict[str, Any], dict[str, str]]:
    body = {
        "model": alias,
        "max_tokens": 500,
        "stream": stream,
        "messages": [{"role": "user", "content": "Tell me about shutdowns"}],
    }
    return body, {"x-api-key": gw.key, "anthropic-version": "2023-06-01"}


async def _stream(
    client: httpx.AsyncClient, gw: RunningGateway, alias: str, first_token: asyncio.Event
) -> Seen:
    """Read a stream to its end, noting event names; ``first_token`` is set at the first delta."""
    seen = Seen()
    body, headers = _request(gw, alias, stream=True)
    try:
        async with client.stream("POST", "/v1/messages", json=body, headers=headers) as r:
            seen.status = r.status_code
            seen.request_id = r.headers.get("x-request-id", "")
            async for line in r.aiter_lines():
                if line.startswith("event: "):
                    seen.events.append(line[7:])
                    if line == "event: content_block_delta":
                        first_token.set()
    except httpx.HTTPError as exc:
        seen.error = exc
    seen.ended_at = time.monotonic()
    first_token.set()  # never leave the test waiting on a stream that failed early
    return seen


async def _unary(client: httpx.AsyncClient, gw: RunningGateway, alias: str) -> Seen:
    seen = Seen()
    body, headers = _request(gw, alias, stream=False)
    try:
        r = await client.post("/v1/messages", json=body, headers=headers)
        seen.status, seen.body = r.status_code, r.content
        seen.request_id = r.headers.get("x-request-id", "")
    except httpx.HTTPError as exc:
        seen.error = exc
    seen.ended_at = time.monotonic()
    return seen


async def _exit_code(proc: subprocess.Popen[bytes], within: float) -> tuple[int, float]:
    """Wait (off the event loop) for the process to exit; return its code and when it exited."""
    code = await asyncio.to_thread(proc.wait, within)
    return code, time.monotonic()


def _refused(url: str) -> bool:
    port = int(url.rsplit(":", 1)[1])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except ConnectionRefusedError:
        return True


async def _until_refused(url: str, within: float) -> bool:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if await asyncio.to_thread(_refused, url):
            return True
        await asyncio.sleep(0.05)
    return False


def _recorded(db: Path, ids: list[str]) -> dict[str, int]:
    """request_id -> status of the records the store holds for ``ids``."""
    with sqlite3.connect(db) as conn:
        marks = ",".join("?" * len(ids))
        rows = conn.execute(
            f"SELECT request_id, status FROM calls WHERE request_id IN ({marks})", ids
        ).fetchall()
    return {r[0]: r[1] for r in rows}


def _client(gw: RunningGateway) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=gw.url, timeout=30)


async def test_sigterm_lets_calls_in_flight_finish_refuses_new_ones_and_exits_0(
    start: StartGateway, tmp_path: Path
) -> None:
    gw = start(30)
    first = asyncio.Event()
    async with _client(gw) as idle, _client(gw) as client:
        # a keep-alive connection with nothing in flight must not hold the shutdown
        assert (await idle.get("/healthz")).status_code == 200
        streaming = asyncio.ensure_future(_stream(client, gw, "paced-20", first))
        unary = asyncio.ensure_future(_unary(client, gw, "paced-20"))
        await asyncio.wait_for(first.wait(), 10)
        signalled = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        exited = asyncio.ensure_future(_exit_code(gw.proc, 30))
        assert await _until_refused(gw.url, 2.0), "still accepting connections while draining"
        assert not exited.done(), "exited with calls still in flight"
        s, u = await asyncio.wait_for(asyncio.gather(streaming, unary), 15)
        code, exit_time = await exited
    assert s.error is None, s.error
    assert s.status == 200 and s.events[-1] == "message_stop"
    assert s.events.count("content_block_delta") == 20
    assert u.error is None and u.status == 200 and b'"stop_reason":"end_turn"' in u.body
    assert code == 0
    # the drain ends when the last call does, not at the drain bound
    assert exit_time - max(s.ended_at, u.ended_at) < MARGIN_S
    assert exit_time - signalled < 30
    assert _recorded(tmp_path / "bastion.db", [s.request_id, u.request_id]) == {
        s.request_id: 200,
        u.request_id: 200,
    }


async def test_a_stream_longer_than_the_drain_is_cut_and_the_process_exits_in_time(
    start: StartGateway, tmp_path: Path
) -> None:
    gw = start(1)
    first = asyncio.Event()
    async with _client(gw) as client:
        streaming = asyncio.ensure_future(_stream(client, gw, "paced-60", first))  # ~12 s
        await asyncio.wait_for(first.wait(), 10)
        signalled = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        code, exit_time = await _exit_code(gw.proc, 1 + MARGIN_S + 5)
        s = await asyncio.wait_for(streaming, 5)
    assert code == 0
    assert exit_time - signalled < 1 + MARGIN_S
    # the client sees the cut: no clean end of a truncated answer
    assert s.status == 200
    assert "message_stop" not in s.events
    assert s.error is not None
    assert s.ended_at - signalled < 1 + MARGIN_S
    # the cut call was recorded before the records were flushed
    recorded = _recorded(tmp_path / "bastion.db", [s.request_id])
    assert s.request_id in recorded and recorded[s.request_id] != 200


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_second_signal_exits_at_once(start: StartGateway, second: signal.Signals) -> None:
    gw = start(30)
    first = asyncio.Event()
    async with _client(gw) as client:
        streaming = asyncio.ensure_future(_stream(client, gw, "paced-60", first))
        await asyncio.wait_for(first.wait(), 10)
        gw.proc.send_signal(signal.SIGTERM)
        assert await _until_refused(gw.url, 2.0)  # the first signal was taken: draining
        assert gw.proc.poll() is None
        signalled = time.monotonic()
        gw.proc.send_signal(second)
        code, exit_time = await _exit_code(gw.proc, 5)
        s = await asyncio.wait_for(streaming, 5)
    assert exit_time - signalled < 1.0
    assert code == 128 + second
    assert "message_stop" not in s.events and s.error is not None

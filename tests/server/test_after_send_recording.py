"""The client never waits for a call's observers, and nothing of the after-phase is lost.

The server runs the observers of a call's after-phase (metrics, traces, the access log,
review and quality sampling) once the response's last write is out (``after_send.py``): a
slow observer must not hold the client's answer back and still runs, once. The record is
journaled before the answer completes, as before (what a SIGKILL must not lose), and lands
once. A stream's upstream connection is read to its end after the response, so it is kept
for the next call instead of a new connection per stream.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.auth import new_key
from bastion.config import load_config
from bastion.gateway import Gateway
from bastion.observability.metrics import MetricsGuard, render_metrics
from bastion.observability.recording import RecordGuard
from bastion.server.app import create_app

MODEL = "gpt-4.1"


@dataclass
class Upstream:
    """An OpenAI-compatible provider on a loopback port that notes each client connection."""

    port: int = 0
    peers: set[tuple[str, int]] = field(default_factory=set)
    runner: web.AppRunner | None = None

    async def chat(self, request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        self.peers.add(request.transport.get_extra_info("peername"))
        body = await request.json()
        usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
        if not body.get("stream"):
            msg = {"role": "assistant", "content": "one two three"}
            return web.json_response(
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "created": 1,
                    "model": MODEL,
                    "choices": [{"index": 0, "message": msg, "finish_reason": "stop"}],
                    "usage": usage,
                }
            )
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": MODEL}
        for i, word in enumerate(("one", " two", " three")):
            delta = {"role": "assistant", "content": word} if i == 0 else {"content": word}
            chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        end = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        await resp.write(b"data: " + orjson.dumps(end) + b"\n\n")
        await resp.write(
            b"data: " + orjson.dumps({**base, "choices": [], "usage": usage}) + b"\n\n"
        )
        await resp.write(b"data: [DONE]\n\n")
        # the body's end comes a little after [DONE], as over a real network: a relay that
        # closed the response at [DONE] would lose the connection with the bytes in flight
        await asyncio.sleep(0.02)
        await resp.write_eof()
        return resp

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = int(sock.getsockname()[1])
        await web.SockSite(self.runner, sock).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def _gateway(tmp: Path, port: int) -> tuple[Gateway, str]:
    cfg = load_config(
        None,
        overrides={
            "store": {"url": f"sqlite:///{tmp / 'after.db'}"},
            "state": {"url": "memory://"},
            "observability": {"spill_path": str(tmp / "spill.jsonl")},
            "providers": {"up": {"kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1"}},
            "models": {"m": {"deployments": [{"provider": "up", "model": MODEL}]}},
        },
    )
    gw = Gateway(cfg)
    await gw.start()
    secret, rec = new_key("after-send")
    await gw.store.create_key(rec)
    return gw, secret


@dataclass
class Seen:
    """What one call through the ASGI app showed, in the order it happened."""

    events: list[str] = field(default_factory=list)
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


async def _call(app: Any, key: str, *, stream: bool, events: list[str]) -> Seen:
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body["stream"] = True
    raw = orjson.dumps(body)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "headers": [
            (b"authorization", b"Bearer " + key.encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(raw)).encode()),
        ],
        "scheme": "http",
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 1),
    }
    seen = Seen(events=events)
    delivered = asyncio.Event()
    given_body = False

    async def receive() -> dict[str, Any]:
        nonlocal given_body
        if not given_body:
            given_body = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await delivered.wait()  # the client stays connected until it has the whole answer
        return {"type": "http.disconnect"}

    async def send(msg: dict[str, Any]) -> None:
        if msg["type"] == "http.response.start":
            seen.status = msg["status"]
            seen.headers = {k.decode(): v.decode() for k, v in msg["headers"]}
        else:
            seen.body += msg.get("body", b"")
            if not msg.get("more_body", False):
                events.append("response complete")
                delivered.set()

    await app(scope, receive, send)
    return seen


def _watch(m: pytest.MonkeyPatch, events: list[str], delays: Any) -> None:
    """Note when each call's record is submitted, and make its metrics observer take
    ``next(delays)`` seconds before it counts the call (then note that too)."""
    record, metrics = RecordGuard.after, MetricsGuard.after

    async def recorded(self: RecordGuard, call: Any, error: BaseException | None) -> None:
        await record(self, call, error)
        events.append("recorded " + call.request_id)

    async def observed(self: MetricsGuard, call: Any, error: BaseException | None) -> None:
        await asyncio.sleep(next(delays))
        await metrics(self, call, error)
        events.append("observed " + call.request_id)

    m.setattr(RecordGuard, "after", recorded)
    m.setattr(MetricsGuard, "after", observed)


@pytest.fixture
def slow_observer(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The metrics observer takes 0.3 s per call; records and observations are noted."""
    events: list[str] = []
    _watch(monkeypatch, events, iter(lambda: 0.3, None))
    return events


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    up = Upstream()
    await up.start()
    try:
        yield up
    finally:
        await up.stop()


async def _landed(gw: Gateway, ids: list[str]) -> list[str]:
    """The records of ``ids`` in the store, once all are there (or after 10 s): the recorder's
    own task may be writing a batch it took from the queue while ``flush`` finds it empty."""
    loop = asyncio.get_running_loop()
    until = loop.time() + 10.0
    while True:
        await gw.recorder.flush()
        calls = await gw.store.recent_calls(100)
        got = [c.request_id for c in calls if c.request_id in ids]
        if len(set(got)) == len(set(ids)) or loop.time() > until:
            return got
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_slow_observer_does_not_hold_the_answer_and_the_record_comes_first(
    tmp_path: Path, upstream: Upstream, slow_observer: list[str], stream: bool
) -> None:
    gw, key = await _gateway(tmp_path, upstream.port)
    try:
        app = create_app(gw)
        events = slow_observer
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        task = asyncio.ensure_future(_call(app, key, stream=stream, events=events))
        while "response complete" not in events:
            await asyncio.sleep(0.005)
        answered_after = loop.time() - t0
        seen = await task
        assert seen.status == 200
        rid = seen.headers["x-request-id"]
        if stream:
            assert seen.body.rstrip().endswith(b"data: [DONE]")
            assert b"three" in seen.body
        else:
            assert orjson.loads(seen.body)["choices"][0]["message"]["content"] == "one two three"
        # journaled before the answer completed; observed after it, by the time the app returned
        assert events == ["recorded " + rid, "response complete", "observed " + rid]
        assert answered_after < 0.25  # not held for the observer's 0.3 s
        assert await _landed(gw, [rid]) == [rid]
        body, _ = render_metrics(gw.metrics, "text/plain")
        counted = [
            ln
            for ln in body.decode().splitlines()
            if ln.startswith("bastion_requests_total{") and 'model="gpt-4.1"' in ln
        ]
        assert len(counted) == 1 and counted[0].endswith(" 1.0")  # observed once
    finally:
        await gw.aclose()


async def test_streams_keep_their_upstream_connection(tmp_path: Path, upstream: Upstream) -> None:
    gw, key = await _gateway(tmp_path, upstream.port)
    try:
        app = create_app(gw)
        ids = []
        for _ in range(4):
            seen = await _call(app, key, stream=True, events=[])
            assert seen.status == 200 and seen.body.rstrip().endswith(b"data: [DONE]")
            ids.append(seen.headers["x-request-id"])
        assert len(upstream.peers) == 1  # read to its end after each response: one connection
        assert sorted(await _landed(gw, ids)) == sorted(ids)
    finally:
        await gw.aclose()


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    calls=st.lists(
        st.tuples(st.booleans(), st.sampled_from([0.0, 0.01, 0.05])), min_size=1, max_size=4
    )
)
def test_each_call_is_journaled_before_its_answer_and_observed_after_it(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    calls: list[tuple[bool, float]],
) -> None:
    """Any mix of unary and streamed calls, with any observer delay: each call is journaled
    before its answer completes and observed after it, each exactly once, every record lands
    once, and consecutive calls share one upstream connection."""
    events: list[str] = []
    delays = iter([d for _, d in calls])

    async def scenario(tmp: Path) -> None:
        up = Upstream()
        await up.start()
        gw, key = await _gateway(tmp, up.port)
        try:
            app = create_app(gw)
            ids = []
            for stream, _ in calls:
                mark = len(events)
                seen = await _call(app, key, stream=stream, events=events)
                assert seen.status == 200
                rid = seen.headers["x-request-id"]
                ids.append(rid)
                mine = events[mark:]
                assert mine == ["recorded " + rid, "response complete", "observed " + rid]
            assert len(up.peers) == 1
            landed = await _landed(gw, ids)
            assert sorted(landed) == sorted(ids) and len(set(landed)) == len(ids)
        finally:
            await gw.aclose()
            await up.stop()

    with monkeypatch.context() as m:
        _watch(m, events, delays)
        asyncio.run(scenario(tmp_path_factory.mktemp("after")))

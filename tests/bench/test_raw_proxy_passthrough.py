"""``bench/raw_proxy.py`` is a real proxy: what the simulator sends reaches the client unchanged.

``bench/servers.py`` reports the raw asyncio proxy as the floor of Python on this box; a floor
that skipped work (dropped headers, cut a stream, sent a canned body) would be a fake one. Here
the proxy runs as its own process, as the benchmark runs it, in front of a real ``bastion sim``
with a tap in between that records every byte on the proxy's upstream connections. The client's
request body must reach the simulator unchanged with its pacing headers, and the body the
client reads (a unary reply, and a 16-chunk stream paced 1 ms apart) must be byte for byte the
body the simulator sent. The framing the raw client and server write (request and response
heads, chunks) must parse back to what they frame, for any headers and body (property test).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httptools
import orjson
import pytest
from bench.raw_proxy import HOP_BY_HOP, Request, chunk, request_head, response_head
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.conftest import BIN, free_port, stop, wait_port

ROOT = Path(__file__).resolve().parents[2]
PROMPT = "Name three things a parcel tracker shows."


@pytest.fixture(scope="module")
def sim_port() -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "bastion"), "sim", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, proc)
        yield port
    finally:
        stop(proc)


class Message:
    """What httptools reads of one HTTP message."""

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.done = False
        self.keep_alive = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.done = True


class Reader:
    """Feeds one direction of one connection to httptools; collects each message it completes."""

    def __init__(self, response: bool, out: list[Message]) -> None:
        self.out = out
        self.current = Message()
        make = httptools.HttpResponseParser if response else httptools.HttpRequestParser
        self.parser = make(self)

    def on_message_begin(self) -> None:
        self.current = Message()

    def on_url(self, url: bytes) -> None:
        self.current.on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.current.on_header(name, value)

    def on_body(self, body: bytes) -> None:
        self.current.on_body(body)

    def on_message_complete(self) -> None:
        self.current.on_message_complete()
        self.current.keep_alive = self.parser.should_keep_alive()  # as the raw proxy reads it
        self.out.append(self.current)


@dataclass
class Tap:
    """A TCP relay to the simulator that parses what passes each way."""

    requests: list[Message] = field(default_factory=list)  # proxy -> simulator
    replies: list[Message] = field(default_factory=list)  # simulator -> proxy

    async def handle(
        self, sim_port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", sim_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, tap: Reader) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    tap.parser.feed_data(data)
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(
            pipe(reader, up_w, Reader(False, self.requests)),
            pipe(up_r, writer, Reader(True, self.replies)),
        )


@contextlib.asynccontextmanager
async def raw_proxy(sim_port: int, client: str) -> AsyncIterator[tuple[str, Tap]]:
    """The tap on a free port, and ``bench/raw_proxy.py`` in its own process in front of it."""
    tap = Tap()
    server = await asyncio.start_server(lambda r, w: tap.handle(sim_port, r, w), "127.0.0.1", 0)
    tap_port = server.sockets[0].getsockname()[1]
    port = free_port()
    argv = [sys.executable, str(ROOT / "bench" / "raw_proxy.py"), "--port", str(port)]
    argv += ["--upstream", f"http://127.0.0.1:{tap_port}", "--client", client]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        await asyncio.to_thread(wait_port, port, proc)
        yield f"http://127.0.0.1:{port}", tap
    finally:
        stop(proc)
        server.close()


def body(stream: bool) -> bytes:
    req: dict[str, object] = {
        "model": "gpt-4.1",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": PROMPT}],
    }
    if stream:
        req["stream"] = True
    return orjson.dumps(req)


@pytest.mark.parametrize("client", ["aiohttp", "raw"])
async def test_unary_and_stream_pass_through_byte_for_byte(sim_port: int, client: str) -> None:
    async with (
        raw_proxy(sim_port, client) as (base, tap),
        aiohttp.ClientSession(auto_decompress=False) as session,
    ):
        for stream, tokens in ((False, "12"), (True, "16")):
            sent = body(stream)
            headers = {
                "content-type": "application/json",
                "x-sim-reply-tokens": tokens,
                "x-sim-chunk-ms": "1" if stream else "0",
            }
            async with session.post(base + "/v1/chat/completions", data=sent, headers=headers) as r:
                got = await r.read()
                status, relayed_headers = r.status, r.headers
            assert status == 200
            upstream_req, upstream_reply = tap.requests[-1], tap.replies[-1]
            assert upstream_req.done and upstream_reply.done
            assert upstream_req.url == b"/v1/chat/completions"
            assert upstream_req.body == sent
            forwarded = dict(upstream_req.headers)
            assert forwarded[b"x-sim-reply-tokens"] == tokens.encode()
            assert forwarded[b"content-type"] == b"application/json"
            assert got == upstream_reply.body  # byte for byte, whatever the framing
            reply_headers = dict(upstream_reply.headers)
            assert relayed_headers["x-request-id"] == reply_headers[b"x-request-id"].decode()
            if stream:
                assert relayed_headers["transfer-encoding"] == "chunked"
                events = [e for e in got.split(b"\n\n") if e]
                assert events[-1] == b"data: [DONE]"
                deltas = [orjson.loads(e[6:]) for e in events[:-1]]
                text = "".join(d["choices"][0]["delta"].get("content") or "" for d in deltas)
                assert len(deltas) >= 16 and text
            else:
                assert int(relayed_headers["content-length"]) == len(got)
                assert orjson.loads(got)["choices"][0]["message"]["content"]
        assert len(tap.requests) == 2  # one upstream request per call, no retries or probes


# -- framing -----------------------------------------------------------------------------------

TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)
VALUE = st.binary(max_size=60).map(
    lambda b: bytes(c for c in b if 0x21 <= c <= 0x7E) or b"v"
)  # visible ASCII, no surrounding spaces (a parser would trim them)
HEADERS = st.lists(
    st.tuples(TOKEN.map(str.encode), VALUE).filter(lambda kv: kv[0] not in HOP_BY_HOP),
    max_size=8,
)


@settings(max_examples=60, deadline=None)
@given(
    method=st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE"]),
    path=st.lists(TOKEN, max_size=4).map(lambda p: ("/" + "/".join(p)).encode()),
    headers=HEADERS,
    payload=st.binary(max_size=300),
)
def test_request_head_parses_back(
    method: bytes, path: bytes, headers: list[tuple[bytes, bytes]], payload: bytes
) -> None:
    msgs: list[Message] = []
    reader = Reader(False, msgs)
    req = Request(method, path, headers, payload, True)
    reader.parser.feed_data(request_head(req, b"127.0.0.1:9") + payload)
    assert len(msgs) == 1
    (m,) = msgs
    assert reader.parser.get_method() == method
    assert m.url == path
    assert m.body == payload
    assert m.headers == [
        (b"host", b"127.0.0.1:9"),
        *headers,
        (b"content-length", b"%d" % len(payload)),
    ]


@settings(max_examples=60, deadline=None)
@given(
    status=st.integers(200, 599).filter(lambda s: s not in (204, 304)),  # 204/304: no body
    headers=HEADERS,
    pieces=st.lists(st.binary(min_size=1, max_size=100), max_size=6),
    chunked=st.booleans(),
    keep_alive=st.booleans(),
)
def test_response_framing_parses_back(
    status: int,
    headers: list[tuple[bytes, bytes]],
    pieces: list[bytes],
    chunked: bool,
    keep_alive: bool,
) -> None:
    whole = b"".join(pieces)
    if chunked:
        wire = response_head(status, b"OK", headers, None, keep_alive)
        wire += b"".join(chunk(p) for p in pieces) + b"0\r\n\r\n"
    else:
        wire = response_head(status, b"OK", headers, len(whole), keep_alive) + whole
    msgs: list[Message] = []
    reader = Reader(True, msgs)
    reader.parser.feed_data(wire)
    assert len(msgs) == 1
    (m,) = msgs
    assert reader.parser.get_status_code() == status
    assert m.body == whole
    assert [h for h in m.headers if h[0] not in HOP_BY_HOP] == headers
    assert m.keep_alive == keep_alive

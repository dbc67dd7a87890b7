"""Hostile input gets a 4xx in the caller's format, before anything is billed or upstream is asked.

In-process (ASGI) for what the application decides: model names, JSON depth, header values
that must never reach a response header. Against a real ``bastion serve`` over raw sockets
for what only the server sees: oversized headers, too many headers, a request that stalls
mid-headers, and bodies sent with a bogus key (refused before they are read).
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from tests.asgi import asgi_request
from tests.conftest import RunningGateway, sim_models, start_gateway, stop, write_config

from bastion.auth import new_key
from bastion.config import load_config
from bastion.gateway import Gateway
from bastion.schema import MAX_DEPTH
from bastion.server.app import create_app

ANTHROPIC = "/v1/messages"
OPENAI = "/v1/chat/completions"
SAFE_VALUE = re.compile(r"[\t\x20-\x7e]*")


def _body(model: Any, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": 8,
        "messages": [{"role": "user", "content": "hi"}],
        **extra,
    }


def _assert_error_shape(path: str, status: int, out: bytes) -> dict[str, Any]:
    err = orjson.loads(out)
    if path == ANTHROPIC:
        assert err["type"] == "error" and err["error"]["type"], err
    else:
        assert set(err["error"]) >= {"message", "type", "code"}, err
    assert 400 <= status < 500
    return err  # type: ignore[no-any-return]


@pytest.fixture
async def hostile_app(tmp_path: Path) -> AsyncIterator[tuple[Any, Gateway, str]]:
    cfg = load_config(
        None,
        overrides={
            "store": {"url": f"sqlite:///{tmp_path / 'h.db'}"},
            "state": {"url": "memory://"},
            "observability": {"spill_path": str(tmp_path / "spill.jsonl")},
            "providers": {"sim": {"kind": "sim"}},
            "models": sim_models(),
        },
    )
    gw = Gateway(cfg)
    await gw.start()
    secret, rec = new_key("hostile")
    await gw.store.create_key(rec)
    yield create_app(gw), gw, secret
    await gw.aclose()


async def _unbilled(gw: Gateway, upstream_before: int) -> None:
    """Nothing reached the provider and nothing was billed: the refusal's record (recent calls
    show refusals with their reason) is a 4xx with no tokens, no cost and no attempt."""
    await gw.recorder.flush()
    assert len(gw.simulator.requests) == upstream_before
    for rec in await gw.store.recent_calls(10):
        assert 400 <= rec.status < 500, rec
        assert rec.cost_usd == 0 and rec.attempts == 0 and rec.output_tokens == 0
        assert rec.flags.get("refused_by"), rec


@pytest.mark.parametrize("path", [ANTHROPIC, OPENAI])
@pytest.mark.parametrize(
    "model",
    ["sim-\U0001f600", "sim-a\r\nx-evil: 1", "sim-a\nb", "sim a", "sim-\x00", "x" * 300, "sim-é"],
)
async def test_a_model_name_that_could_break_a_header_is_a_400_before_anything_is_billed(
    hostile_app: tuple[Any, Gateway, str], path: str, model: str
) -> None:
    app, gw, key = hostile_app
    before = len(gw.simulator.requests)
    status, _headers, out = await asgi_request(
        app, "POST", path, orjson.dumps(_body(model)), {"x-api-key": key}
    )
    assert status == 400
    err = _assert_error_shape(path, status, out)
    inner = err["error"]
    assert "model" in inner["message"]
    await _unbilled(gw, before)


@pytest.mark.parametrize("path", [ANTHROPIC, OPENAI])
async def test_json_nested_past_the_limit_is_a_400_and_not_billed(
    hostile_app: tuple[Any, Gateway, str], path: str
) -> None:
    app, gw, key = hostile_app
    before = len(gw.simulator.requests)
    for depth in (MAX_DEPTH + 1, 256, 300, 1000):
        nested = "[" * depth + "]" * depth
        raw = orjson.dumps(_body("claude-sonnet-5"))[:-1] + b',"metadata":{"x":' + nested.encode()
        raw += b"}}"
        status, _, out = await asgi_request(app, "POST", path, raw, {"x-api-key": key})
        assert status == 400, (depth, out[:200])
        assert b"nests deeper" in out
        _assert_error_shape(path, status, out)
    await _unbilled(gw, before)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    depth=st.integers(1, 400),
    kind=st.sampled_from(["[", "{"]),
    path=st.sampled_from([ANTHROPIC, OPENAI]),
)
async def test_any_nesting_depth_is_a_200_or_a_400_never_a_500(
    hostile_app: tuple[Any, Gateway, str], depth: int, kind: str, path: str
) -> None:
    app, _, key = hostile_app
    value: Any = 1
    for _ in range(depth):
        value = [value] if kind == "[" else {"k": value}
    # the body object and metadata add two levels of their own
    if depth + 2 > 250:  # beyond what orjson will serialize: write the bytes by hand
        opener, closer = ("[", "]") if kind == "[" else ('{"k":', "}")
        nested = (opener * depth + "1" + closer * depth).encode()
        raw = orjson.dumps(_body("claude-sonnet-5"))[:-1] + b',"metadata":{"x":' + nested + b"}}"
    else:
        raw = orjson.dumps(_body("claude-sonnet-5", metadata={"x": value}))
    async with asyncio.timeout(10):
        status, _, out = await asgi_request(app, "POST", path, raw, {"x-api-key": key})
    total = depth + 2
    if total > MAX_DEPTH:
        assert status == 400, (depth, out[:200])
    else:
        assert status in (200, 400), (depth, out[:200])  # 400: metadata shape, not depth
        assert b"nests deeper" not in out


async def _asgi_latin1(
    app: Any, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    """One request with header bytes as a real server hands them over (Latin-1, byte per char)."""

    def enc(v: str) -> bytes:
        return v.encode("latin-1") if all(ord(c) < 256 for c in v) else v.encode()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(k.encode(), enc(v)) for k, v in headers.items()],
        "scheme": "http",
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 1),
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    out: dict[str, Any] = {"status": 0, "headers": {}, "body": b""}

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(msg: dict[str, Any]) -> None:
        if msg["type"] == "http.response.start":
            out["status"] = msg["status"]
            out["headers"] = {k.decode(): v.decode("latin-1") for k, v in msg["headers"]}
        else:
            out["body"] += msg.get("body", b"")

    await app(scope, receive, send)
    return out["status"], out["headers"], out["body"]


header_text = (
    st.sampled_from(["\xb2", "1.\xb2", "9" * 5000, "\u0663"])
    | st.text(max_size=80)
    | st.binary(max_size=60).map(lambda b: b.decode("latin-1"))
)
CLIENT_HEADERS = (
    "x-request-id",
    "x-bastion-feature",
    "x-bastion-user",
    "x-bastion-conversation",
    "x-bastion-prompt-version",
    "x-bastion-stable-messages",
    "x-bastion-retrieval-ms",
    "traceparent",
    "anthropic-version",
    "idempotency-key",
)


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    model=header_text,
    values=st.dictionaries(st.sampled_from(CLIENT_HEADERS), header_text, max_size=4),
    path=st.sampled_from([ANTHROPIC, OPENAI]),
    stream=st.booleans(),
)
async def test_random_model_names_and_header_values_never_500_nor_reach_a_response_header(
    hostile_app: tuple[Any, Gateway, str],
    model: str,
    values: dict[str, str],
    path: str,
    stream: bool,
) -> None:
    app, _, key = hostile_app
    raw = orjson.dumps(_body(model, stream=stream))
    async with asyncio.timeout(10):
        status, headers, out = await _asgi_latin1(app, path, raw, {"x-api-key": key, **values})
    assert status < 500, (status, model, values, out[:300])
    for name, value in headers.items():
        assert SAFE_VALUE.fullmatch(value), (name, value)
    echoed = headers.get("x-client-request-id")
    if echoed is not None:
        assert echoed == values.get("x-request-id")
    if status != 200:
        _assert_error_shape(path, status, out)


# -- a real server, raw sockets ------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    tmp = tmp_path_factory.mktemp("hostile")
    cfg = write_config(
        tmp,
        server={
            "max_body_bytes": 10 * 1024 * 1024,
            "header_timeout_seconds": 1.0,
            "body_timeout_seconds": 2.0,
        },
    )
    gw = start_gateway(cfg)
    yield gw
    stop(gw.proc)


def _port(gw: RunningGateway) -> int:
    return int(gw.url.rsplit(":", 1)[1])


def _complete(buf: bytes) -> bool:
    """Whether ``buf`` holds one whole HTTP response (content-length or chunked)."""
    head, sep, body = buf.partition(b"\r\n\r\n")
    if not sep:
        return False
    m = re.search(rb"content-length: *(\d+)", head.lower())
    if m is not None:
        return len(body) >= int(m.group(1))
    return body.endswith(b"0\r\n\r\n")


def _read_response(s: socket.socket, read_for: float) -> bytes:
    out = b""
    end = time.monotonic() + read_for
    while time.monotonic() < end and not _complete(out):
        try:
            data = s.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not data:
            break
        out += data
    return out


def _exchange(port: int, parts: list[bytes], *, read_for: float = 5.0) -> bytes:
    """Send ``parts`` in order (a short pause between them), then read one response."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_for) as s:
        try:
            for i, p in enumerate(parts):
                if i:
                    time.sleep(0.002)
                s.sendall(p)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return _read_response(s, read_for)


def _status_and_body(resp: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = resp.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        size, _, rest = body.partition(b"\r\n")
        body = rest[: int(size, 16)]
    return status, orjson.loads(body)


def _request_head(path: str, key: str, extra: bytes = b"", length: int = 0) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nx-api-key: {key}\r\n"
        f"content-type: application/json\r\ncontent-length: {length}\r\n"
    ).encode() + extra


@pytest.mark.parametrize(
    ("path", "extra"),
    [
        (ANTHROPIC, [b"x-big: " + b"a" * (10 * 1024 * 1024) + b"\r\n"]),
        (OPENAI, [b"x-big: " + b"a" * 40_000 + b"\r\n"]),
        (ANTHROPIC, [b"".join(b"x-h%d: v\r\n" % i for i in range(150))]),
        (OPENAI, [b"x-h%d: v\r\n" % i for i in range(200)]),
    ],
    ids=["10MB-header", "40KB-header", "150-headers", "200-headers-trickled"],
)
def test_oversized_or_too_many_headers_get_a_431_in_the_callers_format(
    served: RunningGateway, path: str, extra: list[bytes]
) -> None:
    head = _request_head(path, served.key)
    resp = _exchange(_port(served), [head, *extra, b"\r\n"])
    status, body = _status_and_body(resp)
    assert status == 431
    if path == ANTHROPIC:
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    else:
        assert body["error"]["code"] == "request_header_fields_too_large"
    assert served.proc.poll() is None


def test_headers_under_the_limits_are_served(served: RunningGateway) -> None:
    body = orjson.dumps(_body("claude-sonnet-5"))
    extra = b"".join(b"x-h%d: %s\r\n" % (i, b"v" * 200) for i in range(80))
    resp = _exchange(
        _port(served),
        [
            _request_head(ANTHROPIC, served.key, extra, len(body))
            + b"connection: close\r\n\r\n"
            + body
        ],
    )
    assert _status_and_body(resp)[0] == 200


@pytest.mark.parametrize(
    ("path", "sent"),
    [(ANTHROPIC, b"POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-"), (OPENAI, b"")],
    ids=["mid-headers", "nothing-sent"],
)
def test_a_connection_that_stalls_before_its_headers_end_is_closed_with_a_408(
    served: RunningGateway, path: str, sent: bytes
) -> None:
    t0 = time.monotonic()
    resp = _exchange(_port(served), [sent] if sent else [], read_for=6.0)
    took = time.monotonic() - t0
    assert took < 4.0, took  # header_timeout_seconds is 1
    status, body = _status_and_body(resp)
    assert status == 408
    if path == ANTHROPIC:
        assert body["type"] == "error"
    else:
        assert body["error"]["code"] == "request_timeout"


def test_a_body_that_trickles_past_its_time_limit_gets_a_408(served: RunningGateway) -> None:
    body = orjson.dumps(_body("claude-sonnet-5"))
    head = _request_head(OPENAI, served.key, length=len(body)) + b"\r\n"
    with socket.create_connection(("127.0.0.1", _port(served)), timeout=8) as s:
        s.sendall(head + body[:5])
        t0 = time.monotonic()
        out = _read_response(s, 8.0)
        assert time.monotonic() - t0 < 6.0
    status, err = _status_and_body(out)
    assert status == 408 and err["error"]["code"] == "request_timeout"


def _rss_sampler(pid: int, stop_evt: threading.Event, peak: list[int]) -> None:
    proc = psutil.Process(pid)
    while not stop_evt.is_set():
        peak[0] = max(peak[0], proc.memory_info().rss)
        time.sleep(0.005)


def test_bodies_sent_with_a_bogus_key_are_refused_unread(served: RunningGateway) -> None:
    """20 bodies of 9 MB with a bogus key: 401 each, and the gateway's memory barely moves."""
    size = 9 * 1024 * 1024
    payload = b'{"model":"claude-sonnet-5","messages":[],"pad":"' + b"x" * (size - 60) + b'"}'
    head = _request_head(ANTHROPIC, "bst-bogus", length=len(payload)) + b"\r\n"
    pid = served.proc.pid
    base = psutil.Process(pid).memory_info().rss
    peak = [base]
    stop_evt = threading.Event()
    sampler = threading.Thread(target=_rss_sampler, args=(pid, stop_evt, peak), daemon=True)
    sampler.start()
    results: list[bytes] = []

    def one() -> None:
        results.append(_exchange(_port(served), [head, payload], read_for=20.0))

    threads = [threading.Thread(target=one) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    stop_evt.set()
    sampler.join(timeout=5)
    assert len(results) == 20
    for resp in results:
        status, body = _status_and_body(resp)
        assert status == 401 and body["error"]["type"] == "authentication_error"
    grew = (peak[0] - base) / 1024 / 1024
    assert grew < 40, f"RSS grew by {grew:.0f} MB for refused bodies"


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    count=st.integers(0, 140),
    size=st.integers(1, 800),
    path=st.sampled_from([ANTHROPIC, OPENAI]),
)
def test_header_size_and_count_decide_431_and_nothing_else_does(
    served: RunningGateway, count: int, size: int, path: str
) -> None:
    """Far from the limits a request is served; past either limit it is a 431, never a 5xx."""
    extra = b"".join(b"x-h%d: %s\r\n" % (i, b"v" * size) for i in range(count))
    lines = count + 5  # host, x-api-key, content-type, content-length, connection
    total = len(extra) + 200
    assume(abs(total - 32 * 1024) >= 2048 and lines not in (100, 101))  # off the boundary
    body = orjson.dumps(_body("claude-sonnet-5"))
    head = _request_head(path, served.key, extra, len(body)) + b"connection: close\r\n\r\n"
    status, err = _status_and_body(_exchange(_port(served), [head + body]))
    if total > 32 * 1024 or lines > 100:
        assert status == 431
        _assert_error_shape(path, status, orjson.dumps(err))
    else:
        assert status == 200


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("x-bastion-stable-messages", "\xb2"),
        ("x-bastion-stable-messages", "9" * 5000),
        ("x-bastion-stable-messages", "-1"),
        ("x-bastion-retrieval-ms", "1.\xb2"),
        ("x-bastion-retrieval-ms", "nan"),
        ("content-length", "9" * 5000),
    ],
)
async def test_a_malformed_number_in_a_header_is_a_400_not_a_500(
    hostile_app: tuple[Any, Gateway, str], name: str, value: str
) -> None:
    app, gw, key = hostile_app
    before = len(gw.simulator.requests)
    raw = orjson.dumps(_body("claude-sonnet-5"))
    status, _, out = await _asgi_latin1(app, ANTHROPIC, raw, {"x-api-key": key, name: value})
    assert status in (400, 413), out
    _assert_error_shape(ANTHROPIC, status, out)
    await _unbilled(gw, before)

"""Broken HTTP framing gets a JSON 400 in the caller's format, never uvicorn's plain text.

A real `bastion serve` process, raw sockets: a bad request line, invalid header bytes, broken
chunked encoding, Content-Length with Transfer-Encoding, a non-ASCII path, an unknown HTTP
version. Each is a 400 whose body is the OpenAI error shape (the Anthropic one on
``/v1/messages``), with ``connection: close``, the connection then closed, counted in
``bastion_guard_refusals_total``. A hypothesis property sends random bytes after a valid
request line: whatever the server answers is JSON and never a 5xx, and it keeps serving.
"""

from __future__ import annotations

import contextlib
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.conftest import RunningGateway, start_gateway, stop, write_config

ANTHROPIC = "/v1/messages"
OPENAI = "/v1/chat/completions"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    cfg = write_config(
        tmp_path_factory.mktemp("framing"),
        server={"header_timeout_seconds": 1.0, "body_timeout_seconds": 2.0},
    )
    g = start_gateway(cfg)
    yield g
    stop(g.proc)


def _port(gw: RunningGateway) -> int:
    return int(gw.url.rsplit(":", 1)[1])


def _split(buf: bytes) -> tuple[int, dict[str, str], bytes] | None:
    """The first final response in ``buf`` (1xx skipped), or None while incomplete."""
    while True:
        head, sep, rest = buf.partition(b"\r\n\r\n")
        if not sep:
            return None
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])
        }
        if 100 <= status < 200:
            buf = rest
            continue
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size_line, sep, rest = rest.partition(b"\r\n")
                if not sep:
                    return None
                size = int(size_line, 16)
                if size == 0:
                    return status, headers, body
                if len(rest) < size + 2:
                    return None
                body, rest = body + rest[:size], rest[size + 2 :]
        length = int(headers.get("content-length", "0"))
        if len(rest) < length:
            return None
        return status, headers, rest[:length]


def _exchange(gw: RunningGateway, data: bytes, read_for: float = 6.0) -> tuple[Any, bool]:
    """Send ``data``; the first response, and whether the server then closed the connection."""
    with socket.create_connection(("127.0.0.1", _port(gw)), timeout=read_for) as s:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(data)
        buf = b""
        end = time.monotonic() + read_for
        got = None
        closed = False
        while time.monotonic() < end:
            s.settimeout(max(0.05, end - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            buf += chunk
            if got is None:
                got = _split(buf)
                if got is not None and got[1].get("connection") != "close":
                    break  # kept alive: the answer is all we wait for
        if got is None:
            got = _split(buf)
        return got, closed


def _check_shape(path: str, body: bytes) -> dict[str, Any]:
    obj = orjson.loads(body)
    assert isinstance(obj, dict), body
    if path.startswith(ANTHROPIC):
        assert obj["type"] == "error", obj
        assert set(obj["error"]) >= {"type", "message"}, obj
    else:
        assert set(obj["error"]) >= {"message", "type", "param", "code"}, obj
    return obj


def _refusals(gw: RunningGateway) -> float:
    req = (
        f"GET /metrics HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {gw.key}\r\n"
        "connection: close\r\n\r\n"
    ).encode()
    got, _ = _exchange(gw, req)
    assert got is not None and got[0] == 200
    m = re.search(
        rb'bastion_guard_refusals_total\{error_type="MalformedHttp",guard="request"\} ([0-9.e+]+)',
        got[2],
    )
    return float(m.group(1)) if m else 0.0


def _post(path: str, key: str | None, extra: bytes = b"") -> bytes:
    auth = f"x-api-key: {key}\r\nauthorization: Bearer {key}\r\n" if key else ""
    return f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n{auth}".encode() + extra


CASES = {
    "bad-request-line": (OPENAI, b"GARBAGE\r\n\r\n", "Invalid method"),
    "bad-chunk-size": (
        OPENAI,
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
        b"ZZZ\r\n",
        "chunk size",
    ),
    "bad-version": (ANTHROPIC, b"POST /v1/messages HTTP/9.9\r\nhost: x\r\n\r\n", "version"),
    "header-token-byte": (
        ANTHROPIC,
        b"POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-bad\x01: v\r\n\r\n",
        "header token",
    ),
    "header-value-nul": (
        OPENAI,
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-a: a\x00b\r\n\r\n",
        "header value",
    ),
    "non-ascii-path": (OPENAI, b"GET /v1/\xff HTTP/1.1\r\nhost: x\r\n\r\n", "url"),
    "content-length-and-chunked": (
        ANTHROPIC,
        b"POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n"
        b"transfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        "Content-Length",
    ),
    "two-content-lengths": (
        OPENAI,
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n"
        b"content-length: 6\r\n\r\nhello!",
        None,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_broken_framing_is_a_json_400_in_the_callers_format_and_closes(
    gw: RunningGateway, case: str
) -> None:
    path, data, words = CASES[case]
    before = _refusals(gw)
    got, closed = _exchange(gw, data)
    assert got is not None, f"no answer to {case}"
    status, headers, body = got
    assert status == 400, (status, body)
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    obj = _check_shape(path, body)
    err = obj["error"]
    assert err["type"] == "invalid_request_error"
    assert err["message"].startswith("malformed HTTP request")
    if words is not None:
        assert words.lower() in err["message"].lower(), err
    if path == OPENAI:
        assert err["code"] == "invalid_http_request" and err["param"] is None
    assert closed, "the connection stays open after a framing error"
    assert _refusals(gw) == before + 1
    assert gw.proc.poll() is None


@pytest.mark.parametrize("path", [ANTHROPIC, OPENAI])
def test_a_broken_chunked_body_of_an_admitted_request_is_answered_by_the_refusal_alone(
    gw: RunningGateway, path: str
) -> None:
    """With a valid key the app is already reading the body when its framing breaks: the
    client gets the one JSON 400, never a second answer, and nothing goes upstream."""
    head = _post(
        path, gw.key, b"content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    for body in (b"ZZZ\r\n", b'5\r\n{"a":\r\nQQ\r\n', b"4\r\nabcdef\r\n"):
        got, closed = _exchange(gw, head + body)
        assert got is not None
        status, headers, raw = got
        assert status == 400 and headers["content-type"] == "application/json", raw
        assert "malformed HTTP request" in _check_shape(path, raw)["error"]["message"]
        assert closed
    assert "Exception in ASGI application" not in gw.log()
    assert "Internal Server Error" not in gw.log()


def test_a_request_after_garbage_on_a_kept_alive_connection_is_judged_by_its_own_path(
    gw: RunningGateway,
) -> None:
    """A first request answered and kept alive, then garbage: the refusal of the garbage is
    in the default (OpenAI) shape, not the first request's Anthropic one."""
    first = (
        f"GET /v1/messages/count_tokens HTTP/1.1\r\nhost: x\r\nx-api-key: {gw.key}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", _port(gw)), timeout=6) as s:
        s.sendall(first)
        buf = b""
        while _split(buf) is None:
            chunk = s.recv(65536)
            assert chunk
            buf += chunk
        s.sendall(b"\x00\x01garbage\r\n\r\n")
        rest = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
    got = _split(rest)
    assert got is not None and got[0] == 400
    obj = _check_shape(OPENAI, got[2])
    assert obj["error"]["code"] == "invalid_http_request"


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(path=st.sampled_from([ANTHROPIC, OPENAI]), garbage=st.binary(min_size=1, max_size=160))
def test_random_bytes_after_a_valid_request_line_never_get_plain_text_or_a_5xx(
    gw: RunningGateway, path: str, garbage: bytes
) -> None:
    data = f"POST {path} HTTP/1.1\r\n".encode() + garbage + b"\r\n\r\n"
    got, _ = _exchange(gw, data)
    assert got is not None, f"no answer to {data!r}"
    status, headers, body = got
    assert 400 <= status < 500, (status, body)
    assert headers.get("content-type") == "application/json", (headers, body)
    _check_shape(path, body)


def test_the_server_keeps_serving_after_broken_requests(gw: RunningGateway) -> None:
    for data in (b"\xff\xfe\r\n\r\n", b"POST /v1/messages HTTP/1.1\r\n\x00\r\n\r\n"):
        got, _ = _exchange(gw, data)
        assert got is not None and got[0] == 400
    body = orjson.dumps(
        {
            "model": "claude-sonnet-5",
            "max_tokens": 20,
            "messages": [{"role": "user", "content": "hello"}],
        }
    )
    req = _post(
        ANTHROPIC,
        gw.key,
        b"content-type: application/json\r\nanthropic-version: 2023-06-01\r\n"
        + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
        + body,
    )
    got, _ = _exchange(gw, req)
    assert got is not None and got[0] == 200, got
    assert orjson.loads(got[2])["type"] == "message"

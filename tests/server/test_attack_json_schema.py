"""Attack: the client's JSON schema (chat ``response_format``, Responses ``text.format``).

The gateway checks a structured answer against the schema the client sent. That schema is
hostile input: a ``$ref`` naming an http URL made jsonschema fetch it with urllib (the
gateway calling any address a client names, synchronously, on the event loop, with no
timeout), and a schema the validator refuses or loops on turned an answer already paid for
into a 500. Now a schema that cannot be used is a 400 in the caller's format before anything
is sent, no ``$ref`` leaves the schema, and one that only fails on the answer returns the
answer flagged.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.conftest import RunningGateway, start_gateway, stop, write_config
from tests.cost._cost_support import asgi_call, inproc_config, make_key

from bastion.gateway import Gateway


class Listener:
    """A TCP port that counts the connections made to it (an internal address to protect)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.hits = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.hits += 1
            conn.close()  # never answers: a fetch would hang without a timeout

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


@pytest.fixture(scope="module")
def listener() -> Iterator[Listener]:
    lst = Listener()
    yield lst
    lst.close()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    g = start_gateway(write_config(tmp_path_factory.mktemp("schema-attack")))
    yield g
    stop(g.proc)


def _responses(schema: Any) -> tuple[str, dict[str, Any]]:
    return "/v1/responses", {
        "model": "gpt-4.1",
        "input": "Give me the record.",
        "text": {"format": {"type": "json_schema", "name": "r", "schema": schema}},
    }


def _chat(schema: Any) -> tuple[str, dict[str, Any]]:
    return "/v1/chat/completions", {
        "model": "gpt-4.1",
        "messages": [{"role": "user", "content": "Give me the record."}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}},
    }


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status_code, self.headers, self.text = status, headers, body.decode()

    def json(self) -> Any:
        return json.loads(self.text)


def _post(gw: RunningGateway, path: str, body: dict[str, Any]) -> Answer:
    req = urllib.request.Request(
        gw.url + path,
        data=json.dumps(body).encode(),
        headers={"authorization": f"Bearer {gw.key}", "content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return Answer(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read())
    except urllib.error.HTTPError as e:
        return Answer(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())


def _healthy(gw: RunningGateway) -> bool:
    with urllib.request.urlopen(gw.url + "/healthz", timeout=5) as r:
        return bool(r.status == 200)


@pytest.mark.parametrize("shape", [_responses, _chat])
def test_a_remote_ref_in_the_schema_is_never_fetched(
    gw: RunningGateway, listener: Listener, shape: Any
) -> None:
    url = f"http://127.0.0.1:{listener.port}/schema.json"
    schemas = [
        {"$ref": url},
        {"type": "object", "properties": {"a": {"$ref": url}}},
        {"type": "object", "$defs": {"x": {"$ref": url}}, "additionalProperties": {"$ref": url}},
    ]
    for schema in schemas:
        t0 = time.monotonic()
        r = _post(gw, *shape(schema))
        assert r.status_code in (200, 400), r.text  # never a 500 after the answer was paid for
        assert time.monotonic() - t0 < 10  # no fetch that hangs the event loop
        if r.status_code == 400:
            assert r.json()["error"]["type"] == "invalid_request_error"
    time.sleep(0.3)
    assert listener.hits == 0
    assert _healthy(gw)


@pytest.mark.parametrize(
    ("shape", "param"),
    [(_responses, "text.format.schema"), (_chat, "response_format.json_schema.schema")],
)
@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "#"},  # loops on any value
        {"type": 5},
        {"type": "string", "format": "regex", "pattern": "["},
        {"$ref": "#/$defs/missing"},
        {"$schema": 5},
    ],
)
def test_an_unusable_schema_is_a_400_naming_the_field_and_nothing_is_sent(
    gw: RunningGateway, shape: Any, param: str, schema: dict[str, Any]
) -> None:
    r = _post(gw, *shape(schema))
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param
    assert "x-bastion-attempts" not in r.headers  # refused before any upstream request


@pytest.mark.parametrize("shape", [_responses, _chat])
def test_a_schema_that_loops_only_inside_the_answer_returns_the_paid_answer_flagged(
    gw: RunningGateway, shape: Any
) -> None:
    looping = {
        "type": "object",
        "$defs": {"x": {"$ref": "#/$defs/x"}},
        "properties": {"a": {"$ref": "#/$defs/x"}},
    }
    r = _post(gw, *shape(looping))
    assert r.status_code == 200, r.text
    assert r.headers["x-bastion-attempts"] == "1"


# hostile schema pieces: refs inward and outward, bad types, bad patterns, deep applicators
_REF = st.sampled_from(
    ["#", "#/", "#/$defs/x", "#/$defs/missing", "#/properties/a", "http://127.0.0.1:9/x", "x.json"]
)
_LEAF = st.one_of(
    st.builds(lambda r: {"$ref": r}, _REF),
    st.builds(lambda t: {"type": t}, st.sampled_from(["string", "object", "array", 5, "nope"])),
    st.builds(lambda p: {"type": "string", "pattern": p}, st.sampled_from(["[", "a+", "(?P<", ""])),
    st.builds(lambda n: {"minItems": n}, st.integers(-3, 3)),
    st.just({"format": "regex"}),
    st.booleans(),
)
_SCHEMA = st.recursive(
    _LEAF,
    lambda inner: st.one_of(
        st.builds(lambda s: {"type": "object", "properties": {"a": s}, "required": ["a"]}, inner),
        st.builds(lambda s: {"$defs": {"x": s}, "$ref": "#/$defs/x"}, inner),
        st.builds(lambda a, b: {"anyOf": [a, b]}, inner, inner),
        st.builds(lambda s: {"not": s}, inner),
        st.builds(lambda s: {"type": "array", "items": s}, inner),
    ),
    max_leaves=6,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=_SCHEMA, responses=st.booleans())
def test_no_schema_a_client_sends_makes_a_500(
    tmp_path_factory: pytest.TempPathFactory, schema: Any, responses: bool
) -> None:
    """Property: whatever schema is sent, the caller gets its answer or a 400, never a 5xx."""

    async def run(tmp: Path) -> tuple[int, Any]:
        cfg = inproc_config(
            tmp, models={"gpt-4.1": {"deployments": [{"provider": "sim", "model": "gpt-4.1"}]}}
        )
        async with Gateway(cfg) as g:
            key = await make_key(g)
            path, body = (_responses if responses else _chat)(schema)
            status, _, out = await asgi_call(g, key, path, body)
            return status, out

    status, out = asyncio.run(run(tmp_path_factory.mktemp("prop")))
    assert status in (200, 400), out
    if status == 400:
        assert out["error"]["type"] == "invalid_request_error"
        assert out["error"]["param"] in ("text.format.schema", "response_format.json_schema.schema")

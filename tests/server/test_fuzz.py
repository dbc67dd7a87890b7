"""Fuzzing the request parsers: no input makes the server answer 500 or hang."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.asgi import asgi_request
from tests.conftest import sim_models

from bastion.auth import new_key
from bastion.config import load_config
from bastion.gateway import Gateway
from bastion.server.app import create_app

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False),
    st.text(max_size=20),
)
json_value = st.recursive(
    json_leaf,
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=5)
    ),
    max_leaves=20,
)
roles = st.sampled_from(["user", "assistant", "system", "tool", "developer", "bogus", 3, None])
message = st.fixed_dictionaries(
    {"role": roles},
    optional={
        "content": st.one_of(
            st.text(max_size=30),
            st.lists(
                st.fixed_dictionaries(
                    {"type": st.sampled_from(["text", "image", "tool_use", "tool_result", 5])},
                    optional={
                        "text": json_leaf,
                        "id": json_leaf,
                        "input": json_value,
                        "tool_use_id": json_leaf,
                        "content": json_value,
                    },
                ),
                max_size=3,
            ),
            json_value,
        ),
        "tool_call_id": json_leaf,
        "tool_calls": json_value,
    },
)
plausible = st.fixed_dictionaries(
    {"model": st.sampled_from(["claude-sonnet-5", "gpt-4.1", "nope", "", 7])},
    optional={
        "messages": st.lists(message, max_size=4) | json_value,
        "max_tokens": st.one_of(st.integers(-5, 100_000), json_leaf),
        "stream": st.one_of(st.booleans(), json_leaf),
        "temperature": json_leaf,
        "tools": json_value,
        "tool_choice": json_value,
        "system": json_value,
        "stop": json_value,
        "stop_sequences": json_value,
        "metadata": json_value,
        "user": json_leaf,
        "stream_options": json_value,
    },
)
ALLOWED = {200, 400, 404, 413, 422}


@pytest.fixture
async def fuzz_app(tmp_path: Path) -> AsyncIterator[tuple[Any, str]]:
    cfg = load_config(
        None,
        overrides={
            "store": {"url": f"sqlite:///{tmp_path / 'f.db'}"},
            "state": {"url": "memory://"},
            "observability": {"spill_path": str(tmp_path / "spill.jsonl")},
            "providers": {"sim": {"kind": "sim"}},
            "models": sim_models(),
        },
    )
    gw = Gateway(cfg)
    await gw.start()
    secret, rec = new_key("fuzz")
    await gw.store.create_key(rec)
    yield create_app(gw), secret
    await gw.aclose()


async def _check(app: Any, key: str, path: str, body: bytes) -> None:
    async with asyncio.timeout(5):
        status, _, out = await asgi_request(app, "POST", path, body, {"x-api-key": key})
    assert status in ALLOWED, (status, body[:300], out[:300])
    if status != 200:
        err = orjson.loads(out)
        assert ("error" in err) and (err.get("type") == "error" if path == "/v1/messages" else True)


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/chat/completions"])
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=plausible)
async def test_structured_garbage_never_500(
    fuzz_app: tuple[Any, str], path: str, body: dict[str, Any]
) -> None:
    app, key = fuzz_app
    await _check(app, key, path, orjson.dumps(body))


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/chat/completions"])
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=st.binary(max_size=200) | json_value.map(orjson.dumps))
async def test_raw_bytes_never_500(fuzz_app: tuple[Any, str], path: str, raw: bytes) -> None:
    app, key = fuzz_app
    await _check(app, key, path, raw)

"""Attack: wrong types in the Responses fields that are echoed back or sent upstream.

``parallel_tool_calls`` was checked only when tools were sent, ``truncation`` never, and
``text.format.strict`` / ``description`` went upstream as given: ``{"parallel_tool_calls": "x"}``
was answered 200 with ``"parallel_tool_calls": "x"`` in the response object, a shape no SDK
parses. Each is now a 400 naming the field, in OpenAI's format, before anything is sent.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.cost._cost_support import asgi_call, inproc_config, make_key

from bastion.errors import InvalidRequest
from bastion.gateway import Gateway
from bastion.responses import to_chat

BASE: dict[str, Any] = {"model": "gpt-4.1", "input": "hi"}
SCHEMA_FMT: dict[str, Any] = {"type": "json_schema", "name": "r", "schema": {"type": "object"}}

# any JSON value that is not of the field's type (None means "not sent" and is allowed)
_JSON = st.recursive(
    st.one_of(st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=5,
)


def _field(name: str, value: Any) -> tuple[dict[str, Any], str]:
    """A request with ``value`` in the named field, and the param its error must name."""
    if name in ("strict", "description"):
        return {**BASE, "text": {"format": {**SCHEMA_FMT, name: value}}}, f"text.format.{name}"
    return {**BASE, name: value}, name


@given(
    st.sampled_from(["parallel_tool_calls", "truncation", "strict", "description"]),
    _JSON,
)
def test_a_wrong_value_in_an_echoed_field_is_refused_naming_it(name: str, value: Any) -> None:
    valid = {
        "parallel_tool_calls": isinstance(value, bool),
        "truncation": value in ("auto", "disabled") and isinstance(value, str),
        "strict": isinstance(value, bool),
        "description": isinstance(value, str),
    }[name]
    body, param = _field(name, value)
    if valid:
        out = to_chat(body)
        if name == "parallel_tool_calls":
            assert out.echo["parallel_tool_calls"] is value
        elif name == "truncation":
            assert out.echo["truncation"] == value
        else:
            assert out.chat["response_format"]["json_schema"][name] == value
        return
    with pytest.raises(InvalidRequest) as e:
        to_chat(body)
    assert e.value.param == param


@pytest.mark.parametrize(
    ("name", "value"),
    [("parallel_tool_calls", "x"), ("truncation", 5), ("strict", "yes"), ("description", {"a": 1})],
)
def test_through_the_server_the_refusal_is_openai_shaped_and_nothing_is_sent(
    tmp_path: Path, name: str, value: Any
) -> None:
    async def run() -> tuple[int, dict[str, str], Any]:
        cfg = inproc_config(
            tmp_path,
            models={"gpt-4.1": {"deployments": [{"provider": "sim", "model": "gpt-4.1"}]}},
        )
        async with Gateway(cfg) as g:
            key = await make_key(g)
            return await asgi_call(g, key, "/v1/responses", _field(name, value)[0])

    status, headers, out = asyncio.run(run())
    assert status == 400, out
    assert out["error"]["type"] == "invalid_request_error"
    assert out["error"]["param"] == _field(name, value)[1]
    assert "x-bastion-attempts" not in headers

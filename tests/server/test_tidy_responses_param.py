"""A Responses API 400 names the field as OpenAI does: ``input[0].call_id``, not ``input.0.call_id``.

OpenAI's own errors write list indexes in brackets (``Invalid type for 'messages[0].content'``,
param ``messages[0].content``; ``tools[1].function.name`` on chat), and clients that point at the
field by its ``param`` parse that form. Checked end to end through the official ``openai`` SDK
against a real ``bastion serve``, and as a property of the translation for any position.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.conftest import RunningGateway, start_gateway, stop, write_config

from bastion.errors import InvalidRequest
from bastion.responses import to_chat

# a param as OpenAI writes one: names joined by dots, every list index in brackets
OPENAI_PARAM = re.compile(r"[a-z_]+(\[\d+\])*(\.[a-z_]+(\[\d+\])*)*")

OK_MESSAGE = {"role": "user", "content": "Hi"}
OK_TOOL = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    g = start_gateway(write_config(tmp_path_factory.mktemp("tidy_responses_param")))
    yield g
    stop(g.proc)


@pytest.fixture
def client(gw: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.key, max_retries=0)


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        (
            {"input": [OK_MESSAGE, {"type": "function_call_output", "output": "x"}]},
            "input[1].call_id",
        ),
        (
            {
                "input": [
                    {
                        "role": "user",
                        "content": [{"type": "input_text", "text": "a"}, {"type": "input_file"}],
                    }
                ]
            },
            "input[0].content[1].type",
        ),
        (
            {
                "input": [
                    OK_MESSAGE,
                    OK_MESSAGE,
                    {"type": "function_call_output", "call_id": "c", "output": [{"type": "x"}]},
                ]
            },
            "input[2].output[0]",
        ),
        ({"tools": [OK_TOOL, {"type": "function", "name": 7}]}, "tools[1].name"),
        ({"tools": [OK_TOOL, {**OK_TOOL, "parameters": "no"}]}, "tools[1].parameters"),
    ],
)
def test_the_sdk_sees_the_param_written_as_openai_writes_it(
    client: openai.OpenAI, extra: dict[str, Any], param: str
) -> None:
    body: dict[str, Any] = {"model": "gpt-4.1", "input": "Hi", **extra}
    with pytest.raises(openai.BadRequestError) as ei:
        client.responses.create(**body)
    assert ei.value.param == param  # the SDK's own reading of the error body
    err = ei.value.body
    assert isinstance(err, dict) and err["param"] == param
    assert err["type"] == "invalid_request_error" and err["message"].startswith(param + ":")


# The bad item (and the field it lacks) wherever it stands among good ones.
BAD_ITEMS: list[tuple[dict[str, Any], str]] = [
    ({"type": "function_call_output", "output": "x"}, "call_id"),
    ({"type": "function_call", "name": "n", "arguments": "{}"}, "call_id"),
    ({"type": "function_call", "call_id": "c", "name": "n"}, "arguments"),
    ({"role": "robot", "content": "x"}, "role"),
    ({"role": "user", "content": 5}, "content"),
]


@settings(max_examples=60, deadline=None)
@given(
    before=st.integers(min_value=0, max_value=12),
    after=st.integers(min_value=0, max_value=3),
    bad=st.sampled_from(BAD_ITEMS),
)
def test_an_input_item_is_named_by_its_bracketed_index(
    before: int, after: int, bad: tuple[dict[str, Any], str]
) -> None:
    item, field = bad
    items = [OK_MESSAGE] * before + [item] + [OK_MESSAGE] * after
    with pytest.raises(InvalidRequest) as ei:
        to_chat({"model": "gpt-4.1", "input": items})
    assert ei.value.param == f"input[{before}].{field}"
    assert OPENAI_PARAM.fullmatch(ei.value.param)


@settings(max_examples=40, deadline=None)
@given(
    tools_before=st.integers(min_value=0, max_value=8),
    part=st.integers(min_value=0, max_value=5),
)
def test_nested_indexes_are_bracketed_at_every_level(tools_before: int, part: int) -> None:
    parts: list[dict[str, Any]] = [{"type": "input_text", "text": "a"}] * part
    body = {"model": "gpt-4.1", "input": [{"role": "user", "content": [*parts, {"type": "audio"}]}]}
    with pytest.raises(InvalidRequest) as ei:
        to_chat(body)
    assert ei.value.param == f"input[0].content[{part}].type"
    tools = [OK_TOOL] * tools_before + [{"type": "function", "name": "t", "description": 1}]
    with pytest.raises(InvalidRequest) as ei:
        to_chat({"model": "gpt-4.1", "input": "Hi", "tools": tools})
    assert ei.value.param == f"tools[{tools_before}].description"
    assert OPENAI_PARAM.fullmatch(ei.value.param)

"""Attack (issue #14): a tool name Converse does not accept was renamed on the way to Bedrock
(``get weather`` -> ``get_weather``, ``wétter`` -> ``w_tter``, 200 characters cut to 64) and
never renamed back, so the caller was answered with a call to a tool it had not defined (and
two long names could become one). It is now a 400 naming the tool, in the caller's format,
before anything is sent; a name Converse accepts goes and comes back unchanged.

Real `bastion serve` + a separate `bastion sim` speaking Converse, reached by the official SDKs.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.conftest import RunningGateway, start_gateway, stop, write_config
from tests.cost._cost_support import sim_process

from bastion.errors import InvalidRequest
from bastion.providers.bedrock import build_request
from bastion.providers.sim.bedrock_wire import SIM_ACCESS_KEY_ID, SIM_SECRET_ACCESS_KEY

MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
ASK: list[Any] = [{"role": "user", "content": "Use the tool for Paris"}]
VALID = re.compile(r"[a-zA-Z0-9_-]{1,64}")


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    with sim_process() as url:
        yield url


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, sim_url: str) -> Iterator[RunningGateway]:
    cfg = write_config(
        tmp_path_factory.mktemp("atk14br"),
        providers={"br": {"kind": "bedrock", "region": "us-east-1", "base_url": sim_url}},
        models={"br": {"deployments": [{"provider": "br", "model": MODEL}]}},
        reliability={"retry": {"attempts_per_deployment": 1}, "breaker": {"enabled": False}},
    )
    env = {
        "AWS_ACCESS_KEY_ID": SIM_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SIM_SECRET_ACCESS_KEY,
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }
    g = start_gateway(cfg, env=env)
    yield g
    stop(g.proc)


def _converse_calls(sim_url: str) -> int:
    with urllib.request.urlopen(sim_url + "/_sim/requests", timeout=10) as r:
        return sum(1 for x in json.loads(r.read()) if x["path"].startswith("/model/"))


def _oa_tool(name: str) -> list[Any]:
    params = {"type": "object", "properties": {"city": {"type": "string"}}}
    return [{"type": "function", "function": {"name": name, "parameters": params}}]


@pytest.mark.parametrize("name", ["get weather", "wétter_天気", "a.b", "f" * 65])
def test_openai_client_tool_name_bedrock_refuses_is_a_400_naming_it(
    gw: RunningGateway, sim_url: str, name: str
) -> None:
    oa = openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.key, max_retries=0)
    before = _converse_calls(sim_url)
    with pytest.raises(openai.BadRequestError) as err:
        oa.chat.completions.create(
            model="br", messages=ASK, tools=_oa_tool(name), tool_choice="required"
        )
    assert "tools.0.name" in err.value.message and name[:20] in err.value.message
    assert _converse_calls(sim_url) == before  # refused before anything was sent


def test_anthropic_client_stream_with_a_bad_tool_name_is_a_400(gw: RunningGateway) -> None:
    an = anthropic.Anthropic(base_url=gw.url, api_key=gw.key, max_retries=0)
    tools: list[Any] = [
        {"name": "ok_tool", "input_schema": {"type": "object"}},
        {"name": "get weather", "input_schema": {"type": "object"}},
    ]
    with (
        pytest.raises(anthropic.BadRequestError) as err,
        an.messages.stream(model="br", max_tokens=64, messages=ASK, tools=tools) as s,
    ):
        s.get_final_message()
    assert err.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "tools.1.name" in err.value.message


def test_a_name_converse_accepts_comes_back_unchanged(gw: RunningGateway) -> None:
    oa = openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.key, max_retries=0)
    name = "Get_Weather-" + "x" * 52  # 64 characters, the limit
    res = oa.chat.completions.create(
        model="br", messages=ASK, tools=_oa_tool(name), tool_choice="required"
    )
    (call,) = res.choices[0].message.tool_calls or []
    assert call.function.name == name  # type: ignore[union-attr]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_any_tool_name_is_sent_as_given_or_refused(name: str) -> None:
    body = {
        "model": MODEL,
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"name": name, "input_schema": {"type": "object"}}],
    }
    try:
        req = build_request("http://127.0.0.1:1", body, {}, stream=False)
    except InvalidRequest as exc:
        assert not VALID.fullmatch(name) and exc.param == "tools.0.name"
        return
    assert VALID.fullmatch(name)
    sent = orjson.loads(req.body)
    assert [t["toolSpec"]["name"] for t in sent["toolConfig"]["tools"]] == [name]

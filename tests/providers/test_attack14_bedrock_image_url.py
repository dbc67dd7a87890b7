"""Attack (issue #14): an image given by URL was dropped on the way to Bedrock (Converse takes
inline bytes only), so "what is in this picture?" was answered without the picture, with a 200.
It is now a 400 naming the content part, in the caller's format, before anything is sent; an
inline (base64) image still goes, as Converse's image block.

Real `bastion serve` + a separate `bastion sim` speaking Converse, reached by the official SDKs.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.conftest import RunningGateway, start_gateway, stop, write_config
from tests.cost._cost_support import sim_process

from bastion.errors import InvalidRequest
from bastion.providers.bedrock import build_request
from bastion.providers.sim.bedrock_wire import SIM_ACCESS_KEY_ID, SIM_SECRET_ACCESS_KEY

MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    with sim_process() as url:
        yield url


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, sim_url: str) -> Iterator[RunningGateway]:
    cfg = write_config(
        tmp_path_factory.mktemp("atk14brimg"),
        providers={"br": {"kind": "bedrock", "region": "us-east-1", "base_url": sim_url}},
        models={"br": {"deployments": [{"provider": "br", "model": MODEL}]}},
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


def _converse_bodies(sim_url: str) -> list[Any]:
    with urllib.request.urlopen(sim_url + "/_sim/requests", timeout=10) as r:
        return [x["body"] for x in json.loads(r.read()) if x["path"].startswith("/model/")]


def test_openai_image_url_over_bedrock_is_a_400_and_inline_goes(
    gw: RunningGateway, sim_url: str
) -> None:
    oa = openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.key, max_retries=0)
    before = len(_converse_bodies(sim_url))
    url_part = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    asked: list[Any] = [
        {"role": "user", "content": [{"type": "text", "text": "What is this?"}, url_part]}
    ]
    with pytest.raises(openai.BadRequestError) as err:
        oa.chat.completions.create(model="br", messages=asked)
    assert err.value.param == "messages.0.content.1" and "inline" in err.value.message
    assert len(_converse_bodies(sim_url)) == before  # nothing was sent
    inline = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + PNG}}
    asked = [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, inline]}]
    res = oa.chat.completions.create(model="br", messages=asked)
    assert res.choices[0].message.content
    (sent,) = _converse_bodies(sim_url)[before:]
    assert sent["messages"][0]["content"][1]["image"]["format"] == "png"


def test_anthropic_url_image_in_a_tool_result_is_a_400(gw: RunningGateway) -> None:
    an = anthropic.Anthropic(base_url=gw.url, api_key=gw.key, max_retries=0)
    messages: list[Any] = [
        {"role": "user", "content": "look"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "t1",
                    "content": [
                        {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}
                    ],
                }
            ],
        },
    ]
    tools: list[Any] = [{"name": "f", "input_schema": {"type": "object"}}]
    with pytest.raises(anthropic.BadRequestError) as err:
        an.messages.create(model="br", max_tokens=32, messages=messages, tools=tools)
    assert err.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "messages.2.content.0" in err.value.message


@given(st.sampled_from(["base64", "url", "file", "weird"]), st.booleans())
def test_any_image_source_but_inline_data_is_refused(kind: str, in_tool_result: bool) -> None:
    source: dict[str, Any] = {"type": kind}
    if kind == "base64":
        source |= {"media_type": "image/png", "data": PNG}
    else:
        source |= {"url": "https://x/y.png", "file_id": "file_1"}
    image = {"type": "image", "source": source}
    content: list[Any] = (
        [{"type": "tool_result", "tool_use_id": "t1", "content": [image]}]
        if in_tool_result
        else [{"type": "text", "text": "see"}, image]
    )
    messages: list[Any] = [{"role": "user", "content": content}]
    if in_tool_result:
        use = {"type": "tool_use", "id": "t1", "name": "f", "input": {}}
        messages = [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": [use]},
            *messages,
        ]
    body = {"model": MODEL, "max_tokens": 5, "messages": messages}
    try:
        req = build_request("http://b", body, {}, stream=False)
    except InvalidRequest as exc:
        assert kind != "base64" and exc.param is not None and exc.param.startswith("messages.")
        return
    assert kind == "base64"
    assert b'"image"' in req.body and PNG.encode() in orjson.dumps(orjson.loads(req.body))

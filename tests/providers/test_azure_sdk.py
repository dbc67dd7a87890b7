"""Azure OpenAI behind a real `bastion serve`, reached by the official SDKs; upstream is a
separate `bastion sim` process speaking Azure's wire, so what Azure would receive is seen.

Failover runs both ways between Azure and Anthropic (in-process simulator as an `anthropic`
provider) and between Azure and OpenAI (as an `openai` provider), streams and tool calls
included.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from tests.conftest import RunningGateway, start_gateway, stop, write_config
from tests.cost._cost_support import sim_process

from bastion.store import open_store
from bastion.store.models import CallRecord

KEY = "azure-test-key-1"
TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.entra.sig"
MSG: list[Any] = [{"role": "user", "content": "Say hello to the team"}]
FAIL = {"x-sim-fault": "status:500"}
TOOL_OA: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
TOOL_AN: list[Any] = [
    {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]
TOOL_ASK: list[Any] = [{"role": "user", "content": "Use the get_weather tool for Paris"}]


def _dep(provider: str, model: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {"provider": provider, "model": model, "headers": headers or {}}


def _models() -> dict[str, Any]:
    return {
        "az": {"deployments": [_dep("az", "gpt-prod")]},
        "az-then-claude": {
            "deployments": [_dep("az", "gpt-prod", FAIL), _dep("an", "claude-sonnet-5")]
        },
        "claude-then-az": {
            "deployments": [_dep("an", "claude-sonnet-5", FAIL), _dep("az", "gpt-prod")]
        },
        "az-then-openai": {"deployments": [_dep("az", "gpt-prod", FAIL), _dep("oa", "gpt-4.1")]},
        "openai-then-az": {"deployments": [_dep("oa", "gpt-4.1", FAIL), _dep("az", "gpt-prod")]},
        "az-filtered": {
            "deployments": [
                _dep("az", "gpt-prod", {"x-sim-fault": "content_policy"}),
                _dep("an", "claude-sonnet-5"),
            ]
        },
        "az-filtered-output": {
            "deployments": [_dep("az", "gpt-prod", {"x-sim-azure-filter": "output"})]
        },
        "az-entra": {"deployments": [_dep("az-entra", "gpt-entra")]},
        "az-cut-then-claude": {
            "deployments": [
                _dep("az", "gpt-prod", {"x-sim-fault": "cut_after:4"}),
                _dep("an", "claude-sonnet-5"),
            ]
        },
        "az-v1": {"deployments": [_dep("az-v1", "gpt-v1")]},
        "az-limited": {
            "deployments": [
                _dep("az", "gpt-prod", {"x-sim-fault": "fail_first:1;status:429;retry_after:1"})
            ]
        },
    }


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    with sim_process() as url:
        yield url


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, sim_url: str) -> Iterator[RunningGateway]:
    cfg = write_config(
        tmp_path_factory.mktemp("azure"),
        providers={
            "az": {"kind": "azure-openai", "base_url": sim_url, "api_key_env": "AZ_TEST_KEY"},
            "az-entra": {
                "kind": "azure-openai",
                "base_url": sim_url + "/openai",
                "api_version": "2025-01-01-preview",
                "token_env": "AZ_TEST_TOKEN",
            },
            "az-v1": {
                "kind": "azure-openai",
                "base_url": sim_url,
                "api_version": "v1",
                "api_key_env": "AZ_TEST_KEY",
            },
            "an": {"kind": "anthropic", "base_url": "sim://anthropic"},
            "oa": {"kind": "openai", "base_url": "sim://openai/v1"},
        },
        models=_models(),
        features={"default": {"pii_output": "off"}, "guarded": {"pii_output": "redact"}},
        reliability={"retry": {"attempts_per_deployment": 1}, "breaker": {"enabled": False}},
    )
    g = start_gateway(cfg, env={"AZ_TEST_KEY": KEY, "AZ_TEST_TOKEN": TOKEN})
    yield g
    stop(g.proc)


def _oa(gw: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.key, max_retries=0)


def _an(gw: RunningGateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=gw.key, max_retries=0)


def _azure_requests(sim_url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(sim_url + "/_sim/requests", timeout=10) as r:
        recs: list[dict[str, Any]] = json.loads(r.read())
    return [x for x in recs if x["path"].startswith("/openai/")]


def _record(gw: RunningGateway, request_id: str) -> CallRecord:
    url = f"sqlite:///{gw.config_path.parent / 'bastion.db'}"

    async def find() -> CallRecord | None:
        async with open_store(url) as store:
            recs = await store.recent_calls(500)
        return next((r for r in recs if r.request_id == request_id), None)

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rec = asyncio.run(find())
        if rec is not None:
            return rec
        time.sleep(0.1)
    raise AssertionError(f"no record for {request_id}")


def test_create_reaches_azure_with_deployment_path_version_and_api_key(
    gw: RunningGateway, sim_url: str
) -> None:
    before = len(_azure_requests(sim_url))
    raw = _oa(gw).chat.completions.with_raw_response.create(model="az", messages=MSG)
    res = raw.parse()
    assert res.choices[0].message.content and res.choices[0].finish_reason == "stop"
    assert res.usage is not None and res.usage.prompt_tokens > 0
    reqs = _azure_requests(sim_url)[before:]
    assert len(reqs) == 1
    seen = reqs[0]
    assert seen["path"] == "/openai/deployments/gpt-prod/chat/completions?api-version=2024-10-21"
    assert seen["headers"]["api-key"] == KEY
    assert "authorization" not in seen["headers"]
    rec = _record(gw, raw.headers["x-request-id"])
    assert rec.provider == "az" and rec.status == 200
    assert rec.input_tokens == res.usage.prompt_tokens
    assert rec.output_tokens == res.usage.completion_tokens


def test_openai_stream_relays_azure_chunks_with_usage(gw: RunningGateway) -> None:
    chunks = list(
        _oa(gw).chat.completions.create(
            model="az", messages=MSG, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    finals = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finals == ["stop"]
    usage = [c.usage for c in chunks if c.usage]
    assert usage and usage[-1].completion_tokens > 0


def test_anthropic_client_gets_azure_translated_create_and_stream(gw: RunningGateway) -> None:
    c = _an(gw)
    msg = c.messages.create(model="az", max_tokens=64, messages=MSG)
    assert msg.content[0].type == "text" and msg.content[0].text
    assert msg.stop_reason == "end_turn" and msg.usage.output_tokens > 0
    with c.messages.stream(model="az", max_tokens=64, messages=MSG) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text and final.stop_reason == "end_turn" and final.usage.output_tokens > 0


@pytest.mark.parametrize(
    ("model", "served"),
    [
        ("az-then-claude", "an"),
        ("claude-then-az", "az"),
        ("az-then-openai", "oa"),
        ("openai-then-az", "az"),
    ],
)
def test_failover_both_ways_streams_and_tool_calls(
    gw: RunningGateway, model: str, served: str
) -> None:
    oa, an = _oa(gw), _an(gw)
    raw = oa.chat.completions.with_raw_response.create(
        model=model, messages=TOOL_ASK, tools=TOOL_OA
    )
    res = raw.parse()
    calls = res.choices[0].message.tool_calls or []
    assert calls and calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(calls[0].function.arguments) is not None  # type: ignore[union-attr]
    assert _record(gw, raw.headers["x-request-id"]).provider == served
    stream = oa.chat.completions.create(model=model, messages=MSG, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    with an.messages.stream(model=model, max_tokens=128, messages=TOOL_ASK, tools=TOOL_AN) as s:
        final = s.get_final_message()
    uses = [b for b in final.content if b.type == "tool_use"]
    assert uses and uses[0].name == "get_weather" and final.stop_reason == "tool_use"


def test_content_filter_is_a_policy_error_in_each_format_and_not_retried(
    gw: RunningGateway, sim_url: str
) -> None:
    before = len(_azure_requests(sim_url))
    with pytest.raises(openai.BadRequestError) as oe:
        _oa(gw).chat.completions.create(model="az-filtered", messages=MSG)
    assert oe.value.code == "content_filter"
    with pytest.raises(anthropic.BadRequestError) as ae:
        _an(gw).messages.create(model="az-filtered", max_tokens=32, messages=MSG)
    assert ae.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "content management policy" in ae.value.body["error"]["message"]  # type: ignore[index]
    # one upstream request each: no retry, and no failover to the Anthropic deployment
    assert len(_azure_requests(sim_url)) - before == 2


def test_filtered_output_is_content_filter_and_refusal(gw: RunningGateway) -> None:
    res = _oa(gw).chat.completions.create(model="az-filtered-output", messages=MSG)
    assert res.choices[0].finish_reason == "content_filter"
    msg = _an(gw).messages.create(model="az-filtered-output", max_tokens=64, messages=MSG)
    assert msg.stop_reason == "refusal"
    stream = _oa(gw).chat.completions.create(model="az-filtered-output", messages=MSG, stream=True)
    finals = [
        c.choices[0].finish_reason for c in stream if c.choices and c.choices[0].finish_reason
    ]
    assert finals == ["content_filter"]


def test_entra_token_is_a_bearer_header_and_never_an_api_key(
    gw: RunningGateway, sim_url: str
) -> None:
    before = len(_azure_requests(sim_url))
    res = _oa(gw).chat.completions.create(model="az-entra", messages=MSG)
    assert res.choices[0].message.content
    (seen,) = _azure_requests(sim_url)[before:]
    assert seen["path"] == (
        "/openai/deployments/gpt-entra/chat/completions?api-version=2025-01-01-preview"
    )
    assert seen["headers"]["authorization"] == "Bearer " + TOKEN
    assert "api-key" not in seen["headers"]


def test_v1_surface_names_the_deployment_in_the_body(gw: RunningGateway, sim_url: str) -> None:
    before = len(_azure_requests(sim_url))
    res = _oa(gw).chat.completions.create(model="az-v1", messages=MSG)
    assert res.choices[0].message.content
    (seen,) = _azure_requests(sim_url)[before:]
    assert seen["path"] == "/openai/v1/chat/completions"
    assert seen["body"]["model"] == "gpt-v1" and seen["headers"]["api-key"] == KEY


def test_azure_429_is_retried_after_its_retry_after(gw: RunningGateway, sim_url: str) -> None:
    before = len(_azure_requests(sim_url))
    res = _oa(gw).chat.completions.create(model="az-limited", messages=MSG)
    assert res.choices[0].message.content
    assert len(_azure_requests(sim_url)) - before == 2  # the 429, then the retry that answered


def test_output_guards_read_azure_streams_past_the_empty_choices_chunk(
    gw: RunningGateway,
) -> None:
    """The PII output filter (redact) sees Azure's opening chunk first and still works."""
    email = "jane.doe@example.com"
    ask: list[Any] = [{"role": "user", "content": f"[[sim:reply=Write to {email} today.]]"}]
    plain = _oa(gw).chat.completions.create(model="az", messages=ask, stream=True)
    assert email in "".join(c.choices[0].delta.content or "" for c in plain if c.choices)
    headers = {"x-bastion-feature": "guarded"}
    oa = _oa(gw).with_options(default_headers=headers)
    stream = oa.chat.completions.create(model="az", messages=ask, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text.startswith("Write to") and email not in text
    an = _an(gw).with_options(default_headers=headers)
    with an.messages.stream(model="az", max_tokens=64, messages=ask) as s:
        got = "".join(s.text_stream)
    assert got.startswith("Write to") and email not in got


def test_responses_api_is_translated_to_azure_chat(gw: RunningGateway, sim_url: str) -> None:
    before = len(_azure_requests(sim_url))
    r = _oa(gw).responses.create(model="az", instructions="Be brief.", input="Hello there")
    assert r.output_text and r.usage is not None and r.usage.output_tokens > 0
    with _oa(gw).responses.stream(model="az", input="Stream please") as s:
        final = s.get_final_response()
    assert final.output_text
    assert len(_azure_requests(sim_url)) - before == 2


def test_n_choices_over_azure_are_two_or_refused_never_one_silently(gw: RunningGateway) -> None:
    for model in ("az", "az-then-claude"):
        try:
            res = _oa(gw).chat.completions.create(model=model, messages=MSG, n=2)
        except openai.BadRequestError as err:
            assert err.param == "n"
        else:
            assert len(res.choices) == 2


def test_an_azure_stream_cut_midway_is_carried_on_at_anthropic(gw: RunningGateway) -> None:
    """The cut comes after Azure's empty-choices chunk and some text: the client's stream
    still ends properly, with the fallback's answer."""
    raw = _oa(gw).chat.completions.with_raw_response.create(
        model="az-cut-then-claude", messages=MSG, stream=True
    )
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finals = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert text and finals == ["stop"]
    rec = _record(gw, raw.headers["x-request-id"])
    assert rec.provider == "an" and rec.status == 200
    with _an(gw).messages.stream(model="az-cut-then-claude", max_tokens=64, messages=MSG) as s:
        got = "".join(s.text_stream)
        final = s.get_final_message()
    assert got and final.stop_reason == "end_turn"

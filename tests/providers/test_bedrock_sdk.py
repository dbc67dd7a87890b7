"""AWS Bedrock behind a real `bastion serve`, reached by the official OpenAI and Anthropic SDKs;
upstream is a separate `bastion sim` process speaking Bedrock's Converse wire and checking every
request's SigV4 signature, so what Bedrock would receive is seen.

Failover runs both ways between Bedrock and Anthropic (in-process simulator as an `anthropic`
provider) and between Bedrock and OpenAI (as an `openai` provider), streams and tool calls
included.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from tests.conftest import RunningGateway, start_gateway, stop, write_config
from tests.cost._cost_support import sim_process

from bastion.providers.sim.bedrock_wire import (
    REGION_HEADER,
    SIM_ACCESS_KEY_ID,
    SIM_SECRET_ACCESS_KEY,
)
from bastion.store import open_store
from bastion.store.models import CallRecord

MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
REGION = "ap-southeast-2"
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
        "br": {"deployments": [_dep("br", MODEL)]},
        "br-then-claude": {"deployments": [_dep("br", MODEL, FAIL), _dep("an", "claude-sonnet-5")]},
        "claude-then-br": {"deployments": [_dep("an", "claude-sonnet-5", FAIL), _dep("br", MODEL)]},
        "br-then-openai": {"deployments": [_dep("br", MODEL, FAIL), _dep("oa", "gpt-4.1")]},
        "openai-then-br": {"deployments": [_dep("oa", "gpt-4.1", FAIL), _dep("br", MODEL)]},
        "br-throttled": {"deployments": [_dep("br", MODEL, {"x-sim-fault": "status:429"})]},
        "br-invalid": {"deployments": [_dep("br", MODEL, {"x-sim-fault": "status:400"})]},
        "br-unavailable": {"deployments": [_dep("br", MODEL, {"x-sim-fault": "status:503"})]},
        "claude-cut-then-br": {
            "deployments": [
                _dep("an", "claude-sonnet-5", {"x-sim-fault": "cut_after:6"}),
                _dep("br", MODEL),
            ]
        },
        "br-cut-then-claude": {
            "deployments": [
                _dep("br", MODEL, {"x-sim-fault": "cut_after:6"}),
                _dep("an", "claude-sonnet-5"),
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
        tmp_path_factory.mktemp("bedrock"),
        providers={
            "br": {"kind": "bedrock", "region": REGION, "base_url": sim_url},
            "an": {"kind": "anthropic", "base_url": "sim://anthropic"},
            "oa": {"kind": "openai", "base_url": "sim://openai/v1"},
        },
        models=_models(),
        features={"default": {"pii_output": "off"}, "guarded": {"pii_output": "redact"}},
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


def _oa(gw: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.key, max_retries=0)


def _an(gw: RunningGateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=gw.key, max_retries=0)


def _bedrock_requests(sim_url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(sim_url + "/_sim/requests", timeout=10) as r:
        recs: list[dict[str, Any]] = json.loads(r.read())
    return [x for x in recs if x["path"].startswith("/model/")]


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


def test_openai_create_reaches_converse_signed_for_the_region_with_usage_and_record(
    gw: RunningGateway, sim_url: str
) -> None:
    before = len(_bedrock_requests(sim_url))
    raw = _oa(gw).chat.completions.with_raw_response.create(
        model="br", messages=[{"role": "system", "content": "Be brief."}, *MSG], max_tokens=50
    )
    res = raw.parse()
    assert res.choices[0].message.content and res.choices[0].finish_reason == "stop"
    assert res.usage is not None and res.usage.prompt_tokens > 0
    (seen,) = _bedrock_requests(sim_url)[before:]
    assert seen["path"] == "/model/us.anthropic.claude-sonnet-4-5-20250929-v1:0/converse"
    assert seen["headers"][REGION_HEADER] == REGION
    assert seen["headers"]["authorization"].startswith(
        f"AWS4-HMAC-SHA256 Credential={SIM_ACCESS_KEY_ID}/"
    )
    assert f"/{REGION}/bedrock/aws4_request" in seen["headers"]["authorization"]
    body = seen["body"]
    assert body["system"] == [{"text": "Be brief."}]
    assert body["inferenceConfig"] == {"maxTokens": 50}
    assert body["messages"] == [{"role": "user", "content": [{"text": "Say hello to the team"}]}]
    rec = _record(gw, raw.headers["x-request-id"])
    assert rec.provider == "br" and rec.status == 200
    assert rec.input_tokens == res.usage.prompt_tokens
    assert rec.output_tokens == res.usage.completion_tokens
    # priced as Anthropic's claude-sonnet-4-5 ($3 / $15 per million tokens)
    want = (rec.input_tokens * 3.0 + rec.output_tokens * 15.0) / 1e6
    assert rec.cost_usd == pytest.approx(want)


def test_streams_in_both_formats_read_the_eventstream(gw: RunningGateway, sim_url: str) -> None:
    before = len(_bedrock_requests(sim_url))
    chunks = list(
        _oa(gw).chat.completions.create(
            model="br", messages=MSG, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finals = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    usage = [c.usage for c in chunks if c.usage]
    assert text and finals == ["stop"]
    assert usage and usage[-1].completion_tokens > 0 and usage[-1].prompt_tokens > 0
    with _an(gw).messages.stream(model="br", max_tokens=64, messages=MSG) as s:
        got = "".join(s.text_stream)
        final = s.get_final_message()
    assert got and final.stop_reason == "end_turn" and final.usage.output_tokens > 0
    paths = [r["path"] for r in _bedrock_requests(sim_url)[before:]]
    assert paths == ["/model/us.anthropic.claude-sonnet-4-5-20250929-v1:0/converse-stream"] * 2


def test_anthropic_create_is_answered_from_converse(gw: RunningGateway) -> None:
    raw = _an(gw).messages.with_raw_response.create(model="br", max_tokens=64, messages=MSG)
    msg = raw.parse()
    assert msg.content[0].type == "text" and msg.content[0].text
    assert msg.stop_reason == "end_turn" and msg.usage.input_tokens > 0
    assert msg.model == MODEL
    rec = _record(gw, raw.headers["x-request-id"])
    assert rec.provider == "br" and rec.output_tokens == msg.usage.output_tokens


def test_tool_calls_round_trip_through_converse_in_both_formats(
    gw: RunningGateway, sim_url: str
) -> None:
    oa = _oa(gw)
    res = oa.chat.completions.create(
        model="br", messages=TOOL_ASK, tools=TOOL_OA, tool_choice="required"
    )
    (call,) = res.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert res.choices[0].finish_reason == "tool_calls"
    before = len(_bedrock_requests(sim_url))
    follow = oa.chat.completions.create(
        model="br",
        tools=TOOL_OA,
        messages=[
            *TOOL_ASK,
            res.choices[0].message.model_dump(exclude_none=True),  # type: ignore[list-item]
            {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21C"},
        ],
    )
    assert follow.choices[0].message.content
    (seen,) = _bedrock_requests(sim_url)[before:]
    result = seen["body"]["messages"][2]["content"][0]["toolResult"]
    assert result["content"] == [{"text": "Sunny, 21C"}]
    assert seen["body"]["messages"][1]["content"][-1]["toolUse"]["name"] == "get_weather"
    with _an(gw).messages.stream(
        model="br", max_tokens=128, messages=TOOL_ASK, tools=TOOL_AN, tool_choice={"type": "any"}
    ) as s:
        final = s.get_final_message()
    uses = [b for b in final.content if b.type == "tool_use"]
    assert uses and uses[0].name == "get_weather" and final.stop_reason == "tool_use"
    assert isinstance(uses[0].input, dict)
    stream = oa.chat.completions.create(
        model="br", messages=TOOL_ASK, tools=TOOL_OA, tool_choice="required", stream=True
    )
    args = "".join(
        (c.choices[0].delta.tool_calls or [])[0].function.arguments or ""  # type: ignore[union-attr]
        for c in stream
        if c.choices and c.choices[0].delta.tool_calls
    )
    assert isinstance(json.loads(args), dict)


@pytest.mark.parametrize(
    ("model", "served"),
    [
        ("br-then-claude", "an"),
        ("claude-then-br", "br"),
        ("br-then-openai", "oa"),
        ("openai-then-br", "br"),
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
    stream = oa.chat.completions.with_raw_response.create(model=model, messages=MSG, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream.parse() if c.choices)
    assert _record(gw, stream.headers["x-request-id"]).provider == served
    with an.messages.stream(model=model, max_tokens=128, messages=TOOL_ASK, tools=TOOL_AN) as s:
        final = s.get_final_message()
    uses = [b for b in final.content if b.type == "tool_use"]
    assert uses and uses[0].name == "get_weather" and final.stop_reason == "tool_use"


def test_throttling_is_a_rate_limit_error_in_each_format(gw: RunningGateway) -> None:
    with pytest.raises(openai.RateLimitError) as oe:
        _oa(gw).chat.completions.create(model="br-throttled", messages=MSG)
    assert oe.value.status_code == 429
    with pytest.raises(anthropic.RateLimitError) as ae:
        _an(gw).messages.create(model="br-throttled", max_tokens=32, messages=MSG)
    assert ae.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]


def test_validation_exception_is_a_400_and_not_failed_over(
    gw: RunningGateway, sim_url: str
) -> None:
    before = len(_bedrock_requests(sim_url))
    with pytest.raises(openai.BadRequestError):
        _oa(gw).chat.completions.create(model="br-invalid", messages=MSG)
    with pytest.raises(anthropic.BadRequestError) as ae:
        _an(gw).messages.create(model="br-invalid", max_tokens=32, messages=MSG)
    assert ae.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert len(_bedrock_requests(sim_url)) - before == 2


def test_service_unavailable_is_overloaded_in_each_format(gw: RunningGateway) -> None:
    with pytest.raises(openai.InternalServerError) as oe:
        _oa(gw).chat.completions.create(model="br-unavailable", messages=MSG)
    # Bedrock's 503 ServiceUnavailableException means what Anthropic's 529 means: the
    # deployment cools down, and the caller is told every deployment is overloaded
    assert oe.value.status_code == 529 and "overloaded" in oe.value.message
    with pytest.raises(anthropic.APIStatusError) as ae:
        _an(gw).messages.create(model="br-unavailable", max_tokens=32, messages=MSG)
    assert ae.value.status_code == 529
    assert ae.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


def test_a_bedrock_stream_cut_midway_is_carried_on_at_anthropic(gw: RunningGateway) -> None:
    raw = _oa(gw).chat.completions.with_raw_response.create(
        model="br-cut-then-claude", messages=MSG, stream=True
    )
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finals = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert text and finals == ["stop"]
    rec = _record(gw, raw.headers["x-request-id"])
    assert rec.provider == "an" and rec.status == 200
    with _an(gw).messages.stream(model="br-cut-then-claude", max_tokens=64, messages=MSG) as s:
        got = "".join(s.text_stream)
        final = s.get_final_message()
    assert got and final.stop_reason == "end_turn"


def test_a_stream_cut_at_anthropic_is_carried_on_at_bedrock(
    gw: RunningGateway, sim_url: str
) -> None:
    """Bedrock as the fallback of a cut stream: the client's message goes on from Converse."""
    before = len(_bedrock_requests(sim_url))
    with _an(gw).messages.stream(model="claude-cut-then-br", max_tokens=64, messages=MSG) as s:
        got = "".join(s.text_stream)
        final = s.get_final_message()
    assert got and final.stop_reason == "end_turn"
    (seen,) = _bedrock_requests(sim_url)[before:]
    assert seen["path"].endswith("/converse-stream")
    # carried on by prefill: the text the client already has is the assistant's last turn
    last = seen["body"]["messages"][-1]
    assert last["role"] == "assistant" and got.startswith(last["content"][0]["text"].rstrip())
    raw = _oa(gw).chat.completions.with_raw_response.create(
        model="claude-cut-then-br", messages=MSG, stream=True
    )
    chunks = list(raw.parse())
    finals = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert finals == ["stop"]
    assert _record(gw, raw.headers["x-request-id"]).provider == "br"


def test_output_guards_read_bedrock_streams(gw: RunningGateway) -> None:
    email = "jane.doe@example.com"
    ask: list[Any] = [{"role": "user", "content": f"[[sim:reply=Write to {email} today.]]"}]
    plain = _oa(gw).chat.completions.create(model="br", messages=ask, stream=True)
    assert email in "".join(c.choices[0].delta.content or "" for c in plain if c.choices)
    headers = {"x-bastion-feature": "guarded"}
    stream = (
        _oa(gw)
        .with_options(default_headers=headers)
        .chat.completions.create(model="br", messages=ask, stream=True)
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text.startswith("Write to") and email not in text


def test_readyz_counts_the_bedrock_provider_configured(gw: RunningGateway) -> None:
    """Its credentials are botocore's to find (``bastion check`` looks): no key env to judge.
    (The gateway as a whole is not ready here: its `anthropic`/`openai` providers have no key.)"""
    try:
        with urllib.request.urlopen(gw.url + "/readyz", timeout=10) as r:
            body = json.loads(r.read())
    except urllib.error.HTTPError as err:
        body = json.loads(err.read())
    providers = body["checks"]["providers"]
    assert providers["br"] == {"kind": "bedrock", "configured": True}
    assert providers["an"]["configured"] is False


def test_responses_api_is_answered_by_converse(gw: RunningGateway, sim_url: str) -> None:
    before = len(_bedrock_requests(sim_url))
    r = _oa(gw).responses.create(model="br", instructions="Be brief.", input="Hello there")
    assert r.output_text and r.usage is not None and r.usage.output_tokens > 0
    with _oa(gw).responses.stream(model="br", input="Stream please") as s:
        final = s.get_final_response()
    assert final.output_text
    seen = _bedrock_requests(sim_url)[before:]
    assert [x["path"].rsplit("/", 1)[-1] for x in seen] == ["converse", "converse-stream"]
    assert seen[0]["body"]["system"] == [{"text": "Be brief."}]

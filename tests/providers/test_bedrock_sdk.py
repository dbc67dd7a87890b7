"""AWS Bedrock behind a real `bastion serve`, reached by the official OpenAI and Anthropic SDKs;
upstream is a separate `bastion sim` process speaking Bedrock's Converse wire and checking every
request's SigV4 signature, so what Bedrock would receive is seen.

Failover runs both ways between Bedrock and Anthropic (in-process simulator as an `anthropic`
provider) and between Bedrock and OpenAI (as an `openai` provider), streams and tool calls
included.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import anthropic
import openai
import pytest
from tests.conftest import RunningGateway
from tests.providers._foreign_sdk_harness import (
    MSG,
    TOOL_AN,
    TOOL_ASK,
    TOOL_OA,
    Suite,
    check_create_seen,
    check_cut_carried_on_at_anthropic,
    check_failover_both_ways,
    check_output_guard,
    check_responses_api,
    dep,
    gateway_fixture,
    record,
    sim_url_fixture,
    text_and_finals,
    upstream_requests,
)
from tests.providers._foreign_sdk_harness import an as _an
from tests.providers._foreign_sdk_harness import oa as _oa

from bastion.providers.sim.bedrock_wire import (
    REGION_HEADER,
    SIM_ACCESS_KEY_ID,
    SIM_SECRET_ACCESS_KEY,
)

MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
REGION = "ap-southeast-2"
SUITE = Suite("br", MODEL)
CONVERSE = "/model/"  # the paths of the Converse requests in the simulator's log
ENV = {
    "AWS_ACCESS_KEY_ID": SIM_ACCESS_KEY_ID,
    "AWS_SECRET_ACCESS_KEY": SIM_SECRET_ACCESS_KEY,
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
}


def _models() -> dict[str, Any]:
    return {
        "br": {"deployments": [dep("br", MODEL)]},
        **SUITE.failover_models(),
        "br-throttled": {"deployments": [dep("br", MODEL, {"x-sim-fault": "status:429"})]},
        "br-invalid": {"deployments": [dep("br", MODEL, {"x-sim-fault": "status:400"})]},
        "br-unavailable": {"deployments": [dep("br", MODEL, {"x-sim-fault": "status:503"})]},
        "claude-cut-then-br": {
            "deployments": [
                dep("an", "claude-sonnet-5", {"x-sim-fault": "cut_after:6"}),
                dep("br", MODEL),
            ]
        },
        "br-cut-then-claude": SUITE.cut_model(6),
    }


def _providers(sim_url: str) -> dict[str, Any]:
    return {"br": {"kind": "bedrock", "region": REGION, "base_url": sim_url}}


sim_url = sim_url_fixture()
gw = gateway_fixture("bedrock", _providers, _models, ENV)


def test_openai_create_reaches_converse_signed_for_the_region_with_usage_and_record(
    gw: RunningGateway, sim_url: str
) -> None:
    ask = [{"role": "system", "content": "Be brief."}, *MSG]
    seen, rec = check_create_seen(gw, sim_url, CONVERSE, "br", ask, max_tokens=50)
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
    # priced as Anthropic's claude-sonnet-4-5 ($3 / $15 per million tokens)
    want = (rec.input_tokens * 3.0 + rec.output_tokens * 15.0) / 1e6
    assert rec.cost_usd == pytest.approx(want)


def test_streams_in_both_formats_read_the_eventstream(gw: RunningGateway, sim_url: str) -> None:
    before = len(upstream_requests(sim_url, CONVERSE))
    chunks = list(
        _oa(gw).chat.completions.create(
            model="br", messages=MSG, stream=True, stream_options={"include_usage": True}
        )
    )
    text, finals = text_and_finals(chunks)
    usage = [c.usage for c in chunks if c.usage]
    assert text and finals == ["stop"]
    assert usage and usage[-1].completion_tokens > 0 and usage[-1].prompt_tokens > 0
    with _an(gw).messages.stream(model="br", max_tokens=64, messages=MSG) as s:
        got = "".join(s.text_stream)
        final = s.get_final_message()
    assert got and final.stop_reason == "end_turn" and final.usage.output_tokens > 0
    paths = [r["path"] for r in upstream_requests(sim_url, CONVERSE)[before:]]
    assert paths == ["/model/us.anthropic.claude-sonnet-4-5-20250929-v1:0/converse-stream"] * 2


def test_anthropic_create_is_answered_from_converse(gw: RunningGateway) -> None:
    raw = _an(gw).messages.with_raw_response.create(model="br", max_tokens=64, messages=MSG)
    msg = raw.parse()
    assert msg.content[0].type == "text" and msg.content[0].text
    assert msg.stop_reason == "end_turn" and msg.usage.input_tokens > 0
    assert msg.model == MODEL
    rec = record(gw, raw.headers["x-request-id"])
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
    before = len(upstream_requests(sim_url, CONVERSE))
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
    (seen,) = upstream_requests(sim_url, CONVERSE)[before:]
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


@pytest.mark.parametrize(("model", "served"), SUITE.failover_cases())
def test_failover_both_ways_streams_and_tool_calls(
    gw: RunningGateway, model: str, served: str
) -> None:
    check_failover_both_ways(gw, model, served)


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
    before = len(upstream_requests(sim_url, CONVERSE))
    with pytest.raises(openai.BadRequestError):
        _oa(gw).chat.completions.create(model="br-invalid", messages=MSG)
    with pytest.raises(anthropic.BadRequestError) as ae:
        _an(gw).messages.create(model="br-invalid", max_tokens=32, messages=MSG)
    assert ae.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert len(upstream_requests(sim_url, CONVERSE)) - before == 2


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
    check_cut_carried_on_at_anthropic(gw, "br-cut-then-claude")


def test_a_stream_cut_at_anthropic_is_carried_on_at_bedrock(
    gw: RunningGateway, sim_url: str
) -> None:
    """Bedrock as the fallback of a cut stream: the client's message goes on from Converse."""
    before = len(upstream_requests(sim_url, CONVERSE))
    with _an(gw).messages.stream(model="claude-cut-then-br", max_tokens=64, messages=MSG) as s:
        got = "".join(s.text_stream)
        final = s.get_final_message()
    assert got and final.stop_reason == "end_turn"
    (seen,) = upstream_requests(sim_url, CONVERSE)[before:]
    assert seen["path"].endswith("/converse-stream")
    # carried on by prefill: the text the client already has is the assistant's last turn
    last = seen["body"]["messages"][-1]
    assert last["role"] == "assistant" and got.startswith(last["content"][0]["text"].rstrip())
    raw = _oa(gw).chat.completions.with_raw_response.create(
        model="claude-cut-then-br", messages=MSG, stream=True
    )
    text, finals = text_and_finals(list(raw.parse()))
    assert text
    assert finals == ["stop"]
    assert record(gw, raw.headers["x-request-id"]).provider == "br"


def test_output_guards_read_bedrock_streams(gw: RunningGateway) -> None:
    check_output_guard(gw, "br")


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
    before = len(upstream_requests(sim_url, CONVERSE))
    check_responses_api(gw, "br")
    seen = upstream_requests(sim_url, CONVERSE)[before:]
    assert [x["path"].rsplit("/", 1)[-1] for x in seen] == ["converse", "converse-stream"]
    assert seen[0]["body"]["system"] == [{"text": "Be brief."}]

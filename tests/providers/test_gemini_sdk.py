"""Google Gemini behind a real `bastion serve`, reached by the official OpenAI and Anthropic SDKs;
upstream is a separate `bastion sim` process speaking Gemini's wire, so what Gemini would
receive (URL, key header, body) is seen.

Failover runs both ways between Gemini and Anthropic (in-process simulator as an `anthropic`
provider) and between Gemini and OpenAI (as an `openai` provider), streams and tool calls
included; one Gemini provider is reached in-process (``sim://``) as well.
"""

from __future__ import annotations

import json
import time
from typing import Any

import anthropic
import openai
import pytest
from tests.conftest import RunningGateway
from tests.providers._foreign_sdk_harness import (
    FAIL,
    GEMINI_KEY_ENV,
    MSG,
    TOOL_AN,
    TOOL_ASK,
    Suite,
    check_anthropic_create_and_stream,
    check_create_seen,
    check_cut_carried_on_at_anthropic,
    check_failover_both_ways,
    check_output_guard,
    check_responses_api,
    dep,
    gateway_fixture,
    gemini_providers,
    record,
    sim_url_fixture,
    text_and_finals,
    tool_oa,
    upstream_requests,
)
from tests.providers._foreign_sdk_harness import an as _an
from tests.providers._foreign_sdk_harness import oa as _oa

KEY = "gemini-test-key-1"
MODEL = "gemini-2.5-flash"
SUITE = Suite("gem", MODEL, claude="claude-5")
GEMINI = "/v1beta/models/"  # the paths of the generate requests in the simulator's log
TOOL_OA = tool_oa(
    {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    }
)


def _models() -> dict[str, Any]:
    return {
        "gem": {"deployments": [dep("gem", MODEL)]},
        "gem-local": {"deployments": [dep("gem-local", MODEL)]},
        "gem3": {"deployments": [dep("gem", "gemini-3-flash")]},
        **SUITE.failover_models(),
        "gem-429": {"deployments": [dep("gem", MODEL, {"x-sim-fault": "status:429"})]},
        "gem-429-once": {
            "deployments": [
                dep("gem", MODEL, {"x-sim-fault": "fail_first:1;status:429;retry_after:1"})
            ]
        },
        "gem-500": {"deployments": [dep("gem", MODEL, FAIL)]},
        "gem-503": {"deployments": [dep("gem", MODEL, {"x-sim-fault": "status:503"})]},
        "gem-long": {"deployments": [dep("gem", MODEL, {"x-sim-fault": "context_length"})]},
        "gem-blocked": {"deployments": [dep("gem", MODEL, {"x-sim-fault": "content_policy"})]},
        "gem-cut-then-claude": SUITE.cut_model(4, claude="c"),
        "claude-cut-then-gem": {
            "deployments": [dep("an", "c", {"x-sim-fault": "cut_after:4"}), dep("gem", MODEL)]
        },
        "gem-error-midway": {"deployments": [dep("gem", MODEL, {"x-sim-fault": "error_after:3"})]},
    }


sim_url = sim_url_fixture()
gw = gateway_fixture("gemini", gemini_providers, _models, {GEMINI_KEY_ENV: KEY})


def test_create_reaches_gemini_with_model_path_and_key_header(
    gw: RunningGateway, sim_url: str
) -> None:
    ask = [{"role": "system", "content": "Be brief."}, *MSG]
    seen, rec = check_create_seen(gw, sim_url, GEMINI, "gem", ask, max_tokens=50)
    assert seen["path"] == f"/v1beta/models/{MODEL}:generateContent"
    assert seen["headers"]["x-goog-api-key"] == KEY
    assert "authorization" not in seen["headers"] and "key=" not in seen["path"]
    body = seen["body"]
    assert set(body) <= {"contents", "systemInstruction", "generationConfig"}
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert body["contents"] == [{"role": "user", "parts": [{"text": MSG[0]["content"]}]}]
    assert body["generationConfig"]["maxOutputTokens"] == 50
    # priced from the built-in table: gemini-2.5-flash, $0.30 in / $2.50 out per million
    want = (rec.input_tokens * 0.3 + rec.output_tokens * 2.5) / 1e6
    assert rec.cost_usd == pytest.approx(want)


def test_responses_api_is_translated_to_gemini(gw: RunningGateway, sim_url: str) -> None:
    before = len(upstream_requests(sim_url, GEMINI))
    check_responses_api(gw, "gem")
    paths = [x["path"] for x in upstream_requests(sim_url, GEMINI)[before:]]
    assert paths == [
        f"/v1beta/models/{MODEL}:generateContent",
        f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse",
    ]


def test_openai_stream_comes_from_stream_generate_content_with_usage(
    gw: RunningGateway, sim_url: str
) -> None:
    before = len(upstream_requests(sim_url, GEMINI))
    raw = _oa(gw).chat.completions.with_raw_response.create(
        model="gem", messages=MSG, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(raw.parse())
    text, finals = text_and_finals(chunks)
    assert text
    assert finals == ["stop"]
    usage = [c.usage for c in chunks if c.usage]
    assert usage and usage[-1].completion_tokens > 0
    (seen,) = upstream_requests(sim_url, GEMINI)[before:]
    assert seen["path"] == f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
    rec = record(gw, raw.headers["x-request-id"])
    assert rec.output_tokens == usage[-1].completion_tokens
    assert rec.input_tokens == usage[-1].prompt_tokens


def test_anthropic_client_gets_gemini_translated_create_and_stream(gw: RunningGateway) -> None:
    check_anthropic_create_and_stream(gw, "gem")


def test_in_process_gemini_simulator_answers_both_formats(gw: RunningGateway) -> None:
    res = _oa(gw).chat.completions.create(model="gem-local", messages=MSG)
    assert res.choices[0].message.content
    with _an(gw).messages.stream(model="gem-local", max_tokens=64, messages=MSG) as s:
        assert "".join(s.text_stream)


def test_openai_tool_call_round_trip_through_gemini(gw: RunningGateway, sim_url: str) -> None:
    oa = _oa(gw)
    first = oa.chat.completions.create(model="gem", messages=TOOL_ASK, tools=TOOL_OA)
    assert first.choices[0].finish_reason == "tool_calls"
    (call,) = first.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    before = len(upstream_requests(sim_url, GEMINI))
    follow = [
        *TOOL_ASK,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "18C and sunny"},
    ]
    second = oa.chat.completions.create(model="gem", messages=follow, tools=TOOL_OA)
    assert second.choices[0].finish_reason == "stop" and second.choices[0].message.content
    (seen,) = upstream_requests(sim_url, GEMINI)[before:]
    model_turn, result_turn = seen["body"]["contents"][1:]
    fc = model_turn["parts"][0]["functionCall"]
    fr = result_turn["parts"][0]["functionResponse"]
    assert model_turn["role"] == "model" and result_turn["role"] == "user"
    assert fc == {"name": "get_weather", "args": {"city": "Paris"}, "id": call.id}
    assert fr == {"name": "get_weather", "response": {"output": "18C and sunny"}, "id": call.id}
    decl = seen["body"]["tools"][0]["functionDeclarations"][0]
    assert decl["parametersJsonSchema"] == TOOL_OA[0]["function"]["parameters"]


def test_anthropic_tool_use_round_trip_through_gemini_stream(gw: RunningGateway) -> None:
    an = _an(gw)
    with an.messages.stream(model="gem", max_tokens=128, messages=TOOL_ASK, tools=TOOL_AN) as s:
        final = s.get_final_message()
    (use,) = [b for b in final.content if b.type == "tool_use"]
    assert use.name == "get_weather" and use.input == {"city": "Paris"}
    assert final.stop_reason == "tool_use"
    follow: list[Any] = [
        *TOOL_ASK,
        {"role": "assistant", "content": [b.model_dump() for b in final.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18C"}],
        },
    ]
    msg = an.messages.create(model="gem", max_tokens=128, messages=follow, tools=TOOL_AN)
    assert msg.stop_reason == "end_turn"
    assert msg.content and msg.content[0].type == "text" and msg.content[0].text


def test_gemini_rate_limit_and_server_errors_read_in_each_format(gw: RunningGateway) -> None:
    with pytest.raises(openai.RateLimitError) as oe:
        _oa(gw).chat.completions.create(model="gem-429", messages=MSG)
    assert oe.value.code == "rate_limit_exceeded"
    with pytest.raises(anthropic.RateLimitError) as ae:
        _an(gw).messages.create(model="gem-429", max_tokens=32, messages=MSG)
    assert ae.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    with pytest.raises(openai.InternalServerError) as se:
        _oa(gw).chat.completions.create(model="gem-500", messages=MSG)
    # the only deployment failed: the gateway's own 502, naming the provider's failure
    assert se.value.status_code == 502 and "HTTP 500" in se.value.message
    with pytest.raises(anthropic.APIStatusError) as ue:
        _an(gw).messages.create(model="gem-503", max_tokens=32, messages=MSG)
    assert ue.value.status_code == 529  # Gemini's UNAVAILABLE is Anthropic's overloaded
    assert ue.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as ce:
        _oa(gw).chat.completions.create(model="gem-long", messages=MSG)
    assert ce.value.code == "context_length_exceeded"
    with pytest.raises(anthropic.BadRequestError) as ca:
        _an(gw).messages.create(model="gem-long", max_tokens=32, messages=MSG)
    assert "prompt is too long" in ca.value.body["error"]["message"]  # type: ignore[index]


def test_blocked_prompt_is_a_content_filter_and_a_refusal(gw: RunningGateway) -> None:
    res = _oa(gw).chat.completions.create(model="gem-blocked", messages=MSG)
    assert res.choices[0].finish_reason == "content_filter"
    msg = _an(gw).messages.create(model="gem-blocked", max_tokens=32, messages=MSG)
    assert msg.stop_reason == "refusal"
    stream = _oa(gw).chat.completions.create(model="gem-blocked", messages=MSG, stream=True)
    assert text_and_finals(list(stream))[1] == ["content_filter"]


def test_gemini_error_mid_stream_reaches_each_sdk_as_an_error(gw: RunningGateway) -> None:
    with pytest.raises(openai.APIError):
        list(_oa(gw).chat.completions.create(model="gem-error-midway", messages=MSG, stream=True))
    with (
        pytest.raises(anthropic.APIStatusError),
        _an(gw).messages.stream(model="gem-error-midway", max_tokens=64, messages=MSG) as s,
    ):
        s.get_final_message()


@pytest.mark.parametrize(("model", "served"), SUITE.failover_cases())
def test_failover_both_ways_streams_and_tool_calls(
    gw: RunningGateway, model: str, served: str
) -> None:
    check_failover_both_ways(gw, model, served, TOOL_OA)


def test_a_gemini_stream_cut_midway_is_carried_on_at_anthropic(gw: RunningGateway) -> None:
    check_cut_carried_on_at_anthropic(gw, "gem-cut-then-claude")


def test_a_stream_cut_elsewhere_is_carried_on_at_gemini(gw: RunningGateway) -> None:
    """The recovery goes the other way: Anthropic's stream is cut, Gemini's restart finishes it
    (a restart keeps the client's text only if the new answer repeats it: a fixed reply)."""
    reply = "The quick brown fox jumps over the lazy dog, again and again and again."
    ask: list[Any] = [{"role": "user", "content": f"[[sim:reply={reply}]]"}]
    raw = _oa(gw).chat.completions.with_raw_response.create(
        model="claude-cut-then-gem", messages=ask, stream=True
    )
    text, finals = text_and_finals(list(raw.parse()))
    assert text == reply and finals == ["stop"]
    rec = record(gw, raw.headers["x-request-id"])
    assert rec.provider == "gem" and rec.status == 200
    with _an(gw).messages.stream(model="claude-cut-then-gem", max_tokens=64, messages=ask) as s:
        got = "".join(s.text_stream)
        final = s.get_final_message()
    assert got == reply and final.stop_reason == "end_turn"


def test_the_retry_delay_gemini_gives_in_its_body_is_honoured(
    gw: RunningGateway, sim_url: str
) -> None:
    """Gemini says when to retry in a RetryInfo detail, not a header: the retry waits for it."""
    before = len(upstream_requests(sim_url, GEMINI))
    started = time.monotonic()
    res = _oa(gw).chat.completions.create(model="gem-429-once", messages=MSG)
    assert res.choices[0].message.content
    assert time.monotonic() - started >= 1.0
    assert (
        len(upstream_requests(sim_url, GEMINI)) - before == 2
    )  # the 429, then the retry that answered


@pytest.mark.parametrize("model", ["gem", "gem3"])
def test_tool_round_trip_on_gemini_3_which_wants_thought_signatures_back(
    gw: RunningGateway, model: str
) -> None:
    """An OpenAI client cannot return Gemini 3's thoughtSignature; the replayed call carries
    the validator-skip value Google documents, so the second turn is not refused."""
    oa = _oa(gw)
    first = oa.chat.completions.create(model=model, messages=TOOL_ASK, tools=TOOL_OA)
    (call,) = first.choices[0].message.tool_calls or []
    follow = [
        *TOOL_ASK,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "18C and sunny"},
    ]
    second = oa.chat.completions.create(model=model, messages=follow, tools=TOOL_OA)
    assert second.choices[0].finish_reason == "stop" and second.choices[0].message.content


def test_n_choices_over_gemini_are_refused_never_one_silently(gw: RunningGateway) -> None:
    for model in ("gem", "gem-then-openai", "openai-then-gem"):
        with pytest.raises(openai.BadRequestError) as err:
            _oa(gw).chat.completions.create(model=model, messages=MSG, n=2)
        assert err.value.param == "n"


def test_count_tokens_and_model_lookup_on_a_gemini_alias(gw: RunningGateway) -> None:
    counted = _an(gw).messages.count_tokens(model="gem", messages=MSG)
    assert counted.input_tokens > 0
    assert _oa(gw).models.retrieve("gem").id == "gem"


def test_output_guards_read_gemini_answers_in_the_clients_format(gw: RunningGateway) -> None:
    """The PII output filter (redact) works on Gemini answers, unary and streamed."""
    check_output_guard(gw, "gem")

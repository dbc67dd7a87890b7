"""Gemini answers that stop on the model's failure (``finishReason`` ``MALFORMED_FUNCTION_CALL``,
``OTHER``, ``UNEXPECTED_TOOL_CALL``, or one Bastion does not know) reached callers as a clean
``stop`` / ``end_turn``. They are now the provider's failure: unary, a 502 in the caller's
format or the fallback deployment's answer; streamed, an error event once text went out, or
the fallback's answer when the failure comes first. The content-filter reasons (``SAFETY``,
``RECITATION``, ``SPII`` …) stay a finish, read as ``content_filter`` / ``refusal``.

Real `bastion serve` + a separate `bastion sim` speaking Gemini's wire (told the finish reason
by ``x-sim-gemini-finish-reason``), reached by the official OpenAI and Anthropic SDKs.
"""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest
from tests.conftest import RunningGateway
from tests.providers._foreign_sdk_harness import (
    GEMINI_KEY_ENV,
    MSG,
    an,
    dep,
    gateway_fixture,
    gemini_providers,
    oa,
    record,
    sim_url_fixture,
    text_and_finals,
    upstream_requests,
)

from bastion.providers.sim.gemini_wire import FINISH_REASON_HEADER

MODEL = "gemini-2.5-flash"
FAILED = ["MALFORMED_FUNCTION_CALL", "OTHER", "UNEXPECTED_TOOL_CALL", "SOMETHING_NEW_2031"]
FILTERED = ["SAFETY", "RECITATION", "SPII"]
# text paced out in chunks 40 ms apart: the first text reaches the caller before the finish
PACED = {"x-sim-chunk-ms": "40"}


def _gem(reason: str, provider: str = "gem", **extra: str) -> dict[str, Any]:
    return dep(provider, MODEL, {FINISH_REASON_HEADER: reason, **extra})


def _models() -> dict[str, Any]:
    models: dict[str, Any] = {}
    for r in FAILED + FILTERED:
        models[r] = {"deployments": [_gem(r, **PACED)]}
        models[r + "-empty"] = {"deployments": [_gem(r + ";empty")]}
        models[r + "-then-openai"] = {"deployments": [_gem(r + ";empty"), dep("oa", "gpt-4.1")]}
        models[r + "-then-claude"] = {
            "deployments": [_gem(r + ";empty"), dep("an", "claude-sonnet-5")]
        }
    models["local-failed"] = {"deployments": [_gem("MALFORMED_FUNCTION_CALL", "gem-local")]}
    models["failed-then-openai"] = {
        "deployments": [_gem("MALFORMED_FUNCTION_CALL"), dep("oa", "gpt-4.1")]
    }
    return models


sim_url = sim_url_fixture()
gw = gateway_fixture("gemfail", gemini_providers, _models, {GEMINI_KEY_ENV: "failed-finish-key"})


@pytest.mark.parametrize("reason", FAILED)
def test_a_failed_gemini_answer_is_a_502_in_each_format(
    gw: RunningGateway, sim_url: str, reason: str
) -> None:
    before = len(upstream_requests(sim_url, "/v1beta/models/"))
    with pytest.raises(openai.InternalServerError) as err:
        oa(gw).chat.completions.with_raw_response.create(model=reason, messages=MSG)
    assert err.value.status_code == 502
    assert record(gw, err.value.response.headers["x-request-id"]).status == 502
    with pytest.raises(anthropic.InternalServerError) as aerr:
        an(gw).messages.create(model=reason + "-empty", max_tokens=64, messages=MSG)
    assert aerr.value.status_code == 502
    assert aerr.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    # Gemini answered both, and said why: the gateway refused to pass it on as an answer
    seen = upstream_requests(sim_url, "/v1beta/models/")[before:]
    assert [s["headers"][FINISH_REASON_HEADER] for s in seen] == [reason, reason + ";empty"]


def test_the_in_process_gemini_simulator_fails_the_same_way(gw: RunningGateway) -> None:
    with pytest.raises(openai.InternalServerError) as err:
        oa(gw).chat.completions.create(model="local-failed", messages=MSG)
    assert err.value.status_code == 502


@pytest.mark.parametrize("reason", FAILED)
def test_a_failed_gemini_stream_ends_in_an_error_after_its_text(
    gw: RunningGateway, reason: str
) -> None:
    chunks: list[Any] = []
    with pytest.raises(openai.APIError) as err:
        for chunk in oa(gw).chat.completions.create(model=reason, messages=MSG, stream=True):
            chunks.append(chunk)
    text, finals = text_and_finals(chunks)
    assert text and finals == []  # the text went out; no finish, clean or otherwise
    assert reason in str(err.value)
    got: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError) as aerr,
        an(gw).messages.stream(model=reason, max_tokens=64, messages=MSG) as s,
    ):
        got.extend(s.text_stream)
    assert "".join(got) and reason in str(aerr.value)


@pytest.mark.parametrize("reason", FAILED)
def test_a_failed_gemini_answer_fails_over_before_any_text(gw: RunningGateway, reason: str) -> None:
    raw = oa(gw).chat.completions.with_raw_response.create(
        model=reason + "-then-openai", messages=MSG
    )
    res = raw.parse()
    assert res.choices[0].finish_reason == "stop" and res.choices[0].message.content
    rec = record(gw, raw.headers["x-request-id"])
    assert rec.provider == "oa" and rec.status == 200
    stream = oa(gw).chat.completions.with_raw_response.create(
        model=reason + "-then-openai", messages=MSG, stream=True
    )
    text, finals = text_and_finals(list(stream.parse()))
    assert text and finals == ["stop"]
    assert record(gw, stream.headers["x-request-id"]).provider == "oa"
    with an(gw).messages.stream(model=reason + "-then-claude", max_tokens=64, messages=MSG) as s:
        got = "".join(s.text_stream)
        final = s.get_final_message()
    assert got and final.stop_reason == "end_turn" and final.model == "claude-sonnet-5"
    msg = an(gw).messages.create(model=reason + "-then-claude", max_tokens=64, messages=MSG)
    assert msg.stop_reason == "end_turn" and msg.model == "claude-sonnet-5"


def test_a_failed_answer_with_text_still_fails_over_when_unary(gw: RunningGateway) -> None:
    """Unary, the text Gemini wrote before failing never reaches the caller: the fallback's
    answer does."""
    res = oa(gw).chat.completions.create(model="failed-then-openai", messages=MSG)
    assert res.model == "gpt-4.1" and res.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("reason", FILTERED)
def test_content_filter_finishes_read_as_content_filter_and_refusal(
    gw: RunningGateway, reason: str
) -> None:
    """Not failures: the provider declined, the same on a retry; no failover either."""
    res = oa(gw).chat.completions.create(model=reason, messages=MSG)
    assert res.choices[0].finish_reason == "content_filter"
    msg = an(gw).messages.create(model=reason, max_tokens=64, messages=MSG)
    assert msg.stop_reason == "refusal"
    text, finals = text_and_finals(
        list(oa(gw).chat.completions.create(model=reason, messages=MSG, stream=True))
    )
    assert text and finals == ["content_filter"]
    with an(gw).messages.stream(model=reason, max_tokens=64, messages=MSG) as s:
        assert s.get_final_message().stop_reason == "refusal"
    kept = oa(gw).chat.completions.with_raw_response.create(
        model=reason + "-then-openai", messages=MSG
    )
    assert kept.parse().choices[0].finish_reason == "content_filter"
    assert record(gw, kept.headers["x-request-id"]).provider == "gem"

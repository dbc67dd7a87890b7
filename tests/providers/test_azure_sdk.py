"""Azure OpenAI behind a real `bastion serve`, reached by the official SDKs; upstream is a
separate `bastion sim` process speaking Azure's wire, so what Azure would receive is seen.

Failover runs both ways between Azure and Anthropic (in-process simulator as an `anthropic`
provider) and between Azure and OpenAI (as an `openai` provider), streams and tool calls
included.
"""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest
from tests.conftest import RunningGateway
from tests.providers._foreign_sdk_harness import (
    MSG,
    Suite,
    check_anthropic_create_and_stream,
    check_create_seen,
    check_cut_carried_on_at_anthropic,
    check_failover_both_ways,
    check_output_guard,
    check_responses_api,
    dep,
    gateway_fixture,
    sim_url_fixture,
    text_and_finals,
    upstream_requests,
)
from tests.providers._foreign_sdk_harness import an as _an
from tests.providers._foreign_sdk_harness import oa as _oa

KEY = "azure-test-key-1"
TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.entra.sig"
SUITE = Suite("az", "gpt-prod")
AZURE = "/openai/"  # the paths of the Azure requests in the simulator's log


def _models() -> dict[str, Any]:
    return {
        "az": {"deployments": [dep("az", "gpt-prod")]},
        **SUITE.failover_models(),
        "az-filtered": {
            "deployments": [
                dep("az", "gpt-prod", {"x-sim-fault": "content_policy"}),
                dep("an", "claude-sonnet-5"),
            ]
        },
        "az-filtered-output": {
            "deployments": [dep("az", "gpt-prod", {"x-sim-azure-filter": "output"})]
        },
        "az-entra": {"deployments": [dep("az-entra", "gpt-entra")]},
        "az-cut-then-claude": SUITE.cut_model(4),
        "az-v1": {"deployments": [dep("az-v1", "gpt-v1")]},
        "az-limited": {
            "deployments": [
                dep("az", "gpt-prod", {"x-sim-fault": "fail_first:1;status:429;retry_after:1"})
            ]
        },
    }


def _providers(sim_url: str) -> dict[str, Any]:
    return {
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
    }


sim_url = sim_url_fixture()
gw = gateway_fixture("azure", _providers, _models, {"AZ_TEST_KEY": KEY, "AZ_TEST_TOKEN": TOKEN})


def test_create_reaches_azure_with_deployment_path_version_and_api_key(
    gw: RunningGateway, sim_url: str
) -> None:
    seen, _ = check_create_seen(gw, sim_url, AZURE, "az", MSG)
    assert seen["path"] == "/openai/deployments/gpt-prod/chat/completions?api-version=2024-10-21"
    assert seen["headers"]["api-key"] == KEY
    assert "authorization" not in seen["headers"]


def test_openai_stream_relays_azure_chunks_with_usage(gw: RunningGateway) -> None:
    chunks = list(
        _oa(gw).chat.completions.create(
            model="az", messages=MSG, stream=True, stream_options={"include_usage": True}
        )
    )
    text, finals = text_and_finals(chunks)
    assert text
    assert finals == ["stop"]
    usage = [c.usage for c in chunks if c.usage]
    assert usage and usage[-1].completion_tokens > 0


def test_anthropic_client_gets_azure_translated_create_and_stream(gw: RunningGateway) -> None:
    check_anthropic_create_and_stream(gw, "az")


@pytest.mark.parametrize(("model", "served"), SUITE.failover_cases())
def test_failover_both_ways_streams_and_tool_calls(
    gw: RunningGateway, model: str, served: str
) -> None:
    check_failover_both_ways(gw, model, served)


def test_content_filter_is_a_policy_error_in_each_format_and_not_retried(
    gw: RunningGateway, sim_url: str
) -> None:
    before = len(upstream_requests(sim_url, AZURE))
    with pytest.raises(openai.BadRequestError) as oe:
        _oa(gw).chat.completions.create(model="az-filtered", messages=MSG)
    assert oe.value.code == "content_filter"
    with pytest.raises(anthropic.BadRequestError) as ae:
        _an(gw).messages.create(model="az-filtered", max_tokens=32, messages=MSG)
    assert ae.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "content management policy" in ae.value.body["error"]["message"]  # type: ignore[index]
    # one upstream request each: no retry, and no failover to the Anthropic deployment
    assert len(upstream_requests(sim_url, AZURE)) - before == 2


def test_filtered_output_is_content_filter_and_refusal(gw: RunningGateway) -> None:
    res = _oa(gw).chat.completions.create(model="az-filtered-output", messages=MSG)
    assert res.choices[0].finish_reason == "content_filter"
    msg = _an(gw).messages.create(model="az-filtered-output", max_tokens=64, messages=MSG)
    assert msg.stop_reason == "refusal"
    stream = _oa(gw).chat.completions.create(model="az-filtered-output", messages=MSG, stream=True)
    assert text_and_finals(list(stream))[1] == ["content_filter"]


def test_entra_token_is_a_bearer_header_and_never_an_api_key(
    gw: RunningGateway, sim_url: str
) -> None:
    before = len(upstream_requests(sim_url, AZURE))
    res = _oa(gw).chat.completions.create(model="az-entra", messages=MSG)
    assert res.choices[0].message.content
    (seen,) = upstream_requests(sim_url, AZURE)[before:]
    assert seen["path"] == (
        "/openai/deployments/gpt-entra/chat/completions?api-version=2025-01-01-preview"
    )
    assert seen["headers"]["authorization"] == "Bearer " + TOKEN
    assert "api-key" not in seen["headers"]


def test_v1_surface_names_the_deployment_in_the_body(gw: RunningGateway, sim_url: str) -> None:
    before = len(upstream_requests(sim_url, AZURE))
    res = _oa(gw).chat.completions.create(model="az-v1", messages=MSG)
    assert res.choices[0].message.content
    (seen,) = upstream_requests(sim_url, AZURE)[before:]
    assert seen["path"] == "/openai/v1/chat/completions"
    assert seen["body"]["model"] == "gpt-v1" and seen["headers"]["api-key"] == KEY


def test_azure_429_is_retried_after_its_retry_after(gw: RunningGateway, sim_url: str) -> None:
    before = len(upstream_requests(sim_url, AZURE))
    res = _oa(gw).chat.completions.create(model="az-limited", messages=MSG)
    assert res.choices[0].message.content
    assert (
        len(upstream_requests(sim_url, AZURE)) - before == 2
    )  # the 429, then the retry that answered


def test_output_guards_read_azure_streams_past_the_empty_choices_chunk(
    gw: RunningGateway,
) -> None:
    """The PII output filter (redact) sees Azure's opening chunk first and still works."""
    check_output_guard(gw, "az")


def test_responses_api_is_translated_to_azure_chat(gw: RunningGateway, sim_url: str) -> None:
    before = len(upstream_requests(sim_url, AZURE))
    check_responses_api(gw, "az")
    assert len(upstream_requests(sim_url, AZURE)) - before == 2


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
    check_cut_carried_on_at_anthropic(gw, "az-cut-then-claude")

"""Attack (issue #14): Converse answers that stop on a failure (``stopReason``
``malformed_tool_use`` or ``malformed_model_output``) reached callers as a clean finish
(``end_turn`` / ``stop``), unary and streamed, and were never failed over. They are now the
provider's failure: a 502 in the caller's format, or the fallback deployment's answer when
there is one; a stream (whose stop reason comes after its text) ends with an error event.

Real `bastion serve` + a separate `bastion sim` speaking Converse, reached by the official SDKs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from tests.conftest import RunningGateway, start_gateway, stop, write_config
from tests.cost._cost_support import sim_process

from bastion.providers.sim.bedrock_wire import (
    SIM_ACCESS_KEY_ID,
    SIM_SECRET_ACCESS_KEY,
    STOP_REASON_HEADER,
)

MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
MSG: list[Any] = [{"role": "user", "content": "Say hello to the team"}]
REASONS = ["malformed_tool_use", "malformed_model_output"]


def _dep(reason: str) -> dict[str, Any]:
    return {"provider": "br", "model": MODEL, "headers": {STOP_REASON_HEADER: reason}}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    models: dict[str, Any] = {"br-ok": {"deployments": [_dep("end_turn")]}}
    for reason in REASONS:
        models[reason] = {"deployments": [_dep(reason)]}
        models[reason + "-then-openai"] = {
            "deployments": [_dep(reason), {"provider": "oa", "model": "gpt-4.1"}]
        }
    with sim_process() as sim_url:
        cfg = write_config(
            tmp_path_factory.mktemp("atk14brstop"),
            providers={
                "br": {"kind": "bedrock", "region": "us-east-1", "base_url": sim_url},
                "oa": {"kind": "openai", "base_url": "sim://openai/v1"},
            },
            models=models,
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


@pytest.mark.parametrize("reason", REASONS)
def test_a_failed_converse_answer_is_an_error_never_a_clean_finish(
    gw: RunningGateway, reason: str
) -> None:
    oa = openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.key, max_retries=0)
    an = anthropic.Anthropic(base_url=gw.url, api_key=gw.key, max_retries=0)
    with pytest.raises(openai.APIStatusError) as err:
        oa.chat.completions.create(model=reason, messages=MSG)
    assert err.value.status_code == 502
    with pytest.raises(anthropic.APIStatusError) as aerr:
        an.messages.create(model=reason, max_tokens=64, messages=MSG)
    assert aerr.value.status_code == 502
    assert aerr.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    # streamed: refused before the first byte, or ended by an error event; never "stop"
    finishes: list[str] = []
    with pytest.raises((openai.APIError, openai.APIStatusError)):
        for chunk in oa.chat.completions.create(model=reason, messages=MSG, stream=True):
            finishes += [c.finish_reason for c in chunk.choices if c.finish_reason]
    assert "stop" not in finishes
    with (
        pytest.raises((anthropic.APIError, anthropic.APIStatusError)),
        an.messages.stream(model=reason, max_tokens=64, messages=MSG) as s,
    ):
        s.get_final_message()


@pytest.mark.parametrize("reason", REASONS)
def test_a_failed_converse_answer_fails_over(gw: RunningGateway, reason: str) -> None:
    oa = openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.key, max_retries=0)
    res = oa.chat.completions.create(model=reason + "-then-openai", messages=MSG)
    assert res.model == "gpt-4.1" and res.choices[0].finish_reason == "stop"
    # streamed: if the failed stop reason arrives before any text went out (the whole short
    # answer can come in one read on a busy box), the call fails over and the fallback answers;
    # once text went out, the stream ends in an error. Never a clean finish from Bedrock.
    finishes: list[str] = []
    models: set[str] = set()
    try:
        for chunk in oa.chat.completions.create(
            model=reason + "-then-openai", messages=MSG, stream=True
        ):
            models.add(chunk.model)
            finishes += [c.finish_reason for c in chunk.choices if c.finish_reason]
    except openai.APIError as e:
        assert reason in str(e)
        assert finishes == []
    else:
        assert models == {"gpt-4.1"} and finishes == ["stop"]


def test_a_normal_stop_reason_still_answers(gw: RunningGateway) -> None:
    oa = openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.key, max_retries=0)
    res = oa.chat.completions.create(model="br-ok", messages=MSG)
    assert res.choices[0].finish_reason == "stop" and res.choices[0].message.content

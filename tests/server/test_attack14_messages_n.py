"""Attack (issue #14): ``n: 2`` on /v1/messages routed to an OpenAI deployment was answered 200
with one message (a Messages answer holds one; ``n`` was dropped in translation), while the same
request to an Anthropic deployment was refused: never one choice silently. It is now a 400
naming ``n`` in Anthropic's format whatever the deployment; chat completions callers still get
n choices from OpenAI deployments.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.conftest import RunningGateway, start_gateway, stop, write_config

MSG: list[Any] = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    cfg = write_config(
        tmp_path_factory.mktemp("atk14n"),
        providers={"oa": {"kind": "openai", "base_url": "sim://openai/v1"}},
        models={"gpt": {"deployments": [{"provider": "oa", "model": "gpt-4.1"}]}},
    )
    g = start_gateway(cfg)
    yield g
    stop(g.proc)


def test_messages_with_n_over_an_openai_deployment_is_a_400(gw: RunningGateway) -> None:
    an = anthropic.Anthropic(base_url=gw.url, api_key=gw.key, max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as err:
        an.messages.create(model="gpt", max_tokens=20, messages=MSG, extra_body={"n": 2})
    assert err.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert err.value.body["error"]["message"].startswith("n: 2 choices")  # type: ignore[index]
    ok = an.messages.create(model="gpt", max_tokens=20, messages=MSG, extra_body={"n": 1})
    assert ok.content


def test_chat_completions_with_n_still_go_to_openai_deployments(gw: RunningGateway) -> None:
    oa = openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.key, max_retries=0)
    res = oa.chat.completions.create(model="gpt", messages=MSG, n=2)  # not refused
    assert res.choices  # (the simulator answers one choice whatever n; OpenAI answers n)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(2, 64), stream=st.booleans())
def test_any_n_above_1_on_messages_is_refused(gw: RunningGateway, n: int, stream: bool) -> None:
    an = anthropic.Anthropic(base_url=gw.url, api_key=gw.key, max_retries=0)
    with pytest.raises(anthropic.BadRequestError):
        an.messages.create(
            model="gpt", max_tokens=20, messages=MSG, stream=stream, extra_body={"n": n}
        )

"""The smaller endpoints the SDKs reach for: a model by id in each format's shape, and token
counting (the provider's count where it has one, a marked estimate elsewhere)."""

from __future__ import annotations

import anthropic
import httpx2 as httpx
import openai
import pytest
from tests.conftest import RunningGateway

MSG: list[dict[str, str]] = [{"role": "user", "content": "How many tokens is this sentence?"}]


def test_models_retrieve_answers_in_each_sdks_shape(gateway_proc: RunningGateway) -> None:
    oc = openai.OpenAI(base_url=gateway_proc.url + "/v1", api_key=gateway_proc.key, max_retries=0)
    ac = anthropic.Anthropic(base_url=gateway_proc.url, api_key=gateway_proc.key, max_retries=0)
    name = oc.models.list().data[0].id
    m = oc.models.retrieve(name)
    assert m.id == name and m.object == "model"
    am = ac.models.retrieve(name)
    assert am.id == name and am.type == "model"
    with pytest.raises(openai.NotFoundError):
        oc.models.retrieve("no-such-model")
    with pytest.raises(anthropic.NotFoundError):
        ac.models.retrieve("no-such-model")


def test_models_retrieve_needs_a_key(gateway_proc: RunningGateway) -> None:
    r = httpx.get(gateway_proc.url + "/v1/models/anything")
    assert r.status_code == 401


def test_count_tokens_is_an_estimate_marked_as_such_off_anthropic(
    gateway_proc: RunningGateway,
) -> None:
    ac = anthropic.Anthropic(base_url=gateway_proc.url, api_key=gateway_proc.key, max_retries=0)
    raw = ac.messages.with_raw_response.count_tokens(model="claude-sonnet-5", messages=MSG)  # type: ignore[arg-type]
    assert raw.headers["x-bastion-token-count"] == "estimate"
    short = raw.parse().input_tokens
    longer = ac.messages.count_tokens(
        model="claude-sonnet-5",
        messages=[{"role": "user", "content": MSG[0]["content"] * 20}],  # type: ignore[list-item]
    ).input_tokens
    assert 0 < short < longer
    with pytest.raises(anthropic.NotFoundError):
        ac.messages.count_tokens(model="no-such-model", messages=MSG)  # type: ignore[arg-type]
    with pytest.raises(anthropic.BadRequestError):
        ac.messages.count_tokens(model="claude-sonnet-5", messages="nope")  # type: ignore[arg-type]


async def test_count_tokens_is_the_providers_own_count_on_anthropic(tmp_path: object) -> None:
    import json
    from pathlib import Path

    from tests.cost._cost_support import inproc_config

    from bastion.count_tokens import count_tokens
    from bastion.gateway import Gateway

    cfg = inproc_config(
        Path(str(tmp_path)),
        providers={"asim": {"kind": "anthropic", "base_url": "sim://local"}},
        models={"c": {"deployments": [{"provider": "asim", "model": "claude-sonnet-5"}]}},
    )
    async with Gateway(cfg) as gw:
        raw = json.dumps({"model": "c", "messages": MSG}).encode()
        status, headers, body = await count_tokens(gw.router, raw, {})
        assert status == 200 and "x-bastion-token-count" not in headers
        assert json.loads(body)["input_tokens"] > 0
        (sent,) = gw.simulator.requests
        assert sent.path.endswith("/v1/messages/count_tokens")
        assert sent.body["model"] == "claude-sonnet-5"  # the deployment's model, not the alias

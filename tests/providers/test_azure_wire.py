"""Azure OpenAI: the URL and credential Bastion sends, and the simulator's Azure fake
(deployment routes, api-version, api-key / Entra token, content filter, the empty-choices chunk)."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.conftest import BIN, start_gateway, stop, write_config
from tests.cost._cost_support import inproc_config
from tests.providers.conftest import StartSim
from yarl import URL

from bastion.config import ProviderConfig
from bastion.errors import InvalidRequest
from bastion.gateway import Gateway
from bastion.observability.tracing import Tracing
from bastion.providers.adapters import Endpoint, endpoint_formats
from bastion.providers.azure import chat_url, resource_base
from bastion.providers.base import Format
from bastion.providers.sim import Simulator
from bastion.providers.sim.transport import SimTransport

MSG = [{"role": "user", "content": "Say hello"}]


def _endpoint(base: str, credential: str | None) -> Endpoint:
    return Endpoint(
        name="az",
        kind="azure-openai",
        formats=endpoint_formats("azure-openai"),
        base_url=base,
        api_key=credential,
        headers={},
    )


def _send_body(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": MSG, **extra}


async def _call(
    sim: Simulator,
    ep: Endpoint,
    body: dict[str, Any],
    *,
    stream: bool = False,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    req = ep.build(body, Format.OPENAI, stream=stream, extra_headers=headers or {}, passthrough={})
    resp = await SimTransport(sim).send(req, timeout=10)
    return resp.status, dict(resp.headers), await resp.read()


def test_config_resolves_the_resource_root_with_its_api_version() -> None:
    p = ProviderConfig(
        kind="azure-openai",
        base_url="https://r.openai.azure.com/",
        api_version="2024-06-01",
        api_key_env="K",
    )
    assert p.resolved_base_url() == "https://r.openai.azure.com/openai?api-version=2024-06-01"
    v1 = ProviderConfig(
        kind="azure-openai", base_url="https://r.openai.azure.com", api_version="v1", token_env="T"
    )
    assert v1.resolved_base_url() == "https://r.openai.azure.com/openai/v1"
    with pytest.raises(ValueError, match="base_url"):
        ProviderConfig(kind="azure-openai", api_key_env="K")
    with pytest.raises(ValueError, match="api_key_env"):
        ProviderConfig(kind="azure-openai", base_url="https://r")
    with pytest.raises(ValueError, match="not both"):
        ProviderConfig(kind="azure-openai", base_url="https://r", api_key_env="A", token_env="B")
    with pytest.raises(ValueError, match="only an azure-openai"):
        ProviderConfig(kind="openai", api_version="2024-06-01")


def test_entra_token_goes_as_bearer_and_key_as_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZ_TOKEN", "eyJ.tok")
    monkeypatch.setenv("AZ_KEY", "k123")
    tok = ProviderConfig(kind="azure-openai", base_url="https://r", token_env="AZ_TOKEN")
    key = ProviderConfig(kind="azure-openai", base_url="https://r", api_key_env="AZ_KEY")
    for cfg, want, absent in ((tok, "authorization", "api-key"), (key, "api-key", "authorization")):
        ep = _endpoint(cfg.resolved_base_url(), cfg.api_key())
        req = ep.build(
            _send_body("dep"), Format.OPENAI, stream=False, extra_headers={}, passthrough={}
        )
        assert absent not in req.headers
        assert req.headers[want] == ("Bearer eyJ.tok" if want == "authorization" else "k123")
        assert req.url == "https://r/openai/deployments/dep/chat/completions?api-version=2024-10-21"


# names a URL parser treats specially, beside any text at all
_URLISH = st.text(alphabet="./?#%&=+;: \\ab2eE", min_size=1, max_size=12)
_NAMES = st.one_of(
    st.sampled_from([".", "..", "../..", "%2e%2e", "a/../b"]),
    _URLISH,
    st.text(min_size=1, max_size=40),
)


@settings(max_examples=300, deadline=None)
@given(deployment=_NAMES, version=st.one_of(_URLISH, st.text(min_size=1, max_size=30)))
def test_any_deployment_and_version_stay_one_segment_and_one_query_value(
    deployment: str, version: str
) -> None:
    """What aiohttp parses (yarl) is exactly the deployment segment and the one api-version."""
    base = resource_base("https://r.openai.azure.com", version)
    if version == "v1":
        return  # the v1 surface has neither
    try:
        url = URL(chat_url(base, deployment))
    except InvalidRequest:
        assert deployment in (".", "..")
        return
    assert url.host == "r.openai.azure.com"
    assert url.raw_parts[1:3] == ("openai", "deployments")
    assert url.parts[3] == deployment
    assert url.parts[4:] == ("chat", "completions") and len(url.parts) == 6
    assert list(url.query.items()) == [("api-version", version)]


async def test_request_reaches_the_fake_with_path_query_and_api_key() -> None:
    sim = Simulator(api_key="right")
    ep = _endpoint("sim://az/openai?api-version=2024-10-21", "right")
    status, headers, body = await _call(sim, ep, _send_body("my-gpt"))
    assert status == 200, body
    (seen,) = sim.requests
    assert seen.path == "/openai/deployments/my-gpt/chat/completions?api-version=2024-10-21"
    assert seen.headers["api-key"] == "right" and "authorization" not in seen.headers
    obj = orjson.loads(body)
    assert obj["prompt_filter_results"][0]["content_filter_results"]["hate"]["filtered"] is False
    assert obj["choices"][0]["content_filter_results"]["violence"]["severity"] == "safe"
    assert obj["usage"]["prompt_tokens"] > 0 and obj["usage"]["completion_tokens"] > 0
    assert "apim-request-id" in headers and not any(k.startswith("openai-") for k in headers)


async def test_fake_refuses_a_wrong_key_a_missing_key_and_a_missing_version() -> None:
    sim = Simulator(api_key="right")
    wrong = await _call(
        sim, _endpoint("sim://az/openai?api-version=2024-10-21", "nope"), _send_body("d")
    )
    assert wrong[0] == 401 and orjson.loads(wrong[2])["error"]["code"] == "401"
    missing = await _call(
        sim, _endpoint("sim://az/openai?api-version=2024-10-21", None), _send_body("d")
    )
    assert missing[0] == 401
    bearer = await _call(
        sim, _endpoint("sim://az/openai?api-version=2024-10-21", "Bearer right"), _send_body("d")
    )
    assert bearer[0] == 200
    no_version = await _call(sim, _endpoint("sim://az/openai", "right"), _send_body("d"))
    assert (
        no_version[0] == 404
        and orjson.loads(no_version[2])["error"]["message"] == "Resource not found"
    )
    bad_version = await _call(
        sim, _endpoint("sim://az/openai?api-version=latest", "right"), _send_body("d")
    )
    assert bad_version[0] == 404
    v1 = await _call(sim, _endpoint("sim://az/openai/v1", "right"), _send_body("d"))
    assert v1[0] == 200 and sim.requests[-1].path == "/openai/v1/chat/completions"


async def test_content_filter_is_azures_400_and_a_filtered_output_its_finish_reason() -> None:
    sim = Simulator()
    ep = _endpoint("sim://az/openai?api-version=2024-10-21", "k")
    status, _, body = await _call(
        sim, ep, _send_body("d"), headers={"x-sim-fault": "content_policy"}
    )
    err = orjson.loads(body)["error"]
    assert status == 400 and err["code"] == "content_filter"
    assert err["innererror"]["code"] == "ResponsibleAIPolicyViolation"
    assert err["innererror"]["content_filter_result"]["violence"]["filtered"] is True
    status, _, body = await _call(
        sim, ep, _send_body("d"), headers={"x-sim-azure-filter": "output"}
    )
    assert orjson.loads(body)["choices"][0]["finish_reason"] == "content_filter"


async def test_stream_opens_with_an_empty_choices_chunk_of_prompt_filter_results() -> None:
    sim = Simulator()
    ep = _endpoint("sim://az/openai?api-version=2024-10-21", "k")
    body = _send_body("d", stream=True, stream_options={"include_usage": True})
    status, _, raw = await _call(sim, ep, body, stream=True)
    assert status == 200
    events = [ln[6:] for ln in raw.decode().split("\n") if ln.startswith("data: ")]
    first = orjson.loads(events[0])
    assert first["choices"] == [] and first["prompt_filter_results"][0]["prompt_index"] == 0
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(e) for e in events[1:-1]]
    assert any(c.get("usage") for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


@settings(max_examples=60, deadline=None)
@given(deployment=_NAMES.filter(lambda d: d not in (".", "..")))
async def test_fake_sees_the_deployment_bastion_named(deployment: str) -> None:
    """Through the in-process transport the fake decodes exactly the name that was encoded."""
    sim = Simulator()
    ep = _endpoint("sim://az/openai?api-version=2024-10-21", "k")
    status, _, body = await _call(sim, ep, _send_body(deployment))
    assert status == 200, body
    assert sim.requests[-1].model == deployment


async def test_a_rejected_azure_key_fails_over_and_alone_is_a_502_naming_upstream_auth(
    start_sim: StartSim, tmp_path: Path
) -> None:
    """Over HTTP: the fake holds the right key, Bastion sends a wrong one. The caller's own key
    is fine, so the caller gets a gateway error (as for every provider), not a 401."""
    up = await start_sim(api_key="the-right-key")
    cfg = write_config(
        tmp_path,
        providers={
            "az": {"kind": "azure-openai", "base_url": up.url, "api_key_env": "AZ_WRONG"},
            "an": {"kind": "anthropic", "base_url": "sim://anthropic"},
        },
        models={
            "az": {"deployments": [{"provider": "az", "model": "gpt-prod"}]},
            "az-then-claude": {
                "deployments": [
                    {"provider": "az", "model": "gpt-prod"},
                    {"provider": "an", "model": "claude-sonnet-5"},
                ]
            },
        },
        reliability={"retry": {"attempts_per_deployment": 1}, "breaker": {"enabled": False}},
    )
    gw = await asyncio.to_thread(start_gateway, cfg, env={"AZ_WRONG": "a-wrong-key"})
    try:
        c = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=gw.key, max_retries=0)
        res = await c.chat.completions.create(model="az-then-claude", messages=MSG)  # type: ignore[arg-type]
        assert res.choices[0].message.content
        with pytest.raises(openai.APIStatusError) as err:
            await c.chat.completions.create(model="az", messages=MSG)  # type: ignore[arg-type]
        assert err.value.status_code == 502
        assert "auth, HTTP 401" in err.value.message
        assert [r.headers.get("api-key") for r in up.sim.requests] == ["a-wrong-key"] * 2
    finally:
        await asyncio.to_thread(stop, gw.proc)


def test_spans_name_azure_by_its_genai_provider_value() -> None:
    t = Tracing(provider_kinds={"az": "azure-openai", "mine": "openai-compatible"})
    try:
        assert t.provider_name("az") == "azure.ai.openai"
        assert t.provider_name("mine") == "mine"  # no well-known value: the endpoint's name
    finally:
        t.provider.shutdown()


async def test_an_unknown_deployment_is_azures_deployment_not_found() -> None:
    sim = Simulator(reject_unknown_models=True)
    ep = _endpoint("sim://az/openai?api-version=2024-10-21", "k")
    status, _, body = await _call(sim, ep, _send_body("no-such-deployment"))
    assert status == 404
    assert orjson.loads(body)["error"]["code"] == "DeploymentNotFound"
    assert (await _call(sim, ep, _send_body("gpt-4.1")))[0] == 200


@pytest.mark.parametrize(("token", "says"), [(None, "is unset"), ("eyJ.t", "is set")])
def test_check_judges_an_entra_token_env_like_a_key(
    tmp_path: Path, token: str | None, says: str
) -> None:
    cfg = write_config(
        tmp_path,
        providers={
            "az": {"kind": "azure-openai", "base_url": "https://r.example", "token_env": "AZ_TOK"}
        },
        models={"m": {"deployments": [{"provider": "az", "model": "dep"}]}},
    )
    env = {k: v for k, v in os.environ.items() if k != "AZ_TOK"}
    if token is not None:
        env["AZ_TOK"] = token
    out = subprocess.run(
        [str(BIN / "bastion"), "check", "--json", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    ).stdout
    assert f"provider az: $AZ_TOK {says}" in out


async def test_a_simulated_azure_provider_answers_the_library_in_both_formats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``base_url: sim://...`` keeps Azure in-process: no key to a real endpoint, no socket."""
    cfg = inproc_config(
        tmp_path,
        providers={"az": {"kind": "azure-openai", "base_url": "sim://az", "api_key_env": "AZ_K"}},
        models={"m": {"deployments": [{"provider": "az", "model": "gpt-4.1"}]}},
    )
    monkeypatch.setenv("AZ_K", "k")
    async with Gateway(cfg) as gw:
        msg = await gw.messages({"model": "m", "max_tokens": 50, "messages": MSG})
        assert msg["content"][0]["text"]
        chunks = [c async for c in gw.stream_chat_completions({"model": "m", "messages": MSG})]
        assert chunks[0]["choices"] == [] and "prompt_filter_results" in chunks[0]
        assert "".join(
            c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]
        )
        (first, second) = gw.simulator.requests
        assert first.path.startswith("/openai/deployments/gpt-4.1/chat/completions?")
        assert second.headers["api-key"] == "k"

"""Responses calls served natively by an ``openai`` deployment, with every guard, through the
official SDK against a real `bastion serve` whose provider is the simulator over HTTP (its own
`bastion sim` process, which records what reached it)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import openai
import pytest
from tests.conftest import (
    BIN,
    RunningGateway,
    free_port,
    start_gateway,
    stop,
    wait_port,
    write_config,
)

from bastion.store import open_store
from bastion.store.models import CallRecord

EMAIL = "jane.doe@example.com"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "bastion"), "sim", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, sim_url: str) -> Iterator[RunningGateway]:
    tmp = tmp_path_factory.mktemp("responses_native")
    providers = {
        "oai": {"kind": "openai", "base_url": sim_url + "/v1", "api_key_env": "R_NATIVE_KEY"},
        "anth": {"kind": "anthropic", "base_url": sim_url, "api_key_env": "R_NATIVE_KEY"},
    }
    models = {
        "gpt-native": {"deployments": [{"provider": "oai", "model": "gpt-4.1"}]},
        "gpt-recovers": {
            "deployments": [
                {"provider": "oai", "model": "gpt-4.1", "headers": {"x-sim-fault": "cut_after:4"}},
                {"provider": "oai", "model": "gpt-4.1-mini"},
            ]
        },
        "gpt-falls-over": {
            "deployments": [
                {"provider": "oai", "model": "gpt-4.1", "headers": {"x-sim-fault": "status:500"}},
                {"provider": "anth", "model": "claude-sonnet-5"},
            ]
        },
    }
    features = {
        "default": {"pii_output": "off"},
        "broke": {"daily_budget_usd": 0.0},
        "tight": {"daily_budget_usd": 0.01},
        "capped": {"max_tokens_limit": 50, "max_tokens_default": 20},
        "redact": {"pii_output": "redact"},
        "scrub_in": {"pii_provider": True, "pii_output": "off"},
    }
    cfg = write_config(tmp, providers=providers, models=models, features=features)
    g = start_gateway(cfg, env={"R_NATIVE_KEY": "sk-sim"})
    yield g
    stop(g.proc)


@pytest.fixture
def client(gw: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.key, max_retries=0)


def _feature(name: str) -> dict[str, Any]:
    return {"extra_headers": {"x-bastion-feature": name}}


def _upstream(sim_url: str, marker: str) -> list[dict[str, Any]]:
    """What reached the provider for requests whose body mentions ``marker``, oldest first."""
    seen = httpx.get(sim_url + "/_sim/requests").json()
    return [r for r in seen if marker in json.dumps(r["body"])]


def _record(gw: RunningGateway, resp_id: str) -> CallRecord:
    url = f"sqlite:///{gw.config_path.parent / 'bastion.db'}"
    request_id = "req_" + resp_id.removeprefix("resp_")

    async def find() -> CallRecord | None:
        async with open_store(url) as store:
            recs = await store.recent_calls(200)
        return next((r for r in recs if r.request_id == request_id), None)

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rec = asyncio.run(find())
        if rec is not None:
            return rec
        time.sleep(0.1)
    raise AssertionError(f"no record for {request_id}")


def _mark() -> str:
    return "m" + uuid.uuid4().hex[:10]


def test_create_goes_upstream_as_a_responses_request_with_usage_in_the_record(
    client: openai.OpenAI, gw: RunningGateway, sim_url: str
) -> None:
    m = _mark()
    r = client.responses.create(
        model="gpt-native",
        instructions="Be brief.",
        input=f"Hello {m}",
        max_output_tokens=200,
        metadata={"ticket": "t-1"},
    )
    assert r.status == "completed" and r.output_text and r.id.startswith("resp_")
    [up] = _upstream(sim_url, m)
    assert up["path"] == "/v1/responses" and up["headers"]["authorization"] == "Bearer sk-sim"
    body = up["body"]
    assert "messages" not in body and body["model"] == "gpt-4.1"
    assert body["instructions"] == "Be brief." and body["max_output_tokens"] == 200
    assert body["input"] == [{"type": "message", "role": "user", "content": f"Hello {m}"}]
    assert body["metadata"] == {"ticket": "t-1"} and body["store"] is False
    u = r.usage
    assert u is not None and u.input_tokens > 0 and u.output_tokens > 0
    rec = _record(gw, r.id)
    assert rec.status == 200 and rec.provider == "oai" and rec.output_text == r.output_text
    assert (rec.input_tokens, rec.output_tokens) == (u.input_tokens, u.output_tokens)
    assert rec.cost_usd > 0


def test_stream_goes_upstream_as_a_responses_stream(
    client: openai.OpenAI, gw: RunningGateway, sim_url: str
) -> None:
    m = _mark()
    with client.responses.stream(model="gpt-native", input=f"Stream {m}") as s:
        events = list(s)
        final = s.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == final.output_text and len(deltas) > 10
    [up] = _upstream(sim_url, m)
    assert up["path"] == "/v1/responses" and up["body"]["stream"] is True
    assert "stream_options" not in up["body"]
    assert final.usage is not None
    rec = _record(gw, final.id)
    assert rec.output_tokens == final.usage.output_tokens > 0 and rec.cost_usd > 0


def test_function_calls_round_trip_as_items(client: openai.OpenAI, sim_url: str) -> None:
    m = _mark()
    first = client.responses.create(
        model="gpt-native",
        input=f"Weather in Paris? {m}",
        tools=[WEATHER],  # type: ignore[list-item]
    )
    [call] = first.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments)["city"]
    with client.responses.stream(
        model="gpt-native",
        tools=[WEATHER],  # type: ignore[list-item]
        input=[
            {"role": "user", "content": f"Weather in Paris? {m}"},
            call.model_dump(exclude_none=True),  # type: ignore[list-item]
            {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"},
        ],
    ) as s:
        list(s)
        second = s.get_final_response()
    assert "Sunny, 21 C" in second.output_text
    ups = _upstream(sim_url, m)
    assert [u["path"] for u in ups] == ["/v1/responses"] * 2
    assert ups[0]["body"]["tools"][0]["name"] == "get_weather"
    items = ups[1]["body"]["input"]
    assert [i["type"] for i in items] == ["message", "function_call", "function_call_output"]
    assert items[1]["call_id"] == items[2]["call_id"] == call.call_id
    assert items[1]["arguments"] == call.arguments and items[2]["output"] == "Sunny, 21 C"


def test_pii_is_scrubbed_before_the_provider_and_in_the_answer(
    client: openai.OpenAI, gw: RunningGateway, sim_url: str
) -> None:
    m = _mark()
    r = client.responses.create(
        model="gpt-native",
        input=[
            {"role": "user", "content": f"Mail {EMAIL} about {m}"},
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": f"By {EMAIL}"},
        ],
        tools=[WEATHER],  # type: ignore[list-item]
        **_feature("scrub_in"),
    )
    [up] = _upstream(sim_url, m)
    assert up["path"] == "/v1/responses" and EMAIL not in json.dumps(up["body"])
    assert up["body"]["input"][2]["type"] == "function_call_output"
    assert EMAIL not in r.output_text
    reply = f"[[sim:reply=Write to {EMAIL} today {m}.]]"
    r2 = client.responses.create(model="gpt-native", input=reply, **_feature("redact"))
    assert "Write to" in r2.output_text and EMAIL not in r2.output_text
    with client.responses.stream(model="gpt-native", input=reply, **_feature("redact")) as s:
        events = list(s)
        final = s.get_final_response()
    streamed = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert "Write to" in streamed and EMAIL not in streamed + final.output_text
    assert all(u["path"] == "/v1/responses" for u in _upstream(sim_url, m))
    assert EMAIL not in (_record(gw, final.id).output_text or "")
    # the same answer, unguarded, does carry the address: the guard did the work
    assert EMAIL in client.responses.create(model="gpt-native", input=reply).output_text


def test_budget_refusal_sends_nothing_upstream(client: openai.OpenAI, sim_url: str) -> None:
    m = _mark()
    for stream in (False, True):
        with pytest.raises(openai.RateLimitError) as ei:
            client.responses.create(
                model="gpt-native", input=f"Hi {m}", stream=stream, **_feature("broke")
            )
        assert ei.value.status_code == 429 and ei.value.code == "budget_exceeded"
    assert _upstream(sim_url, m) == []


def test_the_reservation_reads_max_output_tokens_and_a_clamp_goes_upstream(
    client: openai.OpenAI, sim_url: str
) -> None:
    m = _mark()
    # 16k output tokens of gpt-4.1 ($8/M) cannot be reserved from a $0.01 day; 20 can
    with pytest.raises(openai.RateLimitError) as ei:
        client.responses.create(
            model="gpt-native", input=f"Hi {m}", max_output_tokens=16_000, **_feature("tight")
        )
    assert ei.value.code == "budget_exceeded" and _upstream(sim_url, m) == []
    r = client.responses.create(
        model="gpt-native", input=f"Hi {m}", max_output_tokens=20, **_feature("tight")
    )
    assert r.status in ("completed", "incomplete")
    [up] = _upstream(sim_url, m)
    assert up["body"]["max_output_tokens"] == 20
    m2 = _mark()
    client.responses.create(
        model="gpt-native", input=f"Hi {m2}", max_output_tokens=5000, **_feature("capped")
    )
    [up] = _upstream(sim_url, m2)
    assert up["body"]["max_output_tokens"] == 50  # the feature's clamp, made in the chat view


def test_failover_to_an_anthropic_deployment_translates(
    client: openai.OpenAI, gw: RunningGateway, sim_url: str
) -> None:
    m = _mark()
    raw = client.responses.with_raw_response.create(
        model="gpt-falls-over",
        input=f"Hello {m}",
        tools=[WEATHER],  # type: ignore[list-item]
    )
    r = raw.parse()
    assert r.status == "completed" and r.output
    assert raw.headers["x-bastion-deployment"].startswith("anth")
    paths = [u["path"] for u in _upstream(sim_url, m)]
    assert paths[-1] == "/v1/messages" and set(paths[:-1]) == {"/v1/responses"}
    m2 = _mark()
    with client.responses.stream(model="gpt-falls-over", input=f"Stream {m2}") as s:
        kinds = [e.type for e in s]
        final = s.get_final_response()
    assert kinds[-1] == "response.completed" and final.output_text
    paths = [u["path"] for u in _upstream(sim_url, m2)]
    assert paths[-1] == "/v1/messages" and set(paths[:-1]) == {"/v1/responses"}
    assert _record(gw, final.id).provider == "anth"


def test_a_chat_call_to_the_same_deployment_stays_chat(gw: RunningGateway, sim_url: str) -> None:
    m = _mark()
    chat = openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.key, max_retries=0)
    out = chat.chat.completions.create(
        model="gpt-native", messages=[{"role": "user", "content": f"Hi {m}"}]
    )
    assert out.choices[0].message.content
    assert [u["path"] for u in _upstream(sim_url, m)] == ["/v1/chat/completions"]


def test_a_stream_cut_mid_answer_restarts_natively_at_the_next_deployment(
    client: openai.OpenAI, gw: RunningGateway, sim_url: str
) -> None:
    m = _mark()
    with client.responses.stream(model="gpt-recovers", input=f"Long story {m}") as s:
        kinds = [e.type for e in s]
        final = s.get_final_response()
    assert kinds[-1] == "response.completed" and final.output_text
    ups = _upstream(sim_url, m)
    assert [u["path"] for u in ups] == ["/v1/responses"] * 2
    assert [u["body"]["model"] for u in ups] == ["gpt-4.1", "gpt-4.1-mini"]
    rec = _record(gw, final.id)
    assert rec.flags.get("recovered") == "restart"

"""What the SDK suites of the providers no client speaks natively (Gemini, Bedrock, Azure) share.

Each suite runs a real `bastion serve` in front of a separate `bastion sim` process speaking
the provider's wire, with an in-process Anthropic (``an``) and OpenAI (``oa``) simulator
beside it for failover and stream recovery, and reaches the gateway with the official OpenAI
and Anthropic SDKs. Here: that set-up (``serve``), the clients, the simulator's request log
and the call records, and the checks that read the same in every suite (failover both ways,
a cut stream carried on at Anthropic, the Responses API, the PII output guard, the Anthropic
client's create and stream). Each suite keeps its own tests and models; a check takes the
suite's model names.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from tests.conftest import RunningGateway, start_gateway, stop, write_config
from tests.cost._cost_support import sim_process

from bastion.store import open_store
from bastion.store.models import CallRecord

MSG: list[Any] = [{"role": "user", "content": "Say hello to the team"}]
FAIL = {"x-sim-fault": "status:500"}
TOOL_ASK: list[Any] = [{"role": "user", "content": "Use the get_weather tool for Paris"}]
WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}
TOOL_AN: list[Any] = [
    {"name": "get_weather", "description": "Weather for a city", "input_schema": WEATHER_SCHEMA}
]
EMAIL = "jane.doe@example.com"
GUARDED = {"x-bastion-feature": "guarded"}


def tool_oa(schema: dict[str, Any] | None = None) -> list[Any]:
    """The OpenAI ``get_weather`` tool (``schema``: its parameters, the weather schema if None)."""
    fn = {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": WEATHER_SCHEMA if schema is None else schema,
    }
    return [{"type": "function", "function": fn}]


TOOL_OA = tool_oa()


GEMINI_KEY_ENV = "GEM_TEST_KEY"


def gemini_providers(sim_url: str) -> dict[str, Any]:
    """``gem``: Gemini at the simulator process; ``gem-local``: the in-process one
    (``sim://``); both with the key in ``GEMINI_KEY_ENV``."""
    return {
        "gem": {"kind": "gemini", "base_url": sim_url, "api_key_env": GEMINI_KEY_ENV},
        "gem-local": {"kind": "gemini", "base_url": "sim://gemini", "api_key_env": GEMINI_KEY_ENV},
    }


def dep(provider: str, model: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """One deployment of a model alias, with the extra headers it sends (``x-sim-*`` faults)."""
    return {"provider": provider, "model": model, "headers": headers or {}}


@dataclass(frozen=True)
class Suite:
    """One provider under test: its provider name and model, and the Anthropic model its
    failover and recovery aliases pair it with."""

    provider: str
    model: str
    claude: str = "claude-sonnet-5"

    def failover_models(self) -> dict[str, Any]:
        """``P-then-claude``, ``claude-then-P``, ``P-then-openai``, ``openai-then-P``: the
        first deployment fails (500), the second answers."""
        p, m, c = self.provider, self.model, self.claude
        return {
            f"{p}-then-claude": {"deployments": [dep(p, m, FAIL), dep("an", c)]},
            f"claude-then-{p}": {"deployments": [dep("an", c, FAIL), dep(p, m)]},
            f"{p}-then-openai": {"deployments": [dep(p, m, FAIL), dep("oa", "gpt-4.1")]},
            f"openai-then-{p}": {"deployments": [dep("oa", "gpt-4.1", FAIL), dep(p, m)]},
        }

    def failover_cases(self) -> list[tuple[str, str]]:
        """(alias, provider that answers it) for ``failover_models``."""
        p = self.provider
        return [
            (f"{p}-then-claude", "an"),
            (f"claude-then-{p}", p),
            (f"{p}-then-openai", "oa"),
            (f"openai-then-{p}", p),
        ]

    def cut_model(self, cut_after: int, *, claude: str | None = None) -> dict[str, Any]:
        """The provider's stream cut after ``cut_after`` chunks, an Anthropic fallback."""
        faulty = dep(self.provider, self.model, {"x-sim-fault": f"cut_after:{cut_after}"})
        return {"deployments": [faulty, dep("an", claude or self.claude)]}


@contextmanager
def serve(
    tmp: Path,
    sim_url: str,
    providers: dict[str, Any],
    models: dict[str, Any],
    env: dict[str, str] | None = None,
) -> Iterator[RunningGateway]:
    """A real gateway with ``providers`` plus the in-process ``an`` and ``oa`` simulators;
    feature ``guarded`` redacts PII in answers; one attempt per deployment, no breakers."""
    cfg = write_config(
        tmp,
        providers={
            **providers,
            "an": {"kind": "anthropic", "base_url": "sim://anthropic"},
            "oa": {"kind": "openai", "base_url": "sim://openai/v1"},
        },
        models=models,
        features={"default": {"pii_output": "off"}, "guarded": {"pii_output": "redact"}},
        reliability={"retry": {"attempts_per_deployment": 1}, "breaker": {"enabled": False}},
    )
    g = start_gateway(cfg, env=env)
    try:
        yield g
    finally:
        stop(g.proc)


def sim_url_fixture() -> Any:
    """A module's ``sim_url`` fixture (``sim_url = sim_url_fixture()``): one `bastion sim`
    process for the module, speaking every provider's wire."""

    @pytest.fixture(scope="module")
    def sim_url() -> Iterator[str]:
        with sim_process() as url:
            yield url

    return sim_url


def gateway_fixture(
    name: str,
    providers: Callable[[str], dict[str, Any]],
    models: Callable[[], dict[str, Any]],
    env: dict[str, str] | None = None,
) -> Any:
    """A module's ``gw`` fixture (``gw = gateway_fixture(...)``): ``serve`` with the
    providers ``providers(sim_url)`` names and ``models()``, for the whole module."""

    @pytest.fixture(scope="module")
    def gw(tmp_path_factory: pytest.TempPathFactory, sim_url: str) -> Iterator[RunningGateway]:
        with serve(tmp_path_factory.mktemp(name), sim_url, providers(sim_url), models(), env) as g:
            yield g

    return gw


def oa(gw: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.key, max_retries=0)


def an(gw: RunningGateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=gw.key, max_retries=0)


def upstream_requests(sim_url: str, prefix: str) -> list[dict[str, Any]]:
    """The simulator process's log of the requests whose path starts with ``prefix``."""
    with urllib.request.urlopen(sim_url + "/_sim/requests", timeout=10) as r:
        recs: list[dict[str, Any]] = json.loads(r.read())
    return [x for x in recs if x["path"].startswith(prefix)]


def record(gw: RunningGateway, request_id: str) -> CallRecord:
    """The gateway's record of one call (written after the answer: waited for, 10 s at most)."""
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


def check_create_seen(
    gw: RunningGateway, sim_url: str, prefix: str, model: str, messages: list[Any], **kw: Any
) -> tuple[dict[str, Any], CallRecord]:
    """An OpenAI create of ``model`` (an alias served by the provider of the same name)
    answered with text, ``stop`` and usage, and recorded with that usage; returns the one
    upstream request (path under ``prefix``) it made and the record."""
    before = len(upstream_requests(sim_url, prefix))
    raw = oa(gw).chat.completions.with_raw_response.create(model=model, messages=messages, **kw)
    res = raw.parse()
    assert res.choices[0].message.content and res.choices[0].finish_reason == "stop"
    assert res.usage is not None and res.usage.prompt_tokens > 0
    (seen,) = upstream_requests(sim_url, prefix)[before:]
    rec = record(gw, raw.headers["x-request-id"])
    assert rec.provider == model and rec.status == 200
    assert rec.input_tokens == res.usage.prompt_tokens
    assert rec.output_tokens == res.usage.completion_tokens
    return seen, rec


def text_and_finals(chunks: Sequence[Any]) -> tuple[str, list[str]]:
    """An OpenAI chat stream's text and its finish reasons."""
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finals = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    return text, finals


def check_failover_both_ways(
    gw: RunningGateway, model: str, served: str, tools: list[Any] = TOOL_OA
) -> None:
    """A unary tool call (``tools``: the OpenAI tools it is offered), a text stream and an
    Anthropic tool-use stream are all answered by ``served``."""
    raw = oa(gw).chat.completions.with_raw_response.create(
        model=model, messages=TOOL_ASK, tools=tools
    )
    res = raw.parse()
    calls = res.choices[0].message.tool_calls or []
    assert calls and calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    assert record(gw, raw.headers["x-request-id"]).provider == served
    stream = oa(gw).chat.completions.with_raw_response.create(
        model=model, messages=MSG, stream=True
    )
    assert text_and_finals(list(stream.parse()))[0]
    assert record(gw, stream.headers["x-request-id"]).provider == served
    with an(gw).messages.stream(model=model, max_tokens=128, messages=TOOL_ASK, tools=TOOL_AN) as s:
        final = s.get_final_message()
    uses = [b for b in final.content if b.type == "tool_use"]
    assert uses and uses[0].name == "get_weather" and final.stop_reason == "tool_use"


def check_cut_carried_on_at_anthropic(gw: RunningGateway, model: str) -> None:
    """A stream cut midway reaches both SDKs whole, finished by the Anthropic fallback."""
    raw = oa(gw).chat.completions.with_raw_response.create(model=model, messages=MSG, stream=True)
    text, finals = text_and_finals(list(raw.parse()))
    assert text and finals == ["stop"]
    rec = record(gw, raw.headers["x-request-id"])
    assert rec.provider == "an" and rec.status == 200
    with an(gw).messages.stream(model=model, max_tokens=64, messages=MSG) as s:
        got = "".join(s.text_stream)
        final = s.get_final_message()
    assert got and final.stop_reason == "end_turn"


def check_anthropic_create_and_stream(gw: RunningGateway, model: str) -> None:
    """The Anthropic SDK's create and stream, translated: text, end_turn, output usage."""
    msg = an(gw).messages.create(model=model, max_tokens=64, messages=MSG)
    assert msg.content[0].type == "text" and msg.content[0].text
    assert msg.stop_reason == "end_turn" and msg.usage.output_tokens > 0
    with an(gw).messages.stream(model=model, max_tokens=64, messages=MSG) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text and final.stop_reason == "end_turn" and final.usage.output_tokens > 0
    assert final.usage.input_tokens > 0


def check_responses_api(gw: RunningGateway, model: str) -> None:
    """The Responses API, unary (with instructions) and streamed, has text and usage."""
    r = oa(gw).responses.create(model=model, instructions="Be brief.", input="Hello there")
    assert r.output_text and r.usage is not None and r.usage.output_tokens > 0
    with oa(gw).responses.stream(model=model, input="Stream please") as s:
        final = s.get_final_response()
    assert final.output_text


def check_output_guard(gw: RunningGateway, model: str) -> None:
    """The PII output filter (feature ``guarded``) redacts the e-mail address the answer
    repeats, in OpenAI answers and streams and in Anthropic streams; without the feature the
    address goes out."""
    ask: list[Any] = [{"role": "user", "content": f"[[sim:reply=Write to {EMAIL} today.]]"}]
    plain = oa(gw).chat.completions.create(model=model, messages=ask, stream=True)
    assert EMAIL in text_and_finals(list(plain))[0]
    plain_unary = oa(gw).chat.completions.create(model=model, messages=ask)
    assert EMAIL in (plain_unary.choices[0].message.content or "")
    guarded = oa(gw).with_options(default_headers=GUARDED)
    res = guarded.chat.completions.create(model=model, messages=ask)
    content = res.choices[0].message.content or ""
    assert content.startswith("Write to") and EMAIL not in content
    stream = guarded.chat.completions.create(model=model, messages=ask, stream=True)
    text = text_and_finals(list(stream))[0]
    assert text.startswith("Write to") and EMAIL not in text
    with (
        an(gw)
        .with_options(default_headers=GUARDED)
        .messages.stream(model=model, max_tokens=64, messages=ask) as s
    ):
        got = "".join(s.text_stream)
    assert got.startswith("Write to") and EMAIL not in got

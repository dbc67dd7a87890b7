"""Every fault class of the third-party benchmark, through both official SDKs, streaming and
not: the fallback serves the whole answer in bounded time, and nothing truncated is presented
as a success. Default timeouts and retry policy; only the feature deadline is shortened (8 s
instead of 120 s) so the silent cases finish quickly — the policy gives each deployment its
share of whatever the deadline is."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from tests.conftest import RunningGateway, start_gateway, stop, write_config

DEADLINE = 8.0
MSG: Any = [{"role": "user", "content": "Tell me about the refund policy."}]


def dep(provider: str, model: str, fault: str | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"provider": provider, "model": model}
    if fault:
        d["headers"] = {"x-sim-fault": fault}
    return d


# primary fault -> a healthy fallback (the benchmark's rows), named by class
SCENARIOS: dict[str, str] = {
    "silent": "silence",
    "slow-first-token": "slow_first:60000",
    "stall-mid-stream": "stall_after:3",
    "cut-mid-stream": "cut_after:3",
    "malformed-event": "malformed_after:3",
    "no-final-marker": "no_final",
    "server-500": "status:500",
    "server-503": "status:503",
    "reset": "reset",
    "rate-limited": "status:429",
    "rate-limited-retry-after": "status:429;retry_after:1;fail_first:1",
    "overloaded-529": "status:529",
    "flapping": "fail_every:2",
    "spaced-json": "spaced_json",
    "context-length": "context_length",
}
MODELS: dict[str, Any] = {
    name: {"deployments": [dep("sim", f"p-{name}", fault), dep("sim", f"b-{name}")]}
    for name, fault in SCENARIOS.items()
}
# a cut at a fallback that refuses prefill: restarted there, never a truncated success
MODELS["cut-no-prefill"] = {
    "deployments": [dep("sim", "p-cnp", "cut_after:3"), dep("sim", "b-cnp", "no_prefill")]
}
# across formats: an Anthropic deployment cut mid-stream, an OpenAI one carries on
MODELS["cut-cross-format"] = {
    "deployments": [dep("asim", "p-cx", "cut_after:3"), dep("osim", "b-cx")]
}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    cfg = write_config(
        tmp_path_factory.mktemp("faults"),
        providers={
            "sim": {"kind": "sim"},
            "asim": {"kind": "anthropic", "base_url": "sim://local"},
            "osim": {"kind": "openai", "base_url": "sim://local/v1"},
        },
        models=MODELS,
        features={"default": {"deadline": DEADLINE}},
    )
    g = start_gateway(cfg)
    yield g
    stop(g.proc)


def _anthropic(gw: RunningGateway, model: str, stream: bool) -> str:
    client = anthropic.Anthropic(base_url=gw.url, api_key=gw.key, max_retries=0)
    if not stream:
        msg = client.messages.create(model=model, max_tokens=200, messages=MSG)
        assert msg.stop_reason in ("end_turn", "max_tokens"), msg.stop_reason
        return "".join(b.text for b in msg.content if b.type == "text")
    with client.messages.stream(model=model, max_tokens=200, messages=MSG) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert final.stop_reason in ("end_turn", "max_tokens"), final.stop_reason
    return text


def _openai(gw: RunningGateway, model: str, stream: bool) -> str:
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.key, max_retries=0)
    if not stream:
        r = client.chat.completions.create(model=model, max_tokens=200, messages=MSG)
        assert r.choices[0].finish_reason in ("stop", "length")
        return r.choices[0].message.content or ""
    parts: list[str] = []
    finish = None
    for chunk in client.chat.completions.create(
        model=model, max_tokens=200, messages=MSG, stream=True
    ):
        for c in chunk.choices:  # the everyday loop must never meet an empty usage chunk
            parts.append(c.delta.content or "")
            finish = c.finish_reason or finish
    assert finish in ("stop", "length"), finish
    return "".join(parts)


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize("sdk", ["anthropic", "openai"])
@pytest.mark.parametrize("scenario", list(MODELS))
def test_the_whole_answer_is_served_in_bounded_time(
    gw: RunningGateway, scenario: str, sdk: str, stream: bool
) -> None:
    t0 = time.monotonic()
    text = (_anthropic if sdk == "anthropic" else _openai)(gw, scenario, stream)
    assert text.strip(), "an empty answer is not a served answer"
    assert time.monotonic() - t0 < DEADLINE + 1.0


@pytest.mark.parametrize("sdk", ["anthropic", "openai"])
def test_a_content_policy_refusal_is_returned_not_failed_over(
    tmp_path_factory: pytest.TempPathFactory, sdk: str
) -> None:
    cfg = write_config(
        tmp_path_factory.mktemp("policy"),
        models={
            "policy": {"deployments": [dep("sim", "strict", "content_policy"), dep("sim", "lax")]}
        },
    )
    g = start_gateway(cfg)
    try:
        with pytest.raises((anthropic.BadRequestError, openai.BadRequestError)):
            (_anthropic if sdk == "anthropic" else _openai)(g, "policy", False)
    finally:
        stop(g.proc)

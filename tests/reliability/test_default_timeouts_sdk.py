"""On the true defaults (no deadline, timeout or retry override), a streaming deployment that
never answers, or answers its headers but no token, is left after the default first-token
bound and the fallback serves the whole answer: far inside the 120 s deadline, not after half
of it. Both SDKs, all four streams at once on one real gateway."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anthropic
import openai
from tests.conftest import start_gateway, stop, write_config

from bastion.config import FeatureConfig, TimeoutConfig

MSG: Any = [{"role": "user", "content": "Tell me about the refund policy."}]
FIRST_TOKEN = TimeoutConfig().first_token
FAULTS = {"silent": "silence", "slow-first-token": "slow_first:120000"}


def _dep(model: str, fault: str | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"provider": "sim", "model": model}
    if fault:
        d["headers"] = {"x-sim-fault": fault}
    return d


def _stream(sdk: str, url: str, key: str, model: str) -> tuple[str, float]:
    t0 = time.monotonic()
    if sdk == "anthropic":
        ac = anthropic.Anthropic(base_url=url, api_key=key, max_retries=0)
        with ac.messages.stream(model=model, max_tokens=200, messages=MSG) as s:
            text = "".join(s.text_stream)
            assert s.get_final_message().stop_reason in ("end_turn", "max_tokens")
        return text, time.monotonic() - t0
    oc = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
    parts, finish = [], None
    for chunk in oc.chat.completions.create(model=model, max_tokens=200, messages=MSG, stream=True):
        for c in chunk.choices:
            parts.append(c.delta.content or "")
            finish = c.finish_reason or finish
    assert finish in ("stop", "length")
    return "".join(parts), time.monotonic() - t0


def test_the_defaults_leave_a_silent_stream_for_the_fallback_long_before_the_deadline(
    tmp_path: Path,
) -> None:
    deadline = FeatureConfig().deadline
    assert deadline / 4 > FIRST_TOKEN  # the bound this test proves is the shipped default
    cfg = write_config(
        tmp_path,
        models={
            name: {"deployments": [_dep(f"p-{name}", fault), _dep(f"b-{name}")]}
            for name, fault in FAULTS.items()
        },
    )
    gw = start_gateway(cfg)
    try:
        runs = [(sdk, name) for sdk in ("anthropic", "openai") for name in FAULTS]
        with ThreadPoolExecutor(len(runs)) as pool:
            got = list(pool.map(lambda r: _stream(r[0], gw.url, gw.key, r[1]), runs))
    finally:
        stop(gw.proc)
    for (sdk, name), (text, elapsed) in zip(runs, got, strict=True):
        assert text.strip(), (sdk, name, "an empty answer is not a served answer")
        # the primary had its first-token bound, no more; then the fallback answered whole
        assert FIRST_TOKEN - 0.5 <= elapsed < FIRST_TOKEN + 5.0, (sdk, name, elapsed)

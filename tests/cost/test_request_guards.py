"""Request guards of the cost track, in-process: max_tokens on every call, token caps per call and
per conversation. Each refusal is a 400 in the caller's format, before any upstream call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from _cost_support import RecordingState, asgi_call, inproc_config, make_key

from bastion.gateway import Gateway
from bastion.state import MemoryCounterStore

MSG = [{"role": "user", "content": "hello"}]
PATHS = {"anthropic": "/v1/messages", "openai": "/v1/chat/completions"}


def _sent_max_tokens(gw: Gateway) -> tuple[str, int]:
    """The output bound of the last request the simulated provider received."""
    body: dict[str, Any] = gw.simulator.requests[-1].body
    for k in ("max_tokens", "max_completion_tokens"):
        if k in body:
            return k, body[k]
    raise AssertionError(f"the provider received no output bound: {body}")


# -- max_tokens ----------------------------------------------------------------------------


@pytest.fixture
async def mt_gw(tmp_path: Path) -> AsyncIterator[tuple[Gateway, str, RecordingState]]:
    cfg = inproc_config(
        tmp_path,
        features={
            "default": {"max_tokens_default": 321, "max_tokens_limit": 2000},
            "strict": {
                "max_tokens_default": 100,
                "max_tokens_limit": 500,
                "max_tokens_mode": "refuse",
            },
        },
        cost={"caps": {"global_daily_usd": 100.0}},
    )
    state = RecordingState(MemoryCounterStore())
    async with Gateway(cfg, state=state) as gw:  # type: ignore[arg-type]
        yield gw, await make_key(gw), state


@pytest.mark.parametrize("fmt", ["anthropic", "openai"])
async def test_omitted_max_tokens_is_injected_and_reserved(
    mt_gw: tuple[Gateway, str, RecordingState], fmt: str
) -> None:
    gw, key, state = mt_gw
    status, _, out = await asgi_call(
        gw, key, PATHS[fmt], {"model": "claude-sonnet-5", "messages": MSG}
    )
    assert status == 200, out
    assert _sent_max_tokens(gw)[1] == 321
    # the budget reserved the injected bound, not zero output ($10 per million output tokens)
    reserved = [amount for op, _, amount in state.log if op == "reserve"]
    assert reserved and reserved[-1] is not None and reserved[-1] >= 321 * 10 / 1e6


@pytest.mark.parametrize(
    ("fmt", "field"),
    [("anthropic", "max_tokens"), ("openai", "max_tokens"), ("openai", "max_completion_tokens")],
)
async def test_max_tokens_above_limit_is_clamped(
    mt_gw: tuple[Gateway, str, RecordingState], fmt: str, field: str
) -> None:
    gw, key, _ = mt_gw
    body = {"model": "claude-sonnet-5", "messages": MSG, field: 100_000}
    status, _, out = await asgi_call(gw, key, PATHS[fmt], body)
    assert status == 200, out
    assert _sent_max_tokens(gw) == (field, 2000)


async def test_max_tokens_above_limit_is_refused_in_refuse_mode(
    mt_gw: tuple[Gateway, str, RecordingState],
) -> None:
    gw, key, _ = mt_gw
    strict = {"x-bastion-feature": "strict"}
    body = {"model": "claude-sonnet-5", "messages": MSG, "max_tokens": 501}
    status, _, out = await asgi_call(gw, key, "/v1/messages", body, strict)
    assert status == 400
    assert out["error"]["type"] == "invalid_request_error"
    assert out["error"]["message"].startswith("max_tokens")
    status, _, out = await asgi_call(gw, key, "/v1/chat/completions", body, strict)
    assert status == 400
    assert out["error"]["param"] == "max_tokens"
    assert gw.simulator.request_count() == 0
    # within the limit the same feature is served
    status, _, out = await asgi_call(gw, key, "/v1/messages", {**body, "max_tokens": 500}, strict)
    assert status == 200, out
    assert _sent_max_tokens(gw)[1] == 500


# -- token caps ----------------------------------------------------------------------------


# each attempt holds the input bound of the body it sends upstream (prompt-cache key
# included) plus its max_tokens: a few 20-token calls fit, not many
CONV_CAP = 300


@pytest.fixture
async def cap_gw(tmp_path: Path) -> AsyncIterator[tuple[Gateway, str]]:
    cfg = inproc_config(
        tmp_path,
        features={
            "default": {"max_input_tokens": 100, "conversation_max_tokens": CONV_CAP},
        },
    )
    async with Gateway(cfg) as gw:
        yield gw, await make_key(gw)


@pytest.mark.parametrize("fmt", ["anthropic", "openai"])
async def test_input_over_the_per_call_cap_is_refused_before_any_upstream_call(
    cap_gw: tuple[Gateway, str], fmt: str
) -> None:
    gw, key = cap_gw
    big = [{"role": "user", "content": "tell me about the weather " * 40}]  # ~1000 bytes
    status, _, out = await asgi_call(
        gw, key, PATHS[fmt], {"model": "claude-sonnet-5", "max_tokens": 20, "messages": big}
    )
    assert status == 400, out
    assert out["error"]["type"] == "invalid_request_error"
    assert "per-call cap of 100" in out["error"]["message"]
    if fmt == "openai":
        assert out["error"]["code"] == "context_length_exceeded"
        assert out["error"]["param"] == "messages"
    assert gw.simulator.request_count() == 0
    status, _, out = await asgi_call(
        gw, key, PATHS[fmt], {"model": "claude-sonnet-5", "max_tokens": 20, "messages": MSG}
    )
    assert status == 200, out


def _tokens(fmt: str, out: dict[str, Any]) -> int:
    u = out["usage"]
    if fmt == "anthropic":
        return int(
            u["input_tokens"]
            + u["output_tokens"]
            + (u.get("cache_read_input_tokens") or 0)
            + (u.get("cache_creation_input_tokens") or 0)
        )
    return int(u["prompt_tokens"] + u["completion_tokens"])


@pytest.mark.parametrize("fmt", ["anthropic", "openai"])
async def test_conversation_is_refused_once_its_next_call_could_pass_the_cap(
    cap_gw: tuple[Gateway, str], fmt: str
) -> None:
    gw, key = cap_gw
    body = {"model": "claude-sonnet-5", "max_tokens": 20, "messages": MSG}
    conv = {"x-bastion-conversation": f"conv-a-{fmt}"}
    used = 0
    served = 0
    for _ in range(30):
        before = gw.simulator.request_count()
        status, _, out = await asgi_call(gw, key, PATHS[fmt], body, conv)
        if status == 200:
            used += _tokens(fmt, out)
            served += 1
            assert used <= CONV_CAP, f"the conversation used {used} tokens, over its cap"
            continue
        assert status == 400, out
        assert out["error"]["type"] == "invalid_request_error"
        assert f"of its {CONV_CAP} tokens" in out["error"]["message"]
        assert gw.simulator.request_count() == before, "a refused call went upstream"
        break
    else:
        raise AssertionError("the conversation was never refused")
    assert served >= 2, "the cap should allow a few calls before refusing"
    # a refusal is sticky for that conversation...
    status, _, _ = await asgi_call(gw, key, PATHS[fmt], body, conv)
    assert status == 400
    # ...and does not touch another conversation
    other = {"x-bastion-conversation": f"conv-b-{fmt}"}
    status, _, out = await asgi_call(gw, key, PATHS[fmt], body, other)
    assert status == 200, out

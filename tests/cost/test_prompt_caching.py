"""Prompt caching: breakpoints on the stable prefix, within the provider's rules, checked by the simulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.conftest import sim_models

import bastion
from bastion.cost.caching import MAX_BREAKPOINTS, add_anthropic_breakpoints

LONG_SYSTEM = "You are the Acme support drafter. " + "Policy clause. " * 600  # ~2.3k tokens
TOOLS = [
    {
        "name": "lookup_invoice",
        "description": "x" * 50,
        "input_schema": {"type": "object", "properties": {"id": {"type": "string"}}},
    }
]


def _cfg(tmp: Path, caching: bool = True) -> dict[str, Any]:
    return {
        "store": {"url": f"sqlite:///{tmp / 'c.db'}"},
        "state": {"url": "memory://"},
        "observability": {"spill_path": str(tmp / "spill.jsonl")},
        "providers": {"sim": {"kind": "sim"}},
        "models": sim_models(),
        "features": {"default": {"prompt_caching": caching}},
    }


def _breakpoints(body: dict[str, Any]) -> list[str]:
    where = []
    for t in body.get("tools") or ():
        if "cache_control" in t:
            where.append("tools")
    sys = body.get("system")
    if isinstance(sys, list):
        where += ["system" for b in sys if "cache_control" in b]
    for i, m in enumerate(body["messages"]):
        if isinstance(m["content"], list):
            where += [f"messages.{i}" for b in m["content"] if "cache_control" in b]
    return where


async def test_stable_prefix_is_cached_and_the_second_call_reads_it(tmp_path: Path) -> None:
    async with bastion.Gateway.from_config(None, **_cfg(tmp_path)) as gw:
        body = {
            "model": "claude-sonnet-5",
            "system": LONG_SYSTEM,
            "tools": TOOLS,
            "messages": [{"role": "user", "content": "Where is my refund?"}],
        }
        first = await gw.messages(body)
        second = await gw.messages(
            {**body, "messages": [{"role": "user", "content": "And my invoice?"}]}
        )
        sent = gw.simulator.requests[-1].body
        assert _breakpoints(sent) == [
            "system"
        ]  # tools alone are under the minimum; never the user turn
        assert first["usage"]["cache_creation_input_tokens"] > 2000
        assert (
            second["usage"]["cache_read_input_tokens"]
            == first["usage"]["cache_creation_input_tokens"]
        )
        assert second["usage"]["input_tokens"] < 50


async def test_stable_messages_header_caches_retrieved_docs_but_not_the_user_turn(
    tmp_path: Path,
) -> None:
    async with bastion.Gateway.from_config(None, **_cfg(tmp_path)) as gw:
        docs = "<doc id='refunds'>" + "Refund rules. " * 800 + "</doc>"
        msgs = [
            {"role": "user", "content": docs},
            {"role": "assistant", "content": "Noted."},
            {"role": "user", "content": "Question one"},
        ]
        await gw.messages({"model": "claude-sonnet-5", "messages": msgs}, stable_messages="2")
        sent = gw.simulator.requests[-1].body
        assert _breakpoints(sent) == ["messages.1"]
        assert not isinstance(sent["messages"][2]["content"], list)


async def test_caching_off_sends_no_breakpoints(tmp_path: Path) -> None:
    async with bastion.Gateway.from_config(None, **_cfg(tmp_path, caching=False)) as gw:
        await gw.messages(
            {
                "model": "claude-sonnet-5",
                "system": LONG_SYSTEM,
                "messages": [{"role": "user", "content": "hi"}],
            }
        )
        assert _breakpoints(gw.simulator.requests[-1].body) == []


async def test_openai_deployments_get_a_stable_cache_key(tmp_path: Path) -> None:
    async with bastion.Gateway.from_config(None, **_cfg(tmp_path)) as gw:
        for q in ("a", "b"):
            await gw.chat_completions(
                {
                    "model": "gpt-4.1",
                    "messages": [
                        {"role": "system", "content": LONG_SYSTEM},
                        {"role": "user", "content": q},
                    ],
                }
            )
        keys = {r.body["prompt_cache_key"] for r in gw.simulator.requests[-2:]}
        assert len(keys) == 1
        second = await gw.chat_completions(
            {
                "model": "gpt-4.1",
                "messages": [
                    {"role": "system", "content": LONG_SYSTEM},
                    {"role": "user", "content": "c"},
                ],
            }
        )
        assert second["usage"]["prompt_tokens_details"]["cached_tokens"] > 1000


def test_never_more_than_the_provider_limit_of_breakpoints() -> None:
    block = {"type": "text", "text": "y" * 9000, "cache_control": {"type": "ephemeral"}}
    body: dict[str, Any] = {
        "system": [dict(block) for _ in range(3)],
        "tools": TOOLS * 1,
        "messages": [{"role": "user", "content": [dict(block)]}, {"role": "user", "content": "q"}],
    }
    add_anthropic_breakpoints(body, 1, "claude-sonnet-5")
    assert len(_breakpoints(body)) <= MAX_BREAKPOINTS


@pytest.mark.parametrize(
    "model,expected", [("claude-haiku-5-5", []), ("claude-sonnet-5", ["system"])]
)
def test_minimum_cacheable_length_depends_on_the_model(model: str, expected: list[str]) -> None:
    body: dict[str, Any] = {"system": "z" * 6000, "messages": [{"role": "user", "content": "q"}]}
    add_anthropic_breakpoints(body, 0, model)
    assert _breakpoints(body) == expected


async def test_feature_pinned_to_a_cheaper_model_and_allow_list(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    cfg["features"] = {
        "default": {},
        "cheap": {"model": "claude-haiku-5-5"},
        "strict": {"allowed_models": ["gpt-4.1-mini"]},
    }
    async with bastion.Gateway.from_config(None, **cfg) as gw:
        await gw.messages(
            {"model": "claude-sonnet-5", "messages": [{"role": "user", "content": "x"}]},
            feature="cheap",
        )
        assert gw.simulator.requests[-1].body["model"] == "claude-haiku-5-5"
        with pytest.raises(bastion.BastionError) as ei:
            await gw.chat_completions(
                {"model": "gpt-4.1", "messages": [{"role": "user", "content": "x"}]},
                feature="strict",
            )
        assert ei.value.status == 403
        await gw.chat_completions(
            {"model": "gpt-4.1-mini", "messages": [{"role": "user", "content": "x"}]},
            feature="strict",
        )

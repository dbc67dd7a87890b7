"""Structured output in the gateway: an answer that breaks the request's JSON schema gets one
repair attempt and is flagged if it still fails."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from tests.conftest import sim_models

import bastion

SCHEMA = {
    "type": "object",
    "properties": {"refund": {"type": "boolean"}, "reason": {"type": "string"}},
    "required": ["refund", "reason"],
    "additionalProperties": False,
}
FORMAT = {"type": "json_schema", "json_schema": {"name": "decision", "schema": SCHEMA}}


def _cfg(tmp: Path, repair: bool) -> dict[str, Any]:
    return {
        "store": {"url": f"sqlite:///{tmp / 'j.db'}"},
        "state": {"url": "memory://"},
        "observability": {"spill_path": str(tmp / "spill.jsonl")},
        "providers": {"sim": {"kind": "sim"}},
        "models": sim_models(),
        "features": {"default": {"safety": {"json_repair": repair}}},
    }


def _ask(text: str) -> dict[str, Any]:
    return {
        "model": "gpt-4.1",
        "response_format": FORMAT,
        "messages": [{"role": "user", "content": text}],
    }


async def test_invalid_answer_is_repaired_once(tmp_path: Path) -> None:
    async with bastion.Gateway.from_config(None, **_cfg(tmp_path, True)) as gw:
        out = await gw.chat_completions(_ask("Refund? [[sim:reply=Yes, refund it.]]"))
        value = orjson.loads(out["choices"][0]["message"]["content"])
        assert set(value) == {"refund", "reason"}
        repair = gw.simulator.requests[-1].body["messages"]
        assert repair[-2] == {"role": "assistant", "content": "Yes, refund it."}
        assert "JSON schema" in repair[-1]["content"]
        await gw.recorder.flush()
        (rec,) = await gw.store.recent_calls(1)
        (f,) = rec.findings
        assert f.kind == "output_invalid" and f.action == "repaired" and not f.problem


async def test_without_repair_the_invalid_answer_is_flagged(tmp_path: Path) -> None:
    async with bastion.Gateway.from_config(None, **_cfg(tmp_path, False)) as gw:
        out = await gw.chat_completions(_ask("[[sim:reply=not json at all]]"))
        assert out["choices"][0]["message"]["content"] == "not json at all"
        assert len(gw.simulator.requests) == 1
        await gw.recorder.flush()
        (rec,) = await gw.store.recent_calls(1)
        (f,) = rec.findings
        assert f.kind == "output_invalid" and f.action == "flagged" and f.reasons


async def test_valid_answer_passes_untouched(tmp_path: Path) -> None:
    async with bastion.Gateway.from_config(None, **_cfg(tmp_path, True)) as gw:
        await gw.chat_completions(_ask("Decide please"))
        assert len(gw.simulator.requests) == 1

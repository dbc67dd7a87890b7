"""Online quality: sampled and flagged production answers are scored off the request path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import sim_models

import bastion
from bastion.observability.metrics import render_metrics


def _cfg(tmp: Path, rate: float) -> dict[str, Any]:
    return {
        "store": {"url": f"sqlite:///{tmp / 'q.db'}"},
        "state": {"url": "memory://"},
        "observability": {"spill_path": str(tmp / "spill.jsonl"), "quality_rate": rate},
        "providers": {"sim": {"kind": "sim"}},
        "models": sim_models(),
        # answers keep their PII (flagged, not replaced), so the no-PII scorer has one to find
        "features": {"default": {"pii_output": "flag"}},
    }


def _ask(text: str) -> dict[str, Any]:
    return {"model": "gpt-4.1", "messages": [{"role": "user", "content": text}]}


async def test_answers_are_scored_and_summarised(tmp_path: Path) -> None:
    async with bastion.Gateway.from_config(None, **_cfg(tmp_path, 1.0)) as gw:
        await gw.chat_completions(_ask("[[sim:reply=Happy to help with your refund.]]"))
        await gw.chat_completions(_ask("[[sim:reply=Write to jane.roe@example.com for that.]]"))
        await gw.chat_completions(_ask("[[sim:reply=I can't help with that request.]]"))
        js = _ask('[[sim:reply={"ok": true}]]') | {"response_format": {"type": "json_object"}}
        await gw.chat_completions(js)
        await gw.chat_completions(
            _ask("[[sim:reply=not json]]") | {"response_format": {"type": "json_object"}}
        )
        await gw.quality.drain()
        s = gw.quality.summary()["default"]
        assert s["no_pii"] == {"pass_rate": 0.8, "n": 5.0}
        assert s["refusal"]["pass_rate"] == 0.8  # one refusal in five answers
        assert s["valid_json"] == {"pass_rate": 0.5, "n": 2.0}
        text = render_metrics(gw.metrics)[0].decode()
        assert (
            'bastion_quality_checks_total{feature="default",result="fail",scorer="no_pii"} 1.0'
            in text
        )


async def test_unsampled_calls_are_not_scored_unless_flagged(tmp_path: Path) -> None:
    async with bastion.Gateway.from_config(None, **_cfg(tmp_path, 0.0)) as gw:
        await gw.chat_completions(_ask("[[sim:reply=Plain answer.]]"))
        await gw.chat_completions(_ask("[[sim:reply=Mail jane.roe@example.com]]"))  # PII flags it
        await gw.quality.drain()
        assert gw.quality.scored == 1

"""The Responses API in-process (`bastion.responses.ResponsesApi`): the same pipeline as the server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.conftest import sim_models

import bastion
from bastion.errors import BudgetExceeded, InvalidRequest
from bastion.responses import ResponsesApi


def _cfg(tmp: Path) -> dict[str, Any]:
    return {
        "store": {"url": f"sqlite:///{tmp / 'lib.db'}"},
        "state": {"url": "memory://"},
        "observability": {"spill_path": str(tmp / "spill.jsonl")},
        "providers": {"sim": {"kind": "sim"}},
        "models": sim_models(),
        "features": {"default": {"pii_output": "off"}, "broke": {"daily_budget_usd": 0.0}},
    }


async def test_create_and_stream_in_process_run_the_guarded_pipeline(tmp_path: Path) -> None:
    async with bastion.Gateway.from_config(None, **_cfg(tmp_path)) as gw:
        api = ResponsesApi(gw)
        r = await api.create({"model": "gpt-4.1", "input": "Hello"}, user="u-42")
        assert r["object"] == "response" and r["status"] == "completed"
        text = r["output"][0]["content"][0]["text"]
        assert text and r["usage"]["output_tokens"] > 0
        events = [e async for e in api.stream({"model": "gpt-4.1", "input": "Hello"})]
        assert events[0]["type"] == "response.created"
        assert events[-1]["type"] == "response.completed"
        assert [e["sequence_number"] for e in events] == list(range(len(events)))
        await gw.recorder.flush()
        recs = {rec.request_id: rec for rec in await gw.store.recent_calls(10)}
        rec = recs["req_" + r["id"].removeprefix("resp_")]
        assert rec.user_id == "u-42" and rec.output_text == text
        assert "req_" + events[-1]["response"]["id"].removeprefix("resp_") in recs


async def test_in_process_refusals_are_typed_errors(tmp_path: Path) -> None:
    async with bastion.Gateway.from_config(None, **_cfg(tmp_path)) as gw:
        api = ResponsesApi(gw)
        with pytest.raises(BudgetExceeded):
            await api.create({"model": "gpt-4.1", "input": "Hi"}, feature="broke")
        with pytest.raises(InvalidRequest) as ei:
            await api.create({"model": "gpt-4.1", "input": "Hi", "previous_response_id": "r"})
        assert ei.value.param == "previous_response_id"

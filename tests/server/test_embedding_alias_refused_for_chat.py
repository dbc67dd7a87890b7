"""A chat, messages or responses call to an embedding alias is a clear 400, never an upstream
chat request to an embedding model."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import sim_models

import bastion
from bastion.errors import InvalidRequest


@pytest.mark.parametrize("api", ["chat", "messages"])
async def test_an_embedding_alias_is_refused_on_the_chat_apis(tmp_path: Path, api: str) -> None:
    cfg = {
        "store": {"url": f"sqlite:///{tmp_path / 'e.db'}"},
        "state": {"url": "memory://"},
        "observability": {"spill_path": str(tmp_path / "spill.jsonl")},
        "providers": {"sim": {"kind": "sim"}},
        "models": {
            **sim_models(),
            "embed": {"deployments": [{"provider": "sim", "model": "e", "dimensions": 8}]},
        },
    }
    body = {"model": "embed", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    async with bastion.Gateway.from_config(None, **cfg) as gw:
        before = len(gw.simulator.requests)
        with pytest.raises(InvalidRequest, match="embedding model") as err:
            if api == "chat":
                await gw.chat_completions(body)
            else:
                await gw.messages(body)
        assert err.value.param == "model"
        assert len(gw.simulator.requests) == before  # nothing went upstream

"""A large embeddings batch (megabytes of JSON) is checked off the event loop and still served
whole: one vector of the model's length per input, in order, billed once."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import sim_models

import bastion
from bastion.embeddings import _PARSE_INLINE_BYTES, EmbeddingsApi


async def test_a_batch_past_the_inline_parse_bound_is_served_whole(tmp_path: Path) -> None:
    cfg = {
        "store": {"url": f"sqlite:///{tmp_path / 'e.db'}"},
        "state": {"url": "memory://"},
        "observability": {"spill_path": str(tmp_path / "spill.jsonl")},
        "providers": {"sim": {"kind": "sim"}},
        "models": sim_models(),
    }
    inputs = [f"document number {i}" for i in range(120)]
    async with bastion.Gateway.from_config(None, **cfg) as gw:
        out = await EmbeddingsApi(gw).create({"model": "text-embedding-3-large", "input": inputs})
        assert [d["index"] for d in out["data"]] == list(range(len(inputs)))
        assert {len(d["embedding"]) for d in out["data"]} == {3072}
        # 120 x 3072 floats is well past the bound: this answer took the threaded path
        assert len(str(out["data"])) > _PARSE_INLINE_BYTES
        assert out["usage"]["prompt_tokens"] > 0
        await gw.recorder.flush()
        rec = (await gw.store.recent_calls(1))[0]
        assert rec.status == 200 and rec.cost_usd > 0 and rec.attempts == 1

"""Property: whatever idempotency keys two API keys send, at once or in turn, neither ever gets
a replay of the other's answer, and each replay is its own key's original, byte for byte."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.conftest import sim_models

from bastion.call import Principal
from bastion.config import load_config
from bastion.errors import BastionError
from bastion.gateway import Gateway
from bastion.providers.base import Format
from bastion.reliability.idempotency import REPLAY_HEADER

A = Principal(key_id="k-prop-a", name="a")
B = Principal(key_id="k-prop-b", name="b")
AV = {"anthropic-version": "2023-06-01"}


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    cfg = load_config(
        None,
        env={},
        overrides={
            "store": {"url": f"sqlite:///{tmp_path / 'bastion.db'}"},
            "state": {"url": "memory://"},
            "observability": {"spill_path": str(tmp_path / "spill.jsonl")},
            "providers": {"sim": {"kind": "sim"}},
            "models": sim_models(),
        },
    )
    async with Gateway(cfg) as g:
        yield g


op = st.tuples(
    st.sampled_from([A, B]),
    st.sampled_from(["k1", "k2", "k3", "", "k1 ", "ключ"]),
    st.sampled_from(["pay 5", "pay 7"]),
    st.booleans(),
)


async def _send(
    gw: Gateway, who: Principal, idem: str, text: str, stream: bool
) -> tuple[dict[str, str], bytes] | BastionError:
    body = {
        "model": "sim-pay",
        "max_tokens": 20,
        "stream": stream,
        "messages": [{"role": "user", "content": text}],
    }
    hs = {**AV, "idempotency-key": idem}
    try:
        reply = await gw.handle(Format.ANTHROPIC, orjson.dumps(body), hs, principal=who)
    except BastionError as exc:
        return exc
    if reply.stream is None:
        return reply.headers, reply.body or b""
    return reply.headers, b"".join([c async for c in reply.stream])


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(batches=st.lists(st.lists(op, min_size=1, max_size=6), min_size=1, max_size=4))
async def test_no_key_ever_gets_a_replay_of_another_keys_answer(
    gw: Gateway, batches: list[list[tuple[Principal, str, str, bool]]]
) -> None:
    run = uuid.uuid4().hex + ":"  # each example its own client keys on the shared gateway
    originals: dict[str, tuple[str, bytes]] = {}  # original request id -> (owner, answer)
    used: dict[tuple[str, str], set[tuple[str, bool]]] = {}  # (key id, client key) -> bodies
    for batch in batches:
        for who, k, text, s in batch:
            used.setdefault((who.key_id, k), set()).add((text, s))
        results: list[Any] = await asyncio.gather(
            *(_send(gw, who, run + k, text, s) for who, k, text, s in batch)
        )
        replays: list[tuple[Principal, dict[str, str], bytes]] = []
        for (who, k, _, _), r in zip(batch, results, strict=True):
            if isinstance(r, BastionError):
                # only the caller's own use of a key with another body can refuse it
                assert r.http_status() == 422, r
                assert len(used[(who.key_id, k)]) > 1, "refused over another key's use"
                continue
            headers, raw = r
            if REPLAY_HEADER in headers:
                replays.append((who, headers, raw))
            else:
                originals[headers["x-request-id"]] = (who.key_id, raw)
        for who, headers, raw in replays:
            owner, answer = originals[headers["x-request-id"]]
            assert owner == who.key_id, "a key was served another key's stored answer"
            assert raw == answer

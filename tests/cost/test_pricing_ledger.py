"""Spend is priced locally from each call's own usage, cache tokens at their own rates, and written
to the ledger; a spend cap over a model with no known price stops the gateway from starting."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from _cost_support import PRINCIPAL, inproc_config
from tests.conftest import BIN, write_config

from bastion.clock import DayClock
from bastion.errors import ConfigError
from bastion.gateway import Gateway
from bastion.providers.base import Format
from bastion.providers.sse import SSEDecoder
from bastion.store import CallRecord, open_store

# deliberately distinct rates, so a token counted in the wrong bucket changes the cost
PRICE = {"input": 1.0, "output": 7.0, "cache_write": 50.0, "cache_read": 0.25}
# ~2,200 simulator tokens (4 bytes each): over both providers' 1,024-token cache minimum
LONG = " ".join(f"Rule {i}: answer politely and cite section {i * 7 % 13}." for i in range(200))


def _anthropic_body(stream: bool = False) -> dict[str, Any]:
    return {
        "model": "priced",
        "max_tokens": 50,
        "stream": stream,
        "system": [{"type": "text", "text": LONG, "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "What is rule 3?"}],
    }


def _openai_body() -> dict[str, Any]:
    return {
        "model": "priced",
        "max_tokens": 50,
        "messages": [{"role": "system", "content": LONG}, {"role": "user", "content": "Rule 3?"}],
    }


def _anthropic_tokens(u: dict[str, Any]) -> tuple[int, int, int, int]:
    return (
        u["input_tokens"],
        u["output_tokens"],
        u.get("cache_creation_input_tokens") or 0,
        u.get("cache_read_input_tokens") or 0,
    )


def _openai_tokens(u: dict[str, Any]) -> tuple[int, int, int, int]:
    cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return u["prompt_tokens"] - cached, u["completion_tokens"], 0, cached


def _cost(tokens: tuple[int, int, int, int]) -> float:
    i, o, cw, cr = tokens
    return (
        i * PRICE["input"]
        + o * PRICE["output"]
        + cw * PRICE["cache_write"]
        + cr * PRICE["cache_read"]
    ) / 1e6


async def _stream_usage(gw: Gateway, rid: str) -> tuple[str, tuple[int, int, int, int]]:
    """Run one Anthropic stream to its end; its server id and the usage the client saw."""
    raw = json.dumps(_anthropic_body(stream=True)).encode()
    reply = await gw.handle(Format.ANTHROPIC, raw, {"x-request-id": rid}, principal=PRINCIPAL)
    assert reply.stream is not None
    usage: dict[str, Any] = {}
    decoder = SSEDecoder()
    async for chunk in reply.stream:
        for ev in decoder.feed(chunk):
            obj = json.loads(ev.data)
            if ev.event == "message_start":
                usage.update(obj["message"]["usage"])
            elif ev.event == "message_delta":
                usage.update({k: v for k, v in obj["usage"].items() if v is not None})
    return reply.headers["x-request-id"], _anthropic_tokens(usage)


async def test_ledger_cost_is_usage_times_price_including_cache_tokens(tmp_path: Path) -> None:
    cfg = inproc_config(
        tmp_path,
        models={"priced": {"deployments": [{"provider": "sim", "model": "priced-model"}]}},
        cost={"prices": {"priced-model": PRICE}, "caps": {"global_daily_usd": 100.0}},
    )
    expected: dict[str, tuple[tuple[int, int, int, int], float]] = {}
    ids: dict[str, str] = {}  # the client's id -> the id Bastion minted (the record's key)
    async with Gateway(cfg) as gw:
        for i in range(2):  # the first writes the prompt cache, the second reads it
            rid = f"ledger-a{i}"
            raw = json.dumps(_anthropic_body()).encode()
            reply = await gw.handle(
                Format.ANTHROPIC, raw, {"x-request-id": rid}, principal=PRINCIPAL
            )
            assert reply.status == 200 and reply.body is not None
            t = _anthropic_tokens(json.loads(reply.body)["usage"])
            expected[rid] = (t, _cost(t))
            ids[rid] = reply.headers["x-request-id"]
        ids["ledger-s"], t = await _stream_usage(gw, "ledger-s")
        expected["ledger-s"] = (t, _cost(t))
        for i in range(2):
            rid = f"ledger-o{i}"
            raw = json.dumps(_openai_body()).encode()
            reply = await gw.handle(Format.OPENAI, raw, {"x-request-id": rid}, principal=PRINCIPAL)
            assert reply.status == 200 and reply.body is not None
            t = _openai_tokens(json.loads(reply.body)["usage"])
            expected[rid] = (t, _cost(t))
            ids[rid] = reply.headers["x-request-id"]

        # the test is only meaningful if every kind of token really occurred
        assert expected["ledger-a0"][0][2] > 0, "no cache write on the first Anthropic call"
        assert expected["ledger-a1"][0][3] > 0, "no cache read on the second Anthropic call"
        assert expected["ledger-s"][0][3] > 0, "no cache read on the stream"
        assert expected["ledger-o1"][0][3] > 0, "no cached tokens on the second OpenAI call"

        store = open_store(cfg.store.url)
        try:
            rows: dict[str, CallRecord] = {}
            end = time.monotonic() + 5
            while time.monotonic() < end:  # records are written off the request path
                by_id = {r.request_id: r for r in await store.recent_calls(100)}
                rows = {rid: by_id[sid] for rid, sid in ids.items() if sid in by_id}
                if expected.keys() <= rows.keys():
                    break
                await asyncio.sleep(0.05)
            assert expected.keys() <= rows.keys(), f"not flushed: {sorted(rows)}"
            spent = await store.spend_by_day(DayClock().day())
        finally:
            await store.close()

    for rid, (tokens, cost) in expected.items():
        r = rows[rid]
        got = (r.input_tokens, r.output_tokens, r.cache_write_tokens, r.cache_read_tokens)
        assert got == tokens, rid
        assert r.cost_usd == pytest.approx(cost, rel=1e-9, abs=1e-12), rid
    assert sum(spent.values()) == pytest.approx(sum(c for _, c in expected.values()), rel=1e-9)


# -- unpriced models -----------------------------------------------------------------------

# the simulator's own models are always priced, so the unpriced model sits behind a real kind
VENDOR = {"vendor": {"kind": "openai-compatible", "base_url": "http://127.0.0.1:9/v1"}}
UNPRICED = {"mystery": {"deployments": [{"provider": "vendor", "model": "acme-llm-1"}]}}


def test_serve_refuses_to_start_with_a_cap_over_an_unpriced_model(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path, providers=VENDOR, models=UNPRICED, cost={"caps": {"global_daily_usd": 10.0}}
    )
    try:
        proc = subprocess.run(
            [str(BIN / "bastion"), "serve", "--config", str(cfg), "--port", "0"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise AssertionError("bastion serve started with a cap it cannot price") from None
    assert proc.returncode != 0
    assert "acme-llm-1" in proc.stderr
    assert "price" in proc.stderr


@pytest.mark.parametrize(
    "sections",
    [
        {"cost": {"caps": {"per_user_daily_usd": 1.0}}},
        {"cost": {"caps": {"per_key_daily_usd": 1.0}}},
        {"features": {"default": {"daily_budget_usd": 1.0}}},
    ],
    ids=["per_user", "per_key", "feature"],
)
def test_every_kind_of_cap_needs_prices(tmp_path: Path, sections: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="acme-llm-1"):
        Gateway(inproc_config(tmp_path, providers=VENDOR, models=UNPRICED, **sections))


def test_unpriced_model_without_a_cap_is_allowed(tmp_path: Path) -> None:
    gw = Gateway(inproc_config(tmp_path, providers=VENDOR, models=UNPRICED))
    assert not gw.budget.configured

"""A failed unary Gemini answer is billed: its usage counts on the record, the spend and the TPM.

Gemini answers a candidate that stopped on the model's failure (``finishReason``
``MALFORMED_FUNCTION_CALL``, ``OTHER`` …) with a 200 and a ``usageMetadata``, and Google bills
those tokens. The gateway answers it as a 502 and fails over; before, the attempt was
recorded with zero usage and its reservation released, so the spend cap and the token limits
never saw what Google charged. Now the attempt keeps the usage Google reported: its
reservation is settled at that price, the call's usage (the record, the TPM charge) counts
it, and the record says so (flag ``billed_failed_attempts``).

Through the in-process Gemini simulator (``sim://gemini``), told the finish reason by
``x-sim-gemini-finish-reason``; budget operations seen through ``RecordingState``.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from _cost_support import PRINCIPAL, RecordingState, inproc_config
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.call import Attempt, Call, Principal, Usage
from bastion.cost.meter import BILLED_FAILED_FLAG, CostMeter
from bastion.cost.pricing import Price, PriceTable
from bastion.errors import BastionError, RateLimited
from bastion.gateway import Gateway
from bastion.providers.base import Format
from bastion.providers.gemini import billed_usage
from bastion.providers.sim.gemini_wire import FINISH_REASON_HEADER
from bastion.state import MemoryCounterStore
from bastion.store import open_store
from bastion.store.models import CallRecord

MODEL = "gemini-2.5-flash"
KEY_ENV = "TIDY_GEM_KEY"
MSG = [{"role": "user", "content": "hello there"}]


def _gem(reason: str | None = None) -> dict[str, Any]:
    headers = {FINISH_REASON_HEADER: reason} if reason else {}
    return {"provider": "gem", "model": MODEL, "headers": headers}


def _config(tmp: Path, **sections: Any) -> Any:
    return inproc_config(
        tmp,
        providers={"gem": {"kind": "gemini", "base_url": "sim://gemini", "api_key_env": KEY_ENV}},
        models={
            "failed": {"deployments": [_gem("MALFORMED_FUNCTION_CALL")]},
            "failed-then-ok": {"deployments": [_gem("OTHER"), _gem()]},
            "ok": {"deployments": [_gem()]},
        },
        cost={"caps": {"global_daily_usd": 100.0}, **sections.pop("cost", {})},
        reliability={"retry": {"attempts_per_deployment": 1}, "breaker": {"enabled": False}},
        **sections,
    )


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "tidy-gemini-key")


async def _call(gw: Gateway, model: str, rid: str) -> Any:
    raw = json.dumps({"model": model, "max_tokens": 64, "messages": MSG}).encode()
    return await gw.handle(Format.OPENAI, raw, {"x-request-id": rid}, principal=PRINCIPAL)


async def _records(tmp: Path) -> dict[str, CallRecord]:
    async with open_store(f"sqlite:///{tmp / 'bastion.db'}") as store:
        return {r.client_request_id or r.request_id: r for r in await store.recent_calls(50)}


async def test_a_failed_answer_alone_is_recorded_and_settled_with_its_usage(
    tmp_path: Path,
) -> None:
    state = RecordingState(MemoryCounterStore())
    async with Gateway(_config(tmp_path), state=state) as gw:
        cap = f"spend:{gw.clock.day()}:global"
        with pytest.raises(BastionError) as err:
            await _call(gw, "failed", "failed-1")
        assert err.value.http_status() == 502
        spent = await state.usage(cap)
    kinds = [op for op, _, _ in state.log]
    assert kinds == ["reserve", "settle"], state.log  # settled at its price, not released
    settled = state.log[1][2]
    assert settled is not None and settled > 0 and spent.settled == pytest.approx(settled)
    assert spent.reserved == 0.0
    rec = (await _records(tmp_path))["failed-1"]
    assert rec.status == 502 and rec.input_tokens > 0
    assert rec.cost_usd == pytest.approx(settled)
    assert rec.flags[BILLED_FAILED_FLAG] == 1


async def test_a_failed_answer_then_the_fallback_counts_both(tmp_path: Path) -> None:
    state = RecordingState(MemoryCounterStore())
    async with Gateway(_config(tmp_path), state=state) as gw:
        ok = await _call(gw, "ok", "ok-1")
        both = await _call(gw, "failed-then-ok", "both-1")
        assert ok.status == 200 and both.status == 200
        answered = json.loads(both.body)["usage"]
    recs = await _records(tmp_path)
    one, two = recs["ok-1"], recs["both-1"]
    # the caller is told its answer's usage; the record holds what was billed for the call
    assert answered["prompt_tokens"] == one.input_tokens
    assert two.input_tokens == 2 * one.input_tokens
    assert two.output_tokens > one.output_tokens
    assert two.cost_usd > one.cost_usd and two.attempts == 2 and two.failover
    assert two.flags[BILLED_FAILED_FLAG] == 1
    settles = [amount for op, _, amount in state.log if op == "settle"]
    assert len(settles) == 3 and all(a is not None and a > 0 for a in settles), state.log


async def test_the_failed_answer_s_tokens_are_charged_to_the_tpm(tmp_path: Path) -> None:
    # fewer tokens a minute than one billed failure: charged, it refuses the next call
    cfg = _config(tmp_path, cost={"rate_limits": {"per_key": {"tokens_per_minute": 5.0}}})
    async with Gateway(cfg, state=MemoryCounterStore()) as gw:
        with pytest.raises(BastionError) as first:
            await _call(gw, "failed", "tpm-1")
        assert not isinstance(first.value, RateLimited)
        with pytest.raises(RateLimited) as second:
            await _call(gw, "ok", "tpm-2")
        assert second.value.scope == "key_tokens_per_minute"


# -- properties ------------------------------------------------------------------------------

counts = st.integers(min_value=0, max_value=10**7)


@settings(max_examples=100, deadline=None)
@given(prompt=counts, cand=counts, thoughts=counts, cached=counts)
def test_billed_usage_is_what_usage_metadata_says(
    prompt: int, cand: int, thoughts: int, cached: int
) -> None:
    cached = min(cached, prompt)
    meta = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": cand,
        "thoughtsTokenCount": thoughts,
        "cachedContentTokenCount": cached,
    }
    got = billed_usage({"candidates": [{"finishReason": "OTHER"}], "usageMetadata": meta})
    assert got == Usage(prompt - cached, cand + thoughts, cached, 0)
    assert billed_usage({"candidates": [{"finishReason": "OTHER"}]}) is None


usages = st.builds(Usage, counts, counts, counts, counts)
attempts = st.lists(
    st.tuples(st.sampled_from(["hedge_loser", "billed_failure", "error", "unknown"]), usages),
    max_size=6,
)
FIELDS = [f.name for f in fields(Usage)]
PRICES = PriceTable({MODEL: Price(input=1.0, output=10.0, cache_write=1.0, cache_read=0.1)})


def _copy(u: Usage) -> Usage:
    return Usage(*(getattr(u, f) for f in FIELDS))


@settings(max_examples=200, deadline=None)
@given(plan=attempts, answer=usages)
async def test_the_call_counts_every_billed_failure_once(
    plan: list[tuple[str, Usage]], answer: Usage
) -> None:
    """Whatever came before the answer, the call's usage is the answer's plus every billed
    failure's, once; nothing else (an error answer, a timeout, a hedge's loser) adds to it."""
    call = Call(
        request_id="r",
        trace_id="t",
        span_id="s",
        client_format=Format.OPENAI,
        principal=Principal("k", "k"),
        body={"model": MODEL, "messages": MSG},
        requested_model=MODEL,
        stream=False,
    )
    expected = _copy(answer)
    billed = 0
    for kind, u in plan:
        a = Attempt("gem", "gem", MODEL, provider_kind="gemini", sent=True)
        if kind == "hedge_loser":
            a.status, a.usage = 200, u
        elif kind == "billed_failure":
            a.status, a.error, a.usage = 502, "server", u
            if u.input_tokens or u.output_tokens:
                billed += 1
                for f in FIELDS:
                    setattr(expected, f, getattr(expected, f) + getattr(u, f))
        elif kind == "error":
            a.status, a.error, a.usage = 500, "server", Usage()
        else:
            a.error = "timeout"  # outcome unknown: settled at its reservation
        call.attempts.append(a)
    call.attempts.append(Attempt("gem", "gem", MODEL, 200, provider_kind="gemini", sent=True))
    call.attempts[-1].usage = _copy(answer)
    call.usage = _copy(answer)
    await CostMeter(PRICES).after(call, None)
    assert call.usage == expected
    assert call.flags.get(BILLED_FAILED_FLAG, 0) == billed
    failed = [a for a in call.attempts if a.error == "server" and a.status == 502]
    assert all(
        a.cost_usd > 0
        for a in failed
        if a.usage and (a.usage.input_tokens or a.usage.output_tokens)
    )
    assert call.cost_usd == pytest.approx(sum(a.cost_usd for a in call.attempts))

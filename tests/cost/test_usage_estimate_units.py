"""The estimate a call gets when its answer's final usage never came (cost/tokens.py, meter.py).

Units and properties: the estimate never goes below what was reported or what the relayed
text can be in tokens (each byte-level BPE token covers at least one UTF-8 byte), falls back
to the request's bounds when nothing was counted, and the meter replaces the usage only of
the attempt that answered (a hedge's cancelled loser never overwrites the winner's usage).
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.call import Attempt, Call, Principal, ToolCallOut, Usage
from bastion.cost.meter import ESTIMATED_FLAG, CostMeter
from bastion.cost.pricing import Price, PriceTable
from bastion.cost.tokens import (
    estimated_usage,
    input_upper_bound,
    output_upper_bound,
    relayed_output_bound,
)
from bastion.providers.base import Format

PRICES = PriceTable({"m": Price(input=1.0, output=10.0, cache_write=1.0, cache_read=0.1)})


def _call(content: str = "hello there", max_tokens: int = 50) -> Call:
    body = {
        "model": "m",
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": content}],
    }
    call = Call(
        request_id="r",
        trace_id="t",
        span_id="s",
        client_format=Format.OPENAI,
        principal=Principal("k", "k"),
        body=body,
        requested_model="m",
        stream=True,
    )
    call.body_bytes = len(json.dumps(body))
    return call


def _attempt(status: int | None, usage: Usage | None, reserved: float = 0.0) -> Attempt:
    a = Attempt("d", "p", "m", status=status, provider_kind="openai", sent=True, usage=usage)
    if reserved:
        a.reservation_id, a.reserved_usd = "rid", reserved
    return a


@given(
    pieces=st.lists(st.text(min_size=1, max_size=12), max_size=30),
    reported=st.integers(0, 50),
)
def test_the_output_estimate_bounds_the_relayed_tokens_and_keeps_what_was_reported(
    pieces: list[str], reported: int
) -> None:
    call = _call()
    call.output_text = list(pieces)
    call.usage.output_tokens = reported
    est = estimated_usage(call)
    text_bytes = len("".join(pieces).encode("utf-8", "surrogatepass"))
    assert relayed_output_bound(call) == text_bytes
    assert est.output_tokens >= len(pieces) and est.output_tokens >= reported
    if pieces:
        assert est.output_tokens == max(reported, text_bytes)
    else:  # nothing to count: the most the request could have produced
        assert est.output_tokens == max(reported, output_upper_bound(call.body))


@given(content=st.text(max_size=200), reported=st.integers(0, 500))
def test_the_input_estimate_is_the_admission_bound_unless_the_provider_said(
    content: str, reported: int
) -> None:
    call = _call(content)
    call.usage.input_tokens = reported
    est = estimated_usage(call)
    if reported:
        assert est.input_tokens == reported
    else:
        assert est.input_tokens == input_upper_bound(call.body, call.body_bytes) > 0


def test_cached_input_counts_as_reported() -> None:
    call = _call()
    call.usage = Usage(input_tokens=0, cache_read_tokens=900)
    assert estimated_usage(call).input_tokens == 0  # all of it was read from the cache


def test_tool_calls_count_their_name_arguments_and_framing() -> None:
    call = _call()
    call.tool_calls = [ToolCallOut("id", "lookup", '{"q": "é"}')]
    assert relayed_output_bound(call) == len("lookup") + len('{"q": "é"}'.encode()) + 16


async def test_a_cut_answer_is_estimated_flagged_and_costs_its_hold() -> None:
    call = _call("a" * 400)
    call.output_text = ["Hello ", "wor"]
    call.attempts = [_attempt(200, None, reserved=0.5)]
    await CostMeter(PRICES).after(call, None)
    assert call.flags[ESTIMATED_FLAG] is True and call.flags["cost_bound"] is True
    assert call.usage.input_tokens == input_upper_bound(call.body, call.body_bytes)
    assert call.usage.output_tokens == 9
    assert call.cost_usd == 0.5


async def test_without_a_hold_the_estimate_is_what_it_costs() -> None:
    call = _call()
    call.output_text = ["abcd"]
    call.attempts = [_attempt(200, None)]
    await CostMeter(PRICES).after(call, None)
    u = call.usage
    assert call.cost_usd == pytest.approx((u.input_tokens * 1.0 + 4 * 10.0) / 1e6)
    assert u.input_tokens > 0


async def test_a_hedges_cancelled_loser_never_replaces_the_winners_usage() -> None:
    call = _call()
    call.usage = Usage(input_tokens=12, output_tokens=7)
    winner = _attempt(200, Usage(12, 7))
    loser = _attempt(None, None, reserved=0.25)  # cancelled after it was sent
    call.attempts = [winner, loser]
    await CostMeter(PRICES).after(call, None)
    assert ESTIMATED_FLAG not in call.flags
    assert (call.usage.input_tokens, call.usage.output_tokens) == (12, 7)
    assert call.cost_usd == pytest.approx((12 + 70) / 1e6 + 0.25)


async def test_a_finished_answer_is_not_estimated() -> None:
    call = _call()
    call.usage = Usage(input_tokens=5, output_tokens=3)
    call.attempts = [_attempt(200, Usage(5, 3))]
    await CostMeter(PRICES).after(call, None)
    assert ESTIMATED_FLAG not in call.flags and call.usage.input_tokens == 5


async def test_a_hedges_loser_without_a_hold_is_not_priced_at_the_winners_answer() -> None:
    call = _call()
    call.usage = Usage(input_tokens=12, output_tokens=700)
    call.attempts = [_attempt(200, Usage(12, 700)), _attempt(None, None)]
    await CostMeter(PRICES).after(call, None)
    loser = call.attempts[1]
    assert loser.cost_usd == pytest.approx((call.body_bytes // 4) / 1e6)
    assert call.cost_usd == pytest.approx((12 + 7000) / 1e6 + loser.cost_usd)

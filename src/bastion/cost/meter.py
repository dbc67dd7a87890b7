"""Prices each finished call as the sum of its attempts, each at its own model's price."""

from __future__ import annotations

from ..call import Attempt, Call, Usage
from .caching import savings_usd
from .pricing import PriceTable
from .tokens import estimated_usage

ESTIMATED_FLAG = "usage_estimated"
BILLED_FAILED_FLAG = "billed_failed_attempts"  # failed attempts whose usage the call counts


class CostMeter:
    """Sets each attempt's ``cost_usd`` and the call's total; unpriced models are flagged.

    An attempt whose outcome is unknown (sent, then timed out, cancelled or cut before its
    final usage) may have been billed in full, so it costs its reservation; without one, the
    estimate the call has. When the answer's own attempt never reported its usage, the call's
    usage becomes a conservative estimate (``tokens.estimated_usage``: the admission bound of
    the input, the relayed output's byte count) flagged ``usage_estimated``, so the record and
    the token limits settled after the meter never read a cut stream as 0 input tokens.
    """

    name = "cost"

    def __init__(self, prices: PriceTable) -> None:
        self._prices = prices

    def _attempt_cost(self, call: Call, a: Attempt) -> float:
        price = self._prices.for_deployment(a.model, a.provider_kind or call.provider_kind)
        if a.usage is not None:
            if price is None:
                if a.usage.input_tokens or a.usage.output_tokens:
                    call.flags["unpriced_model"] = a.model
                return 0.0
            return price.cost(a.usage)
        if not a.sent:
            return 0.0
        call.flags["cost_bound"] = True
        if a.reservation_id is not None:
            return a.reserved_usd
        if price is None:
            return 0.0
        answered = _answering(call) is a  # else a cancelled hedge or a cut part carried on
        return price.cost(call.usage if answered else Usage(input_tokens=call.body_bytes // 4))

    async def after(self, call: Call, error: BaseException | None) -> None:
        answer = _answering(call)
        if answer is not None and answer.usage is None and answer.sent:
            # its final usage never came: the call's usage so far is only what came before it
            call.usage = estimated_usage(call)
            call.flags[ESTIMATED_FLAG] = True
        total = 0.0
        for a in call.attempts:
            a.cost_usd = self._attempt_cost(call, a)
            total += a.cost_usd
        call.cost_usd = total
        _add_billed_failures(call)
        u = call.usage
        if not (u.cache_read_tokens or u.cache_write_tokens):
            return
        model = call.served_model or call.requested_model
        price = self._prices.for_deployment(model, call.provider_kind)
        if price is None and call.attempts:
            price = self._prices.for_deployment(call.attempts[-1].model, call.provider_kind)
        if price is not None:
            call.flags["cache_savings_usd"] = round(
                savings_usd(
                    u.cache_read_tokens,
                    u.cache_write_tokens,
                    price.input,
                    price.cache_read,
                    price.cache_write,
                ),
                8,
            )


def _add_billed_failures(call: Call) -> None:
    """A failed attempt the provider billed all the same (engine: ``BufferedResponse.billed``;
    every other failed attempt has no usage or none at all) counts in the call's usage, as a
    cut stream's part or a repaired answer's first do: the record and the token limits settled
    after the meter see every billed token, not only the answer's."""
    n = 0
    u = call.usage
    for a in call.attempts:
        b = a.usage
        if a.error is None or b is None or not (b.input_tokens or b.output_tokens):
            continue
        n += 1
        u.input_tokens += b.input_tokens
        u.output_tokens += b.output_tokens
        u.cache_read_tokens += b.cache_read_tokens
        u.cache_write_tokens += b.cache_write_tokens
    if n:
        call.flags[BILLED_FAILED_FLAG] = n


def _answering(call: Call) -> Attempt | None:
    """The attempt whose answer the call's usage counts: the last that answered (a hedge's
    cancelled loser or a stream's cut part may come after or before it), else the last sent."""
    for a in reversed(call.attempts):
        if a.status == 200:
            return a
    return call.attempts[-1] if call.attempts else None

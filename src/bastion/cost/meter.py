"""Prices each finished call from its own usage (every attempt that produced tokens included)."""

from __future__ import annotations

from ..call import Call
from .pricing import PriceTable


class CostMeter:
    """Sets ``call.cost_usd`` locally; an unpriced model is flagged rather than guessed."""

    name = "cost"

    def __init__(self, prices: PriceTable) -> None:
        self._prices = prices

    async def after(self, call: Call, error: BaseException | None) -> None:
        model = call.served_model or call.requested_model
        price = self._prices.get(model)
        if price is None and call.attempts:
            price = self._prices.get(call.attempts[-1].model)
        if price is None:
            if call.usage.input_tokens or call.usage.output_tokens:
                call.flags["unpriced_model"] = model
            return
        call.cost_usd = price.cost(call.usage) + float(call.flags.get("extra_cost_usd", 0.0))

"""Prices each finished call from its own usage (every attempt that produced tokens included)."""

from __future__ import annotations

from ..call import Call, Usage
from .caching import savings_usd
from .pricing import PriceTable


class CostMeter:
    """Sets ``call.cost_usd`` locally; an unpriced model is flagged rather than guessed."""

    name = "cost"

    def __init__(self, prices: PriceTable) -> None:
        self._prices = prices

    def _losers(self, call: Call) -> float:
        """Hedged attempts that lost were billed by their provider as well."""
        total = 0.0
        for lost in call.flags.get("hedge_losers", ()):
            p = self._prices.for_deployment(lost["model"], lost["kind"])
            if p is not None:
                total += p.cost(
                    Usage(input_tokens=lost["input_tokens"], output_tokens=lost["output_tokens"])
                )
        return total

    async def after(self, call: Call, error: BaseException | None) -> None:
        model = call.served_model or call.requested_model
        price = self._prices.for_deployment(model, call.provider_kind)
        if price is None and call.attempts:
            price = self._prices.for_deployment(call.attempts[-1].model, call.provider_kind)
        if price is None:
            if call.usage.input_tokens or call.usage.output_tokens:
                call.flags["unpriced_model"] = model
            return
        u = call.usage
        call.cost_usd = price.cost(u) + self._losers(call)
        if u.cache_read_tokens or u.cache_write_tokens:
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

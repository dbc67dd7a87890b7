"""The price table: cost is computed locally from each response's usage, never asked of the provider.

Prices are USD per million tokens, versioned by the date they were checked,
and overridable in config (``pricing:``). Names match exactly first, then by the
longest matching prefix, so dated snapshots (``claude-sonnet-4-5-20250929``)
price like their family.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from ..call import Usage

PRICE_TABLE_VERSION = "2026-11-01"


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens; cache writes and reads priced separately from fresh input."""

    input: float
    output: float
    cache_write: float
    cache_read: float

    def cost(self, u: Usage) -> float:
        return (
            u.input_tokens * self.input
            + u.output_tokens * self.output
            + u.cache_write_tokens * self.cache_write
            + u.cache_read_tokens * self.cache_read
        ) / 1_000_000.0

    def worst_case(self, input_tokens: int, max_tokens: int) -> float:
        """An upper bound for a call: every input token at the dearest input rate, full max_tokens out."""
        dearest_in = max(self.input, self.cache_write, self.cache_read)
        return (input_tokens * dearest_in + max_tokens * self.output) / 1_000_000.0


def _anthropic(inp: float, out: float) -> Price:
    # 5-minute cache writes cost 1.25x input, cache hits 0.1x
    return Price(inp, out, inp * 1.25, inp * 0.1)


def _openai(inp: float, out: float, cached: float) -> Price:
    # OpenAI bills no separate cache write; cached prompt tokens at the cached rate
    return Price(inp, out, inp, cached)


BUILTIN_PRICES: Mapping[str, Price] = {
    # Anthropic
    "claude-opus-4-1": _anthropic(15.0, 75.0),
    "claude-opus-4-0": _anthropic(15.0, 75.0),
    "claude-opus-4-5": _anthropic(5.0, 25.0),
    "claude-opus-4-6": _anthropic(5.0, 25.0),
    "claude-opus-5": _anthropic(5.0, 25.0),
    "claude-sonnet-4": _anthropic(3.0, 15.0),
    "claude-sonnet-4-5": _anthropic(3.0, 15.0),
    "claude-sonnet-5": _anthropic(2.0, 10.0),
    "claude-sonnet-5-5": Price(2.0, 10.0, 2.5, 0.1),
    "claude-haiku-5-5": _anthropic(0.1, 0.5),
    "claude-3-7-sonnet": _anthropic(3.0, 15.0),
    "claude-haiku-4-5": _anthropic(1.0, 5.0),
    "claude-3-5-haiku": _anthropic(0.8, 4.0),
    # OpenAI
    "gpt-4.1": _openai(2.0, 8.0, 0.5),
    "gpt-4.1-mini": _openai(0.4, 1.6, 0.1),
    "gpt-4.1-nano": _openai(0.1, 0.4, 0.025),
    "gpt-4o": _openai(2.5, 10.0, 1.25),
    "gpt-4o-mini": _openai(0.15, 0.6, 0.075),
    "gpt-5": _openai(1.25, 10.0, 0.125),
    "gpt-5-mini": _openai(0.25, 2.0, 0.025),
    "gpt-5-nano": _openai(0.05, 0.4, 0.005),
    "o3": _openai(2.0, 8.0, 0.5),
    "o4-mini": _openai(1.1, 4.4, 0.275),
    # Google Gemini (Developer API, prompts up to 200k tokens): cached input at 10%, no
    # separate cache write (storage is billed per hour outside a call)
    "gemini-3.1-pro": _openai(2.0, 12.0, 0.2),
    "gemini-3-flash": _openai(0.5, 3.0, 0.05),
    "gemini-2.5-pro": _openai(1.25, 10.0, 0.125),
    "gemini-2.5-flash": _openai(0.3, 2.5, 0.03),
    "gemini-2.5-flash-lite": _openai(0.1, 0.4, 0.01),
    "gemini-2.0-flash": _openai(0.1, 0.4, 0.025),
    # OpenAI embeddings: input tokens only
    "text-embedding-3-small": Price(0.02, 0.0, 0.02, 0.02),
    "text-embedding-3-large": Price(0.13, 0.0, 0.13, 0.13),
    "text-embedding-ada-002": Price(0.1, 0.0, 0.1, 0.1),
    # the simulator's own models
    "sim-": _anthropic(1.0, 5.0),
}


# A Bedrock model id is [geography.]vendor.model[-vN[:M]] ("us.anthropic.claude-sonnet-4-5-
# 20250929-v1:0"): unless the table names it, it is priced as the vendor's own model (Bedrock's
# on-demand list prices for these models are the vendor's; regional endpoints may add ~10%)
_BEDROCK_ID = re.compile(r"^(?:[a-z]{2,6}(?:-[a-z]+)?\.)?[a-z0-9-]+\.(.+?)(?:-v\d+(?::\d+)?)?$")


class PriceTable:
    """Built-in prices with config overrides on top; lookups are cached per model name."""

    __slots__ = ("_cache", "_prices")

    def __init__(self, overrides: Mapping[str, Price] | None = None) -> None:
        self._prices: dict[str, Price] = {**BUILTIN_PRICES, **(overrides or {})}
        self._cache: dict[str, Price | None] = {}

    def get(self, model: str) -> Price | None:
        if model in self._cache:
            return self._cache[model]
        price = self._prices.get(model)
        if price is None:
            best = ""
            for name in self._prices:
                if model.startswith(name) and len(name) > len(best):
                    best = name
            price = self._prices[best] if best else None
        if len(self._cache) < 4096:
            self._cache[model] = price
        return price

    def for_deployment(self, model: str, provider_kind: str | None) -> Price | None:
        """The simulator's models are priced as ``sim-`` unless the table names them."""
        price = self.get(model)
        if price is None and provider_kind == "sim":
            price = self._prices.get("sim-")
        if price is None and provider_kind == "bedrock" and (m := _BEDROCK_ID.match(model)):
            price = self.get(m.group(1))
        return price

    def cost(self, model: str, usage: Usage) -> float | None:
        p = self.get(model)
        return None if p is None else p.cost(usage)

"""Prompt caching on the stable prefix: Anthropic breakpoints, OpenAI prefix order and cache key.

Anthropic caches only up to explicit ``cache_control`` breakpoints (at most 4 per
request, each prefix at least the model's minimum cacheable length). We place
them on the stable prefix — the tool definitions, the system prompt, and the
leading messages the caller marks stable (``X-Bastion-Stable-Messages: N``, or a
prompt template's documents) — never on the per-request user turn, since caching
user content can cross-contaminate and saves nothing. OpenAI caches automatically
by prefix: we keep the request order as is (stable parts first) and pass a
``prompt_cache_key`` derived from the feature and system prompt so calls that
share a prefix land on the same cache. Which of the two a body gets is its wire format's
(``dialects``: ``Wire.prompt_caching``).
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

MAX_BREAKPOINTS = 4
EPHEMERAL = {"type": "ephemeral"}


def min_cacheable_tokens(model: str) -> int:
    """The providers' documented minimum prefix length for caching (Haiku needs more)."""
    return 2048 if "haiku" in model else 1024


def _existing(body: dict[str, Any]) -> int:
    n = 0
    for t in body.get("tools") or ():
        if isinstance(t, dict) and "cache_control" in t:
            n += 1
    sys = body.get("system")
    if isinstance(sys, list):
        n += sum(1 for b in sys if isinstance(b, dict) and "cache_control" in b)
    for m in body.get("messages") or ():
        c = m.get("content") if isinstance(m, dict) else None
        if isinstance(c, list):
            n += sum(1 for b in c if isinstance(b, dict) and "cache_control" in b)
    return n


def _tokens(obj: Any) -> int:
    # an estimate is right here: a breakpoint below the minimum is merely ignored by the provider
    return len(orjson.dumps(obj)) // 4


def add_anthropic_breakpoints(body: dict[str, Any], stable_messages: int, model: str) -> int:
    """Mark the stable prefix in an Anthropic body (mutated); returns how many breakpoints were added."""
    budget = MAX_BREAKPOINTS - _existing(body)
    if budget <= 0:
        return 0
    minimum = min_cacheable_tokens(model)
    added = 0
    prefix = 0
    # copy each list we touch: the body is a shallow copy of the client's request
    tools = body.get("tools")
    if isinstance(tools, list) and tools and isinstance(tools[-1], dict):
        tools = body["tools"] = list(tools)
        prefix += _tokens(tools)
        if prefix >= minimum and "cache_control" not in tools[-1] and added < budget:
            tools[-1] = {**tools[-1], "cache_control": EPHEMERAL}
            added += 1
    sys = body.get("system")
    if sys:
        sys = [{"type": "text", "text": sys}] if isinstance(sys, str) else list(sys)
        body["system"] = sys
        if isinstance(sys, list) and isinstance(sys[-1], dict):
            prefix += _tokens(sys)
            if prefix >= minimum and "cache_control" not in sys[-1] and added < budget:
                sys[-1] = {**sys[-1], "cache_control": EPHEMERAL}
                added += 1
    msgs = body.get("messages")
    if isinstance(msgs, list) and stable_messages > 0:
        msgs = body["messages"] = list(msgs)
        # never the last message: that is the per-request turn
        last_stable = min(stable_messages, len(msgs) - 1) - 1
        if last_stable >= 0:
            prefix += _tokens(msgs[: last_stable + 1])
            m = msgs[last_stable]
            if prefix >= minimum and isinstance(m, dict) and added < budget:
                content = m.get("content")
                if isinstance(content, str):
                    content = [{"type": "text", "text": content}]
                if (
                    isinstance(content, list)
                    and content
                    and isinstance(content[-1], dict)
                    and "cache_control" not in content[-1]
                ):
                    content = [*content[:-1], {**content[-1], "cache_control": EPHEMERAL}]
                    msgs[last_stable] = {**m, "content": content}
                    added += 1
    return added


def openai_cache_key(body: dict[str, Any], feature: str | None) -> str:
    """Same feature and system prompt → same key, so the provider routes to a warm cache."""
    h = hashlib.blake2b(digest_size=12)
    h.update((feature or "default").encode())
    for m in body.get("messages") or ():
        if isinstance(m, dict) and m.get("role") in ("system", "developer"):
            h.update(orjson.dumps(m.get("content")))
    return "bastion-" + h.hexdigest()


def savings_usd(
    cache_read: int, cache_write: int, input_price: float, read_price: float, write_price: float
) -> float:
    """What caching saved on this call versus sending every token as fresh input (can be negative)."""
    return (
        cache_read * (input_price - read_price) - cache_write * (write_price - input_price)
    ) / 1e6

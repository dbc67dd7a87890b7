"""``POST /v1/messages/count_tokens``: forwarded to Anthropic, estimated (and said so) elsewhere.

Anthropic counts tokens for free and exactly, so a model whose first deployment is a real
Anthropic one gets the provider's own answer. Every other route (the simulator, OpenAI, any
OpenAI-compatible server) has no such endpoint: the count is the gateway's local estimate and
the response says so in ``x-bastion-token-count: estimate``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson

from .cost.tokens import estimate_input
from .errors import InvalidRequest, UpstreamError
from .providers.base import Format
from .reliability.router import Router
from .schema import parse_body

__all__ = ["count_tokens"]

ESTIMATE_HEADER = "x-bastion-token-count"


def _check(body: dict[str, Any]) -> None:
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise InvalidRequest("model: required string", param="model")
    if not isinstance(body.get("messages"), list):
        raise InvalidRequest("messages: required array", param="messages")


async def count_tokens(
    router: Router, raw: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of a token count for the caller's request."""
    body = parse_body(raw)
    _check(body)
    deployments = router.resolve(body["model"])  # unknown model: 404
    first = deployments[0]
    if first.endpoint.kind == "anthropic":
        upstream = {**body, "model": first.model}
        req = first.endpoint.build(
            upstream,
            Format.ANTHROPIC,
            stream=False,
            extra_headers=first.headers,
            passthrough={
                k: v for k, v in headers.items() if k in ("anthropic-version", "anthropic-beta")
            },
        )
        req = replace(req, url=req.url + "/count_tokens")
        resp = await first.transport.send(req, timeout=first.timeouts.connect + 10.0)
        try:
            data: bytes = await resp.read()
        finally:
            await resp.aclose()
        if resp.status == 200:
            return 200, {"content-type": "application/json"}, data
        raise UpstreamError(f"the provider could not count tokens (HTTP {resp.status})")
    n = estimate_input(body, len(raw))
    return (
        200,
        {"content-type": "application/json", ESTIMATE_HEADER: "estimate"},
        orjson.dumps({"input_tokens": n}),
    )

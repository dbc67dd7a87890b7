"""Bastion over HTTP: the official ``anthropic`` SDK with ``base_url`` pointed at ``bastion serve``.

The same events as the library mode, the per-call context in Bastion's headers
(``X-Bastion-User``, ``-Feature``, ``-Conversation``, ``-Prompt-Version``, ``traceparent``),
and the gateway's degraded answer (HTTP 503 ``ai_unavailable``) turned into
``DraftingUnavailable``. The kill-switch button uses the gateway's admin API, so it needs
a key with the admin role (``--admin-key``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic

from .backends import CallContext, DraftingUnavailable
from .settings import FEATURE

STATUS_TTL = 0.5


class GatewayBackend:
    """A running ``bastion serve``, through the official anthropic SDK."""

    mode = "gateway"

    def __init__(self, url: str, key: str, admin_key: str | None = None) -> None:
        self.url = url
        self.dashboard_url: str | None = f"{url}/dashboard"
        self._admin_key = admin_key
        # Bastion retries and fails over itself; SDK retries on top would multiply attempts
        self.client = anthropic.AsyncAnthropic(
            base_url=url, api_key=key, max_retries=0, timeout=anthropic.Timeout(120.0, connect=5.0)
        )
        self._http: aiohttp.ClientSession | None = None
        self._status: bool | None = None
        self._status_at = -STATUS_TTL  # every open page polls: ask the gateway at most this often

    def describe(self) -> str:
        return f"Bastion gateway at {self.url} (anthropic SDK)"

    async def stream(self, body: dict[str, Any], ctx: CallContext) -> AsyncIterator[dict[str, Any]]:
        try:
            raw = await self.client.messages.with_raw_response.create(
                **body, stream=True, extra_headers=ctx.headers()
            )
            ctx.response_headers = {k.lower(): v for k, v in raw.headers.items()}
            events: Any = await raw.parse()
            async for event in events:
                yield event.to_dict()
        except anthropic.APIStatusError as exc:
            raise DraftingUnavailable(_status_reason(exc), exc.message) from exc
        except anthropic.APIError as exc:  # connection refused, timeout, broken stream
            raise DraftingUnavailable("gateway_unreachable", str(exc)) from exc

    async def _admin(self, method: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        if self._admin_key is None:
            raise PermissionError("start the app with --admin-key to use the kill switch from here")
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        async with self._http.request(
            method, f"{self.url}/admin/kill", json=payload, headers={"x-api-key": self._admin_key}
        ) as resp:
            data: dict[str, Any] = await resp.json(content_type=None)
            if resp.status != 200:
                raise PermissionError(str(data.get("error", data)))
            return data

    async def set_ai(self, on: bool, *, who: str) -> None:
        await self._admin("POST", {"on": not on, "feature": FEATURE, "who": who})
        self._status_at = -STATUS_TTL  # show the flip at once

    async def ai_on(self) -> bool | None:
        """None when unknown (no admin key, gateway down): the draft attempt will tell."""
        now = time.monotonic()
        if now - self._status_at < STATUS_TTL:
            return self._status
        try:
            data = await self._admin("GET")
            switches = data.get("switches", {})
            self._status = not any(k in switches for k in ("global", f"feature:{FEATURE}"))
        except (PermissionError, aiohttp.ClientError, TimeoutError):
            self._status = None
        self._status_at = now
        return self._status

    async def aclose(self) -> None:
        await self.client.close()
        if self._http is not None:
            await self._http.close()


def _status_reason(exc: anthropic.APIStatusError) -> str:
    """Bastion's degraded answer is HTTP 503 ``ai_unavailable`` with a reason; name it."""
    body = exc.body if isinstance(exc.body, dict) else {}
    err = body.get("error") if isinstance(body.get("error"), dict) else body
    if isinstance(err, dict):
        if err.get("type") == "ai_unavailable":
            return str(err.get("reason") or "ai_unavailable")
        if err.get("type") == "budget_exceeded" or err.get("code") == "budget_exceeded":
            return "budget_exceeded"
    if exc.status_code == 429:
        return "budget_exceeded" if "budget" in exc.message.lower() else "rate_limited"
    return f"http_{exc.status_code}"

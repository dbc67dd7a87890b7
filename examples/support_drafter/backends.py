"""The two ways this app reaches Bastion; the drafting logic above them is the same.

``LibraryBackend`` (here) runs the whole pipeline in-process (``Gateway.stream_messages``).
``GatewayBackend`` (``sdk_backend``) calls a running ``bastion serve`` with the official
``anthropic`` SDK pointed at it (``base_url``), the per-call context in Bastion's
headers; it is imported only in that mode. Both yield
Anthropic stream events as dicts and turn every way the AI path can fail — kill switch,
budget, all providers down, a broken stream — into ``DraftingUnavailable``, because for
the agent they all mean the same thing: reply manually.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from bastion import AIUnavailable, BastionError, Gateway
from bastion.reliability.killswitch import flag_key, set_kill

from .settings import FEATURE


class DraftingUnavailable(Exception):
    """Bastion answered degraded (or not at all): the page falls back to a manual reply."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class CallContext:
    """What Bastion records with each call; ``response_headers`` is filled in when known."""

    user: str
    conversation: str
    prompt_version: str
    traceparent: str
    response_headers: dict[str, str] = field(default_factory=dict)

    def response_trace_id(self) -> str | None:
        """The trace id the gateway echoed in ``traceparent`` (SDK mode), if any."""
        parts = self.response_headers.get("traceparent", "").split("-")
        return parts[1] if len(parts) == 4 else None

    def headers(self) -> dict[str, str]:
        return {
            "X-Bastion-User": self.user,
            "X-Bastion-Feature": FEATURE,
            "X-Bastion-Conversation": self.conversation,
            "X-Bastion-Prompt-Version": self.prompt_version,
            "traceparent": self.traceparent,
        }


class Backend(Protocol):
    mode: str
    dashboard_url: str | None

    def describe(self) -> str: ...

    def stream(self, body: dict[str, Any], ctx: CallContext) -> AsyncIterator[dict[str, Any]]: ...

    async def set_ai(self, on: bool, *, who: str) -> None: ...

    async def ai_on(self) -> bool | None: ...

    async def aclose(self) -> None: ...


class LibraryBackend:
    """Bastion in-process: the default."""

    mode = "library"

    def __init__(self, gateway: Gateway, *, dashboard_url: str | None = None) -> None:
        self.gateway = gateway
        self.dashboard_url = dashboard_url

    def describe(self) -> str:
        kinds = ", ".join(f"{n} ({e.kind})" for n, e in self.gateway.endpoints.items())
        return f"Bastion in-process, providers: {kinds}"

    async def stream(self, body: dict[str, Any], ctx: CallContext) -> AsyncIterator[dict[str, Any]]:
        try:
            async for event in self.gateway.stream_messages(
                body,
                user=ctx.user,
                feature=FEATURE,
                conversation=ctx.conversation,
                prompt_version=ctx.prompt_version,
                traceparent=ctx.traceparent,
            ):
                yield event
        except AIUnavailable as exc:
            raise DraftingUnavailable(exc.reason, exc.message) from exc
        except BastionError as exc:  # budget spent, rate limited, provider failed mid-stream
            raise DraftingUnavailable(_reason(type(exc).__name__), exc.message) from exc

    async def set_ai(self, on: bool, *, who: str) -> None:
        """The kill switch for this feature; every replica sharing the state obeys within 0.25 s."""
        await set_kill(self.gateway.state, not on, who=who, feature=FEATURE)
        self.gateway.kill_switch.invalidate()

    async def ai_on(self) -> bool | None:
        flags = await self.gateway.kill_switch.flags()
        return not any(k in flags for k in (flag_key(), flag_key(feature=FEATURE)))

    async def aclose(self) -> None:
        await self.gateway.aclose()


def _reason(error_type: str) -> str:
    return {
        "BudgetExceeded": "budget_exceeded",
        "RateLimited": "rate_limited",
        "OutputBlocked": "output_blocked",
    }.get(error_type, "upstream_error")

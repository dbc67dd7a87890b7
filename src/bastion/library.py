"""The gateway as a library: the same pipeline in-process, called with Python dicts.

``LIBRARY_PRINCIPAL`` is the operator's own code: it may name its end users (they are trusted
as it names them) and they get their own per-user caps. Per-call context (user, feature,
conversation ...) travels as the headers a client would send.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import orjson

from .call import Principal
from .engine import Reply, UpstreamStatusError
from .errors import BastionError
from .identity import END_USERS_ROLE
from .providers.base import Format
from .providers.sse import SSEDecoder

LIBRARY_PRINCIPAL = Principal(key_id="library", name="library", roles=(END_USERS_ROLE,))


class LibraryCalls:
    """``messages`` / ``chat_completions`` and their streams, over ``handle`` (the Gateway's)."""

    async def handle(
        self,
        fmt: Format,
        raw: bytes,
        headers: Mapping[str, str],
        *,
        principal: Principal | None = None,
        admit: Callable[[dict[str, Any], Principal], None] | None = None,
    ) -> Reply:
        raise NotImplementedError  # the Gateway's one path

    async def messages(self, body: Mapping[str, Any], **ctx: str) -> dict[str, Any]:
        """An Anthropic Messages call in-process; returns the response object."""
        return await self._unary(Format.ANTHROPIC, body, ctx)

    async def chat_completions(self, body: Mapping[str, Any], **ctx: str) -> dict[str, Any]:
        """An OpenAI Chat Completions call in-process; returns the response object."""
        return await self._unary(Format.OPENAI, body, ctx)

    def stream_messages(self, body: Mapping[str, Any], **ctx: str) -> AsyncIterator[dict[str, Any]]:
        """An Anthropic streaming call in-process; yields each event's parsed data."""
        return self._stream(Format.ANTHROPIC, body, ctx)

    def stream_chat_completions(
        self, body: Mapping[str, Any], **ctx: str
    ) -> AsyncIterator[dict[str, Any]]:
        """An OpenAI streaming call in-process; yields each chunk's parsed data."""
        return self._stream(Format.OPENAI, body, ctx)

    async def _unary(
        self, fmt: Format, body: Mapping[str, Any], ctx: Mapping[str, str]
    ) -> dict[str, Any]:
        data = {**body, "stream": False}
        reply = await self.handle(
            fmt, orjson.dumps(data), ctx_headers(ctx), principal=LIBRARY_PRINCIPAL
        )
        obj: dict[str, Any] = orjson.loads(reply.body or b"{}")
        return obj

    async def _stream(
        self, fmt: Format, body: Mapping[str, Any], ctx: Mapping[str, str]
    ) -> AsyncIterator[dict[str, Any]]:
        data = {**body, "stream": True}
        reply = await self.handle(
            fmt, orjson.dumps(data), ctx_headers(ctx), principal=LIBRARY_PRINCIPAL
        )
        assert reply.stream is not None
        decoder = SSEDecoder()
        async for chunk in reply.stream:
            for ev in decoder.feed(chunk):
                if ev.data == b"[DONE]":
                    return
                obj = orjson.loads(ev.data)
                if isinstance(obj, dict) and (ev.event == "error" or "error" in obj):
                    err = obj.get("error") or {}
                    raise UpstreamStatusError(502, ev.data, fmt, {}) from BastionError(
                        str(err.get("message", "stream error"))
                    )
                yield obj


def ctx_headers(ctx: Mapping[str, str]) -> dict[str, str]:
    names = {
        "user": "x-bastion-user",
        "feature": "x-bastion-feature",
        "conversation": "x-bastion-conversation",
        "prompt_version": "x-bastion-prompt-version",
        "stable_messages": "x-bastion-stable-messages",
        "retrieval_ms": "x-bastion-retrieval-ms",
        "traceparent": "traceparent",
    }
    out = {}
    for k, v in ctx.items():
        if k not in names:
            raise TypeError(f"unknown call context {k!r}; expected one of {', '.join(names)}")
        out[names[k]] = v
    return out

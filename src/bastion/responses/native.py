"""Responses calls reach ``openai`` (and simulated) deployments as Responses requests.

``ResponsesWire`` wraps such a provider's transport. While a Responses call runs (the handler
marks it with ``responses_call``, a context variable: every attempt, retry, failover and hedge
of the call runs in its context), an attempt bound for that provider's
``/chat/completions`` is sent to ``/responses`` instead, written from the guarded chat body
(``wire.request_from_chat``), and its answer is read back into the chat view
(``wire.chat_from_response`` / ``wire.ChatFromResponses``) before the engine, the output
guards, the meter and the records see it. Any other call, and any attempt at another kind of
provider (an ``anthropic`` failover, say), goes through untouched: it is translated from the
same chat view, as before.

The one context variable is call-scoped state, not shared state: it is set and reset around
one call by ``ResponsesApi.handle``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from ..errors import UpstreamProtocolError
from ..providers.base import Transport, UpstreamRequest, UpstreamResponse
from .wire import ChatFromResponses, chat_from_response, request_from_chat

__all__ = [
    "NATIVE_KINDS",
    "InResponsesCall",
    "NativeCall",
    "ResponsesWire",
    "native_transport",
    "responses_call",
]

# provider kinds whose wire has the Responses API
NATIVE_KINDS = frozenset({"openai", "sim"})
CHAT_PATH = "/chat/completions"
RESPONSES_PATH = "/responses"
FAILED = "the upstream response failed"


@dataclass(frozen=True, slots=True)
class NativeCall:
    """A Responses call in flight: the request fields the chat view has no room for."""

    extras: dict[str, Any] = field(default_factory=dict)


_CURRENT: ContextVar[NativeCall | None] = ContextVar("bastion_responses_call", default=None)


@contextlib.contextmanager
def responses_call(native: NativeCall) -> Iterator[None]:
    """Mark the calls made inside as a Responses call (attempts inherit the context)."""
    token = _CURRENT.set(native)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def native_transport(kind: str, transport: Transport) -> Transport:
    """The transport a provider of ``kind`` uses: Responses-speaking kinds get the wire."""
    return ResponsesWire(transport) if kind in NATIVE_KINDS else transport


class ResponsesWire:
    """A ``Transport`` that sends a Responses call's chat attempts as Responses requests."""

    __slots__ = ("inner",)

    def __init__(self, inner: Transport) -> None:
        self.inner = inner

    async def send(self, request: UpstreamRequest, *, timeout: float | None) -> UpstreamResponse:
        native = _CURRENT.get()
        path = request.url.split("?", 1)[0]
        if native is None or not path.endswith(CHAT_PATH):
            return await self.inner.send(request, timeout=timeout)
        chat = orjson.loads(request.body)
        body = request_from_chat(chat, native.extras)
        url = path[: -len(CHAT_PATH)] + RESPONSES_PATH + request.url[len(path) :]
        resp = await self.inner.send(
            replace(request, url=url, body=orjson.dumps(body)), timeout=timeout
        )
        if resp.status != 200:
            return resp  # an error body has the same shape on both OpenAI APIs
        return ChatView(resp)

    async def aclose(self) -> None:
        await self.inner.aclose()


class ChatView:
    """A Responses answer (body or event stream) read as the Chat Completions answer."""

    __slots__ = ("_inner", "headers", "status")

    def __init__(self, inner: UpstreamResponse) -> None:
        self._inner = inner
        self.status = inner.status
        self.headers: Mapping[str, str] = inner.headers

    async def read(self) -> bytes:
        raw = await self._inner.read()
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return raw  # the engine judges a malformed body as it would any other
        if not isinstance(obj, dict):
            return raw
        chat = chat_from_response(obj)
        if chat is None:
            raise UpstreamProtocolError(FAILED)
        return orjson.dumps(chat)

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        conv = ChatFromResponses()
        async for chunk in self._inner.iter_chunks():
            out = conv.feed(chunk)
            if out:
                yield b"".join(out)

    async def aclose(self) -> None:
        await self._inner.aclose()


class InResponsesCall:
    """A reply stream whose reads run as the Responses call, so an attempt made mid-stream (a
    cut answer restarted at another deployment) is sent as the call's first attempts were."""

    __slots__ = ("_inner", "_native")

    def __init__(self, inner: AsyncIterator[bytes], native: NativeCall) -> None:
        self._inner = inner
        self._native = native

    def __aiter__(self) -> InResponsesCall:
        return self

    async def __anext__(self) -> bytes:
        with responses_call(self._native):
            return await anext(self._inner)

    async def aclose(self) -> None:
        aclose = getattr(self._inner, "aclose", None)
        if aclose is not None:
            with responses_call(self._native):
                await aclose()

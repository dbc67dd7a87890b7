"""``POST /v1/responses``: check, run through the one gateway path, answer as a response object.

Guards judge the call's chat view (``request.to_chat``): a Responses call meets the same budget
reservation, rate limits, PII, injection and leak checks, kill switch and records as a chat
call, with no guard changed. On the wire, an attempt at an ``openai`` (or simulated)
deployment is a Responses request to ``/v1/responses`` written from the guarded chat view
(``native``); an attempt at any other kind (a failover to ``anthropic``, say) is the chat
view translated to that provider's format. The answer the guards passed is written as the
response object, or its documented event sequence (``response``, ``stream``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from ..call import Principal
from ..engine import Reply
from ..errors import InvalidRequest
from ..providers.base import Format
from ..providers.sse import SSEDecoder
from ..schema import parse_body
from .native import InResponsesCall, NativeCall, responses_call
from .request import to_chat
from .response import from_chat, response_id
from .stream import ResponsesEmitter, ResponsesStream
from .wire import extras_of

if TYPE_CHECKING:
    from ..gateway import Gateway

Admit = Callable[[dict[str, Any], Principal], None]


class ResponsesApi:
    """The Responses API over a gateway: ``handle`` for the server (the signature of
    ``Gateway.handle``), ``create`` and ``stream`` for library users."""

    __slots__ = ("_gateway",)

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def handle(
        self,
        fmt: Format,
        raw: bytes,
        headers: Mapping[str, str],
        *,
        principal: Principal | None = None,
        admit: Admit | None = None,
    ) -> Reply:
        """Run one Responses call; raise ``BastionError`` (rendered in OpenAI's format) to refuse."""
        if fmt is not Format.OPENAI:
            raise InvalidRequest("the Responses API is served in OpenAI's format only")
        body = parse_body(raw)
        translated = to_chat(body)
        native = NativeCall(extras_of(body))
        with responses_call(native):
            reply = await self._gateway.handle(
                Format.OPENAI,
                orjson.dumps(translated.chat),
                headers,
                principal=principal,
                admit=admit,
            )
        resp_id = response_id(reply.headers.get("x-request-id"), uuid.uuid4().hex)
        now = int(time.time())
        if reply.stream is not None:
            emitter = ResponsesEmitter(resp_id, translated.echo, created_at=now)
            reply.stream = ResponsesStream(InResponsesCall(reply.stream, native), emitter)
        elif reply.status == 200 and reply.body:
            chat = orjson.loads(reply.body)
            if isinstance(chat, dict) and chat.get("object") == "chat.completion":
                reply.body = orjson.dumps(from_chat(chat, resp_id, translated.echo, now=now))
        return reply

    async def create(self, body: Mapping[str, Any], **ctx: str) -> dict[str, Any]:
        """A Responses call in-process; returns the response object (``ctx`` as ``Gateway.messages``)."""
        from ..library import LIBRARY_PRINCIPAL, ctx_headers

        raw = orjson.dumps({**body, "stream": False})
        reply = await self.handle(Format.OPENAI, raw, ctx_headers(ctx), principal=LIBRARY_PRINCIPAL)
        obj: dict[str, Any] = orjson.loads(reply.body or b"{}")
        return obj

    async def stream(self, body: Mapping[str, Any], **ctx: str) -> AsyncIterator[dict[str, Any]]:
        """A streamed Responses call in-process; yields each event (a failure is an event too)."""
        from ..library import LIBRARY_PRINCIPAL, ctx_headers

        raw = orjson.dumps({**body, "stream": True})
        reply = await self.handle(Format.OPENAI, raw, ctx_headers(ctx), principal=LIBRARY_PRINCIPAL)
        if reply.stream is None:  # an idempotent replay of a finished body, say
            raise InvalidRequest("the gateway answered this streamed call without a stream")
        decoder = SSEDecoder()
        try:
            async for chunk in reply.stream:
                for ev in decoder.feed(chunk):
                    event: dict[str, Any] = orjson.loads(ev.data)
                    yield event
        finally:
            aclose = getattr(reply.stream, "aclose", None)
            if aclose is not None:
                await aclose()

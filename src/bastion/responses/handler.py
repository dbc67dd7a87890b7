"""``POST /v1/responses``: translate, run through the one gateway path, translate the answer back.

Every kind of deployment (``openai`` included) is reached through the chat format: the guards
read chat bodies, so a Responses call meets the same budget reservation, rate limits, PII,
injection and leak checks, kill switch and records as a chat call, with no guard changed.
A native pass-through to ``openai`` deployments would need every guard to read Responses
input items first (the dialect work of issue #14 item 1).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from ..call import Principal
from ..engine import Reply
from ..errors import InvalidRequest
from ..providers.base import Format
from ..schema import parse_body
from .request import to_chat
from .response import from_chat, response_id
from .stream import ResponsesEmitter, ResponsesStream

if TYPE_CHECKING:
    from ..gateway import Gateway

Admit = Callable[[dict[str, Any], Principal], None]


class ResponsesApi:
    """The Responses API over a gateway; ``handle`` has the signature of ``Gateway.handle``."""

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
        translated = to_chat(parse_body(raw))
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
            reply.stream = ResponsesStream(reply.stream, emitter)
        elif reply.status == 200 and reply.body:
            chat = orjson.loads(reply.body)
            if isinstance(chat, dict) and chat.get("object") == "chat.completion":
                reply.body = orjson.dumps(from_chat(chat, resp_id, translated.echo, now=now))
        return reply

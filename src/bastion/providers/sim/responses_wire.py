"""OpenAI's Responses API on the simulator's wire: ``POST /v1/responses``, body and event stream.

A request is checked as the API checks it (a 400 ``invalid_request_error`` naming the field),
answered by the simulator's OpenAI chat (faults, pacing, tools, usage and the prompt cache all
apply), and written as the API documents its answers: a ``response`` object, or the event
sequence ``response.created``, ``response.in_progress``, per output item
``response.output_item.added`` … ``response.output_item.done`` (text parts and their
``response.output_text.delta`` events, function calls and their
``response.function_call_arguments.delta`` events), then ``response.completed`` (or
``response.incomplete`` at ``max_output_tokens``), each event with its ``sequence_number``.
A fault's in-band error is an ``error`` event followed by ``response.failed``; a cut stream
stays cut; status faults are the API's error bodies (the same shape as chat's).

The request and answer shapes are the gateway's own ``bastion.responses`` builders, imported
when first used (they depend on nothing of the simulator).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from ..base import Format
from .result import SimCut, SimResult, once
from .scenario import split_model
from .wire_errors import error_result

if TYPE_CHECKING:
    from .core import Simulator

__all__ = ["ROUTE", "handle"]

ROUTE = "/responses"


async def handle(
    sim: Simulator, method: str, path: str, h: Mapping[str, str], body: bytes
) -> SimResult:
    """Answer ``POST /v1/responses`` (``h`` has lower-case names)."""
    from ...errors import InvalidRequest
    from ...responses.request import to_chat

    try:
        parsed: Any = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = None
    model = parsed.get("model") if isinstance(parsed, dict) else None
    model_str = model if isinstance(model, str) else None
    sim._record(
        method, path, dict(h), parsed, model_str, split_model(model_str)[1] if model_str else None
    )
    rid = "req_" + uuid.uuid4().hex
    if method != "POST":
        return error_result(Format.OPENAI, 405, rid, message="Method Not Allowed")
    if not isinstance(parsed, dict):
        return error_result(
            Format.OPENAI,
            400,
            rid,
            message="We could not parse the JSON body of your request.",
        )
    try:
        translated = to_chat(parsed)
    except InvalidRequest as exc:
        return error_result(
            Format.OPENAI, 400, rid, message=exc.message, param=exc.param, code="invalid_value"
        )
    chat = orjson.dumps(translated.chat)
    result = await sim.handle("POST", "/v1/chat/completions", h, chat, record=False)
    if result.status != 200:
        return result  # the API's error body, its status and headers
    headers = {k: v for k, v in result.headers.items() if k != "content-length"}
    resp_id = "resp_" + uuid.uuid4().hex
    now = int(time.time())
    if result.headers.get("content-type", "").startswith("text/event-stream"):
        return SimResult(200, headers, _events(result.body, resp_id, translated.echo, now))
    chunks: list[bytes] = []
    try:
        async for c in result.body:
            chunks.append(c)
    except SimCut:
        return SimResult(200, headers, _cut(chunks))
    data = _body(b"".join(chunks), resp_id, translated.echo, now)
    headers["content-length"] = str(len(data))
    return SimResult(200, headers, once(data))


def _body(data: bytes, resp_id: str, echo: dict[str, Any], now: int) -> bytes:
    from ...responses.response import from_chat

    try:
        chat = orjson.loads(data)
    except orjson.JSONDecodeError:
        return data  # a malformed-body fault stays malformed
    if not isinstance(chat, dict):
        return data
    obj = from_chat(chat, resp_id, {**echo, "store": True}, now=now)
    obj["id"] = resp_id
    return orjson.dumps(obj)


async def _events(
    frames: AsyncIterator[bytes], resp_id: str, echo: dict[str, Any], now: int
) -> AsyncIterator[bytes]:
    """The chat stream as the Responses event sequence; a cut (``SimCut``) passes through."""
    from ...responses.stream import ResponsesEmitter

    emitter = ResponsesEmitter(resp_id, {**echo, "store": True}, created_at=now)
    try:
        async for frame in frames:
            out = emitter.feed(frame)
            if out:
                yield b"".join(out)
        tail = emitter.finish()
        if tail:
            yield b"".join(tail)
    finally:  # a client that hangs up closes the simulator's stream too (a stall included)
        closer = getattr(frames, "aclose", None)
        if closer is not None:
            await closer()


async def _cut(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for c in chunks:
        yield c
    raise SimCut("cut by a simulated fault")

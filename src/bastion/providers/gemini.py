"""Google Gemini (Generative Language API): where a request goes and what its body leaves out.

From the API reference (ai.google.dev/api/generate-content): ``POST {base}/v1beta/models/
{model}:generateContent`` answers one ``GenerateContentResponse``; ``POST {base}/v1beta/models/
{model}:streamGenerateContent?alt=sse`` streams them as server-sent events (without ``alt=sse``
the stream is one JSON array, which the gateway never asks for). The API key goes in the
``x-goog-api-key`` header (ai.google.dev/gemini-api/docs/api-key), never in the URL, so it
stays out of logs. The model is a path segment, percent-encoded (it can come from a
deployment's ``{model}``), and the body carries no ``model`` field.

An answer whose candidate stopped on the model's failure (``finishReason``
``MALFORMED_FUNCTION_CALL``, ``OTHER``, one not known: ``translate._gemini.failure``) is the
provider's failure, not an answer: ``GeminiTransport`` hands a unary one on as a 502 in
Google's error shape, so it is failed over like any server error; a streamed one ends in an
error event (``translate._stream_gemini``). Google bills such an answer all the same: the
502 carries the ``usageMetadata`` it reported (``BufferedResponse.billed``), so the attempt
is recorded and charged with it (spend caps, token limits) like any billed attempt; without
``usageMetadata`` it is an error answer that cost nothing, as before.

Vertex AI (``{region}-aiplatform.googleapis.com/v1/projects/.../publishers/google/models/...``
with a google-auth token) is not supported here.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import quote

import orjson

from ..call import Usage
from ..errors import InvalidRequest, UpstreamTimeout
from .base import BufferedResponse, Format, Transport, UpstreamRequest, UpstreamResponse
from .translate._common import loads_object
from .translate._errors import render_error
from .translate._gemini import failure, parse_usage
from .translate.model import ErrorKind

__all__ = [
    "API_VERSION",
    "DEFAULT_BASE_URL",
    "GeminiTransport",
    "billed_usage",
    "body",
    "transport",
    "url",
]

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
API_VERSION = "v1beta"
_PREFIX = "models/"


def url(base_url: str, model: object, *, stream: bool) -> str:
    """The generate URL of ``model`` (``models/`` prefix accepted, as the API names them)."""
    if not isinstance(model, str):
        raise InvalidRequest(f"model: {model!r} cannot name a Gemini model", param="model")
    name = model[len(_PREFIX) :] if model.startswith(_PREFIX) else model
    if name in ("", ".", ".."):
        raise InvalidRequest(f"model: {model!r} cannot name a Gemini model", param="model")
    root = f"{base_url.rstrip('/')}/{API_VERSION}/models/{quote(name, safe='')}"
    return root + (":streamGenerateContent?alt=sse" if stream else ":generateContent")


def body(translated: dict[str, Any]) -> dict[str, Any]:
    """The request body as sent: the model named in the URL is not repeated in it."""
    return {k: v for k, v in translated.items() if k != "model"}


def transport(inner: Transport) -> GeminiTransport:
    """The transport of a gemini provider over ``inner``."""
    return GeminiTransport(inner)


class GeminiTransport:
    """Sends Gemini requests; a unary answer that stopped on a failure becomes a 502."""

    __slots__ = ("_inner",)

    def __init__(self, inner: Transport) -> None:
        self._inner = inner

    async def send(self, request: UpstreamRequest, *, timeout: float | None) -> UpstreamResponse:
        started = time.monotonic()
        resp = await self._inner.send(request, timeout=timeout)
        if resp.status != 200 or request.stream:
            return resp  # errors as sent; a stream's failure is its last event
        left = None if timeout is None else max(timeout - (time.monotonic() - started), 0.0)
        try:
            async with asyncio.timeout(left):
                raw = await resp.read()
        except TimeoutError:
            raise UpstreamTimeout(f"upstream body not complete within {timeout:.3g}s") from None
        finally:
            await resp.aclose()
        headers = {k: v for k, v in resp.headers.items() if k != "content-length"}
        obj = loads_object(raw)
        failed = failure(obj) if obj is not None else None
        if failed is None or obj is None:  # an answer (or a malformed body: the engine says so)
            headers["content-length"] = str(len(raw))
            return BufferedResponse(200, headers, raw)
        data = orjson.dumps(render_error(Format.GEMINI, ErrorKind.API_ERROR, failed))
        headers["content-type"] = "application/json"
        headers["content-length"] = str(len(data))
        return BufferedResponse(502, headers, data, billed=billed_usage(obj))

    async def aclose(self) -> None:
        await self._inner.aclose()


def billed_usage(answer: dict[str, Any]) -> Usage | None:
    """What Google bills for an answer, from its ``usageMetadata``; None when it sent none."""
    meta = answer.get("usageMetadata")
    if not isinstance(meta, dict):
        return None
    u = parse_usage(meta)
    return Usage(u.input_tokens, u.output_tokens, u.cache_read, u.cache_write)

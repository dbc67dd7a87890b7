"""OpenAI Chat Completions ↔ Anthropic Messages translation, for cross-format failover only.

The fast path never comes here: when the client's format equals the provider's, bodies
and stream events are forwarded as received. Every conversion goes through the neutral
model in ``model`` (parse the source format, emit the target format), so each direction
is written once. Plain dicts in and out; no I/O and no shared state.

Hand-written because the libraries that translate between these APIs come bundled with
a whole proxy, and none promises the exact stream event sequences the official SDKs
accumulate; the tests check every output against the SDKs' own types and accumulators.
"""

from __future__ import annotations

import time
from typing import Any

from ..base import Format
from . import _anthropic, _bedrock, _gemini, _openai
from ._errors import error_to
from ._stream import StreamTranslator
from .model import Request, Response, StopReason, Usage

__all__ = [
    "Request",
    "Response",
    "StopReason",
    "StreamTranslator",
    "Usage",
    "emit_request",
    "emit_response",
    "error_to",
    "parse_request",
    "parse_response",
    "request_to",
    "response_to",
]


def parse_request(fmt: Format, body: dict[str, Any]) -> Request:
    """Read a request body of ``fmt`` into the neutral model."""
    if fmt is Format.BEDROCK:
        return _bedrock.parse_request(body)
    if fmt is Format.GEMINI:
        return _gemini.parse_request(body)
    return (
        _anthropic.parse_request(body) if fmt is Format.ANTHROPIC else _openai.parse_request(body)
    )


def parse_response(fmt: Format, body: dict[str, Any]) -> Response:
    """Read a non-streaming response body of ``fmt`` into the neutral model."""
    if fmt is Format.BEDROCK:
        return _bedrock.parse_response(body)
    if fmt is Format.GEMINI:
        return _gemini.parse_response(body)
    return (
        _anthropic.parse_response(body) if fmt is Format.ANTHROPIC else _openai.parse_response(body)
    )


def emit_request(fmt: Format, req: Request, model: str) -> dict[str, Any]:
    """Write the neutral request as a body of ``fmt`` for upstream ``model``."""
    if fmt is Format.BEDROCK:
        return _bedrock.emit_request(req, model)
    if fmt is Format.ANTHROPIC:
        return _anthropic.emit_request(req, model)
    if fmt is Format.GEMINI:
        return _gemini.emit_request(req, model)
    return _openai.emit_request(req, model)


def emit_response(fmt: Format, resp: Response, model: str) -> dict[str, Any]:
    """Write the neutral response as a body of ``fmt``."""
    if fmt is Format.BEDROCK:
        return _bedrock.emit_response(resp, model)
    if fmt is Format.ANTHROPIC:
        return _anthropic.emit_response(resp, model)
    if fmt is Format.GEMINI:
        return _gemini.emit_response(resp, model)
    return _openai.emit_response(resp, model, int(time.time()))


def request_to(
    fmt_target: Format, body: dict[str, Any], *, source: Format, model: str
) -> dict[str, Any]:
    """Convert a request body from ``source`` to ``fmt_target`` for upstream ``model``.

    Same format: the body is returned as is except for ``model``. Dropped for lack of a
    counterpart (details in ``_anthropic`` and ``_openai``):

    - from OpenAI: ``n``, ``seed``, ``logprobs``/``top_logprobs``, ``logit_bias``,
      ``frequency_penalty``/``presence_penalty``, ``response_format``, ``reasoning_effort``,
      ``verbosity``, ``modalities``/``audio``, ``prediction``, ``store``, ``metadata``,
      ``service_tier``, ``web_search_options``, ``prompt_cache_*``, legacy
      ``functions``/``function_call`` and the ``function`` role, message ``name``, audio and
      file parts, image ``detail``, custom tools, ``allowed_tools`` choices, tool ``strict``;
      stop sequences Anthropic rejects (whitespace only);
    - from Anthropic: ``thinking`` (setting and blocks), ``top_k``, ``cache_control``,
      documents, search results, server tools and their blocks, citations,
      ``service_tier``, ``container``, ``output_config``, file image sources, stop
      sequences past OpenAI's four;
    - to or from Gemini: see ``_gemini`` (the model goes in the URL, not the body).
    """
    if fmt_target is source:
        return body if source is Format.GEMINI else {**body, "model": model}
    return emit_request(fmt_target, parse_request(source, body), model)


def response_to(
    fmt_target: Format, body: dict[str, Any], *, source: Format, model: str | None = None
) -> dict[str, Any]:
    """Convert a non-streaming response body; ``model``, when given, replaces the upstream's."""
    if fmt_target is source:
        return body if model is None else {**body, "model": model}
    resp = parse_response(source, body)
    return emit_response(fmt_target, resp, model or resp.model)

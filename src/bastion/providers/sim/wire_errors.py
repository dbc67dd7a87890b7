"""Error responses exactly as each provider shapes them: body, status and headers."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from datetime import UTC, datetime

import orjson

from ..base import Format
from .result import SimResult, once

_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_ANTHROPIC_MESSAGES = {
    400: "Invalid request",
    401: "invalid x-api-key",
    403: "Your API key does not have permission to use the specified resource.",
    404: "Not found",
    409: "Conflict",
    413: "Request exceeds the maximum allowed number of bytes.",
    429: "Number of requests has exceeded your per-minute rate limit.",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Request timed out",
    529: "Overloaded",
}
_OPENAI_ERRORS: dict[int, tuple[str, str, str | None]] = {
    400: ("Invalid request.", "invalid_request_error", None),
    401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
    403: ("You are not allowed to access this resource.", "invalid_request_error", None),
    404: ("The requested resource does not exist.", "invalid_request_error", None),
    429: ("Rate limit reached for requests.", "requests", "rate_limit_exceeded"),
    500: (
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        None,
    ),
    502: ("Bad gateway.", "server_error", None),
    503: ("The server is overloaded or not ready yet.", "server_error", None),
    504: ("Request timed out.", "server_error", None),
    529: ("The server is overloaded.", "server_error", None),
}


def error_result(
    fmt: Format,
    status: int,
    request_id: str,
    *,
    message: str | None = None,
    etype: str | None = None,
    param: str | None = None,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> SimResult:
    """An error in the provider's shape; type and message default by status."""
    out: dict[str, str] = {"content-type": "application/json"}
    if fmt is Format.ANTHROPIC:
        out["request-id"] = request_id
        err = {
            "type": etype or _ANTHROPIC_TYPES.get(status, _fallback_type(status)),
            "message": message or _ANTHROPIC_MESSAGES.get(status, f"Error {status}"),
        }
        body = orjson.dumps({"type": "error", "error": err, "request_id": request_id})
    else:
        out["x-request-id"] = request_id
        default_msg, default_type, default_code = _OPENAI_ERRORS.get(
            status,
            (f"Error {status}", "server_error" if status >= 500 else "invalid_request_error", None),
        )
        oerr = {
            "message": message or default_msg,
            "type": etype or default_type,
            "param": param,
            "code": code if code is not None else default_code,
        }
        body = orjson.dumps({"error": oerr})
    if headers:
        out.update(headers)
    out["content-length"] = str(len(body))
    return SimResult(status=status, headers=out, body=once(body))


def anthropic_stream_error(status: int) -> dict[str, object]:
    """The payload of Anthropic's in-stream ``error`` event for a status."""
    return {
        "type": "error",
        "error": {
            "type": _ANTHROPIC_TYPES.get(status, _fallback_type(status)),
            "message": _ANTHROPIC_MESSAGES.get(status, f"Error {status}"),
        },
    }


def openai_stream_error(status: int) -> dict[str, object]:
    """The payload OpenAI sends as a ``data:`` line when a stream fails midway."""
    msg, etype, code = _OPENAI_ERRORS.get(status, (f"Error {status}", "server_error", None))
    return {"error": {"message": msg, "type": etype, "param": None, "code": code}}


def retry_headers(fmt: Format, retry_after: float | None, status: int) -> dict[str, str]:
    """Retry-After, plus the provider's rate-limit headers on a 429."""
    out: dict[str, str] = {}
    if retry_after is not None:
        out["retry-after"] = str(max(0, math.ceil(retry_after)))
    if status != 429:
        return out
    wait = retry_after if retry_after is not None else 1.0
    if fmt is Format.ANTHROPIC:
        reset = datetime.fromtimestamp(time.time() + wait, tz=UTC)
        stamp = reset.strftime("%Y-%m-%dT%H:%M:%SZ")
        out.update(
            {
                "anthropic-ratelimit-requests-limit": "50",
                "anthropic-ratelimit-requests-remaining": "0",
                "anthropic-ratelimit-requests-reset": stamp,
                "anthropic-ratelimit-tokens-limit": "40000",
                "anthropic-ratelimit-tokens-remaining": "0",
                "anthropic-ratelimit-tokens-reset": stamp,
            }
        )
    else:
        out.update(
            {
                "x-ratelimit-limit-requests": "500",
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": openai_duration(wait),
                "x-ratelimit-limit-tokens": "30000",
                "x-ratelimit-remaining-tokens": "0",
                "x-ratelimit-reset-tokens": openai_duration(wait),
            }
        )
    return out


def openai_duration(seconds: float) -> str:
    """OpenAI's reset format: ``20ms``, ``1s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{seconds:g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:g}s"


def _fallback_type(status: int) -> str:
    return "api_error" if status >= 500 else "invalid_request_error"

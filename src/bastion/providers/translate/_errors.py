"""Provider error bodies ↔ neutral error kinds, so an error reads right in the caller's format.

The OpenAI side follows ``bastion.errors`` (same ``type``/``code`` pairs Bastion uses for
its own errors), so a translated upstream error and a native Bastion error look alike.
Anthropic's 529 ``overloaded_error`` becomes OpenAI's 503, Anthropic's
"prompt is too long" becomes OpenAI's ``context_length_exceeded`` and back. Gemini's errors
are Google's ``{"error": {code, message, status}}`` with an rpc status (``RESOURCE_EXHAUSTED``
429, ``UNAVAILABLE`` 503, ``INTERNAL`` 500 …), read by status name.
"""

from __future__ import annotations

from typing import Any

from ..base import Format
from ._common import as_dict, as_list, as_str, loads_object
from .model import ErrorKind

# kind -> (status, Anthropic error type)
_ANTHROPIC: dict[ErrorKind, tuple[int, str]] = {
    ErrorKind.INVALID_REQUEST: (400, "invalid_request_error"),
    ErrorKind.CONTEXT_LENGTH: (400, "invalid_request_error"),
    ErrorKind.AUTHENTICATION: (401, "authentication_error"),
    ErrorKind.BILLING: (402, "billing_error"),
    ErrorKind.PERMISSION: (403, "permission_error"),
    ErrorKind.NOT_FOUND: (404, "not_found_error"),
    ErrorKind.REQUEST_TOO_LARGE: (413, "request_too_large"),
    ErrorKind.RATE_LIMIT: (429, "rate_limit_error"),
    ErrorKind.API_ERROR: (500, "api_error"),
    ErrorKind.TIMEOUT: (504, "timeout_error"),
    ErrorKind.OVERLOADED: (529, "overloaded_error"),
}
# kind -> (status, OpenAI error type, OpenAI error code)
_OPENAI: dict[ErrorKind, tuple[int, str, str | None]] = {
    ErrorKind.INVALID_REQUEST: (400, "invalid_request_error", None),
    ErrorKind.CONTEXT_LENGTH: (400, "invalid_request_error", "context_length_exceeded"),
    ErrorKind.AUTHENTICATION: (401, "invalid_request_error", "invalid_api_key"),
    ErrorKind.BILLING: (402, "insufficient_quota", "insufficient_quota"),
    ErrorKind.PERMISSION: (403, "invalid_request_error", "permission_denied"),
    ErrorKind.NOT_FOUND: (404, "invalid_request_error", "model_not_found"),
    ErrorKind.REQUEST_TOO_LARGE: (413, "invalid_request_error", "request_too_large"),
    ErrorKind.RATE_LIMIT: (429, "rate_limit_error", "rate_limit_exceeded"),
    ErrorKind.API_ERROR: (500, "server_error", None),
    ErrorKind.TIMEOUT: (504, "timeout", "upstream_timeout"),
    ErrorKind.OVERLOADED: (503, "server_error", "overloaded"),
}
_FROM_ANTHROPIC_TYPE = {
    t: k for k, (_, t) in _ANTHROPIC.items() if k is not ErrorKind.CONTEXT_LENGTH
}
_FROM_OPENAI_CODE: dict[str, ErrorKind] = {
    "context_length_exceeded": ErrorKind.CONTEXT_LENGTH,
    "string_above_max_length": ErrorKind.CONTEXT_LENGTH,
    "insufficient_quota": ErrorKind.BILLING,
    "invalid_api_key": ErrorKind.AUTHENTICATION,
    "rate_limit_exceeded": ErrorKind.RATE_LIMIT,
    "model_not_found": ErrorKind.NOT_FOUND,
    "request_too_large": ErrorKind.REQUEST_TOO_LARGE,
}
_BY_STATUS: dict[int, ErrorKind] = {
    400: ErrorKind.INVALID_REQUEST,
    401: ErrorKind.AUTHENTICATION,
    402: ErrorKind.BILLING,
    403: ErrorKind.PERMISSION,
    404: ErrorKind.NOT_FOUND,
    408: ErrorKind.TIMEOUT,
    413: ErrorKind.REQUEST_TOO_LARGE,
    429: ErrorKind.RATE_LIMIT,
    500: ErrorKind.API_ERROR,
    503: ErrorKind.OVERLOADED,
    504: ErrorKind.TIMEOUT,
    529: ErrorKind.OVERLOADED,
}
_PROMPT_TOO_LONG = "prompt is too long"
# kind -> (HTTP code, google.rpc status) as the Gemini API's troubleshooting table lists them
# (ai.google.dev/gemini-api/docs/troubleshooting); error body {"error": {code, message, status}}
_GEMINI: dict[ErrorKind, tuple[int, str]] = {
    ErrorKind.INVALID_REQUEST: (400, "INVALID_ARGUMENT"),
    ErrorKind.CONTEXT_LENGTH: (400, "INVALID_ARGUMENT"),
    ErrorKind.AUTHENTICATION: (401, "UNAUTHENTICATED"),
    ErrorKind.BILLING: (400, "FAILED_PRECONDITION"),
    ErrorKind.PERMISSION: (403, "PERMISSION_DENIED"),
    ErrorKind.NOT_FOUND: (404, "NOT_FOUND"),
    ErrorKind.REQUEST_TOO_LARGE: (413, "INVALID_ARGUMENT"),
    ErrorKind.RATE_LIMIT: (429, "RESOURCE_EXHAUSTED"),
    ErrorKind.API_ERROR: (500, "INTERNAL"),
    ErrorKind.TIMEOUT: (504, "DEADLINE_EXCEEDED"),
    ErrorKind.OVERLOADED: (503, "UNAVAILABLE"),
}
_FROM_GEMINI_STATUS: dict[str, ErrorKind] = {
    "INVALID_ARGUMENT": ErrorKind.INVALID_REQUEST,
    "FAILED_PRECONDITION": ErrorKind.BILLING,
    "UNAUTHENTICATED": ErrorKind.AUTHENTICATION,
    "PERMISSION_DENIED": ErrorKind.PERMISSION,
    "NOT_FOUND": ErrorKind.NOT_FOUND,
    "RESOURCE_EXHAUSTED": ErrorKind.RATE_LIMIT,
    "INTERNAL": ErrorKind.API_ERROR,
    "UNAVAILABLE": ErrorKind.OVERLOADED,
    "DEADLINE_EXCEEDED": ErrorKind.TIMEOUT,
}
# "The input token count (N) exceeds the maximum number of tokens allowed (M)."
_GEMINI_TOO_LONG = "exceeds the maximum number of tokens"
_GEMINI_BAD_KEY = "API_KEY_INVALID"


def kind_from_status(status: int) -> ErrorKind:
    """Best guess from the status alone (unparseable bodies, unknown types)."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return ErrorKind.INVALID_REQUEST if 400 <= status < 500 else ErrorKind.API_ERROR


def kind_from_name(name: str) -> ErrorKind:
    """Accept an Anthropic error type, an OpenAI type or code, or a neutral kind name."""
    if name in _FROM_ANTHROPIC_TYPE:
        return _FROM_ANTHROPIC_TYPE[name]
    if name in _FROM_OPENAI_CODE:
        return _FROM_OPENAI_CODE[name]
    try:
        return ErrorKind(name)
    except ValueError:
        return ErrorKind.API_ERROR


def parse_error(fmt: Format, body: dict[str, Any], status: int) -> tuple[ErrorKind, str]:
    """Read an error body of ``fmt`` into (kind, message)."""
    err = as_dict(body.get("error"))
    message = as_str(err.get("message"))
    if fmt is Format.ANTHROPIC:
        kind = _FROM_ANTHROPIC_TYPE.get(as_str(err.get("type"))) or kind_from_status(status)
        if kind is ErrorKind.INVALID_REQUEST and _PROMPT_TOO_LONG in message.lower():
            kind = ErrorKind.CONTEXT_LENGTH
        return kind, message
    if fmt is Format.GEMINI:
        return _parse_gemini(err, status, message), message
    code = as_str(err.get("code")) or as_str(err.get("type"))
    kind = _FROM_OPENAI_CODE.get(code) or kind_from_status(status)
    if kind is ErrorKind.INVALID_REQUEST and "maximum context length" in message.lower():
        kind = ErrorKind.CONTEXT_LENGTH
    return kind, message


def _parse_gemini(err: dict[str, Any], status: int, message: str) -> ErrorKind:
    """A Google error: the rpc ``status`` names the kind; a bad API key is a 400 whose
    ``ErrorInfo`` detail says ``API_KEY_INVALID``."""
    reasons = {as_str(as_dict(d).get("reason")) for d in as_list(err.get("details"))}
    if _GEMINI_BAD_KEY in reasons:
        return ErrorKind.AUTHENTICATION
    kind = _FROM_GEMINI_STATUS.get(as_str(err.get("status"))) or kind_from_status(status)
    if kind is ErrorKind.INVALID_REQUEST and _GEMINI_TOO_LONG in message.lower():
        return ErrorKind.CONTEXT_LENGTH
    return kind


def render_error(fmt: Format, kind: ErrorKind, message: str) -> dict[str, Any]:
    """Write an error body of ``fmt``; context-length messages get the wording clients look for."""
    if fmt is Format.ANTHROPIC:
        if kind is ErrorKind.CONTEXT_LENGTH and _PROMPT_TOO_LONG not in message.lower():
            message = f"{_PROMPT_TOO_LONG}: {message}" if message else _PROMPT_TOO_LONG
        return {"type": "error", "error": {"type": _ANTHROPIC[kind][1], "message": message}}
    if fmt is Format.GEMINI:
        code_, rpc = _GEMINI[kind]
        if kind is ErrorKind.CONTEXT_LENGTH and _GEMINI_TOO_LONG not in message.lower():
            message = f"{message} (the input token count {_GEMINI_TOO_LONG} allowed)"
        return {"error": {"code": code_, "message": message, "status": rpc}}
    _, type_, code = _OPENAI[kind]
    if kind is ErrorKind.NOT_FOUND and "model" not in message.lower():
        code = None
    param = "messages" if kind is ErrorKind.CONTEXT_LENGTH else None
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def target_status(fmt: Format, kind: ErrorKind, source_status: int) -> int:
    """The status for ``kind`` in ``fmt``; catch-all kinds keep the source's own 4xx/5xx status."""
    table = {Format.ANTHROPIC: _ANTHROPIC, Format.GEMINI: _GEMINI}.get(fmt, _OPENAI)
    status = table[kind][0]
    if kind is ErrorKind.INVALID_REQUEST and 400 <= source_status < 500:
        return source_status
    if kind is ErrorKind.API_ERROR and 500 <= source_status < 600 and source_status != 529:
        return source_status
    return status


def error_to(
    fmt_target: Format, status: int, body: bytes, *, source: Format
) -> tuple[int, dict[str, Any]]:
    """Map a provider error (status, raw body) from ``source`` format to ``fmt_target``."""
    parsed = loads_object(body) if body else None
    if parsed is None or not isinstance(parsed.get("error"), dict):
        kind = kind_from_status(status)
        bare = parsed.get("error") if parsed is not None else None
        message = (
            bare if isinstance(bare, str) and bare else f"upstream provider error (HTTP {status})"
        )
        return target_status(fmt_target, kind, status), render_error(fmt_target, kind, message)
    if fmt_target is source:
        return status, parsed
    kind, message = parse_error(source, parsed, status)
    return target_status(fmt_target, kind, status), render_error(fmt_target, kind, message)

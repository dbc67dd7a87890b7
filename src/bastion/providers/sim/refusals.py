"""Requests a provider refuses before generating, with each provider's exact wording."""

from __future__ import annotations

from collections.abc import Mapping

from ..base import Format
from .result import SimResult
from .wire_errors import error_result


def check_auth(
    fmt: Format,
    headers: Mapping[str, str],
    request_id: str,
    *,
    api_key: str | None,
    require_anthropic_version: bool,
) -> SimResult | None:
    """Anthropic's version header and either provider's key check; None when all is well."""
    if fmt is Format.ANTHROPIC:
        if require_anthropic_version and "anthropic-version" not in headers:
            return error_result(
                fmt, 400, request_id, message="anthropic-version: header is required"
            )
        if api_key is None:
            return None
        given = headers.get("x-api-key") or _bearer(headers.get("authorization"))
        if given is None:
            return error_result(fmt, 401, request_id, message="x-api-key header is required")
        return None if given == api_key else error_result(fmt, 401, request_id)
    if api_key is None:
        return None
    given = _bearer(headers.get("authorization"))
    if given is None:
        return error_result(
            fmt,
            401,
            request_id,
            message="You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        )
    if given == api_key:
        return None
    masked = given[:3] + "*" * 4 + given[-4:] if len(given) > 8 else "****"
    return error_result(
        fmt,
        401,
        request_id,
        message=f"Incorrect API key provided: {masked}.",
        code="invalid_api_key",
    )


def bad_json(fmt: Format, request_id: str) -> SimResult:
    """A body that is not JSON."""
    if fmt is Format.ANTHROPIC:
        message = "There was an error parsing the body of your request: invalid JSON"
    else:
        message = (
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
            "but what was sent was not valid JSON.)"
        )
    return error_result(fmt, 400, request_id, message=message)


def missing_model(fmt: Format, request_id: str) -> SimResult:
    """No ``model`` in the body."""
    if fmt is Format.ANTHROPIC:
        return error_result(fmt, 400, request_id, message="model: Field required")
    return error_result(fmt, 400, request_id, message="you must provide a model parameter")


def unknown_model(fmt: Format, model: str, request_id: str) -> SimResult:
    """A model the simulator was told not to serve."""
    if fmt is Format.ANTHROPIC:
        return error_result(fmt, 404, request_id, message=f"model: {model}")
    return error_result(
        fmt,
        404,
        request_id,
        message=f"The model `{model}` does not exist or you do not have access to it.",
        code="model_not_found",
    )


def context_too_long(fmt: Format, tokens: int, window: int, request_id: str) -> SimResult:
    """The prompt does not fit the context window."""
    if fmt is Format.ANTHROPIC:
        return error_result(
            fmt, 400, request_id, message=f"prompt is too long: {tokens} tokens > {window} maximum"
        )
    return error_result(
        fmt,
        400,
        request_id,
        message=f"This model's maximum context length is {window} tokens. However, your "
        f"messages resulted in {tokens} tokens. Please reduce the length of the messages.",
        param="messages",
        code="context_length_exceeded",
    )


def content_policy(fmt: Format, request_id: str) -> SimResult:
    """A request the provider's safety system rejects."""
    if fmt is Format.ANTHROPIC:
        return error_result(
            fmt, 400, request_id, message="Output blocked by content filtering policy"
        )
    return error_result(
        fmt,
        400,
        request_id,
        message="Your request was rejected as a result of our safety system. Your prompt may "
        "contain text that is not allowed by our safety system.",
        code="content_policy_violation",
    )


def prefill_unsupported(request_id: str) -> SimResult:
    """Anthropic's answer, for models without prefill, to a request ending in an assistant turn."""
    return error_result(
        Format.ANTHROPIC,
        400,
        request_id,
        message="This model does not support assistant message prefill. "
        "The conversation must end with a user message.",
    )


def _bearer(value: str | None) -> str | None:
    if value and value[:7].lower() == "bearer ":
        return value[7:].strip()
    return None

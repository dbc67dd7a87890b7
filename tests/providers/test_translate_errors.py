"""Error translation: a provider error keeps its meaning and a sensible status in the other format."""

from __future__ import annotations

import json
from typing import Any

import pytest
from anthropic.types.shared import ErrorResponse
from openai.types.shared import ErrorObject

from bastion.providers.base import Format
from bastion.providers.translate import error_to

ANT, OAI = Format.ANTHROPIC, Format.OPENAI


def anthropic_error(type_: str, message: str = "m") -> bytes:
    return json.dumps({"type": "error", "error": {"type": type_, "message": message}}).encode()


def openai_error(message: str = "m", type_: str | None = None, code: str | None = None) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": type_, "param": None, "code": code}}
    ).encode()


def to_openai(status: int, body: bytes) -> tuple[int, dict[str, Any]]:
    out_status, out = error_to(OAI, status, body, source=ANT)
    ErrorObject.model_validate(out["error"])
    assert set(out["error"]) == {"message", "type", "param", "code"}
    return out_status, out


def to_anthropic(status: int, body: bytes) -> tuple[int, dict[str, Any]]:
    out_status, out = error_to(ANT, status, body, source=OAI)
    if out["error"]["type"] != "request_too_large":  # documented for 413, absent from the SDK union
        ErrorResponse.model_validate(out)
    assert out["type"] == "error"
    return out_status, out


@pytest.mark.parametrize(
    ("status", "type_", "out_status", "out_type", "out_code"),
    [
        (400, "invalid_request_error", 400, "invalid_request_error", None),
        (401, "authentication_error", 401, "invalid_request_error", "invalid_api_key"),
        (402, "billing_error", 402, "insufficient_quota", "insufficient_quota"),
        (403, "permission_error", 403, "invalid_request_error", "permission_denied"),
        (404, "not_found_error", 404, "invalid_request_error", "model_not_found"),
        (413, "request_too_large", 413, "invalid_request_error", "request_too_large"),
        (429, "rate_limit_error", 429, "rate_limit_error", "rate_limit_exceeded"),
        (500, "api_error", 500, "server_error", None),
        (504, "timeout_error", 504, "timeout", "upstream_timeout"),
        (529, "overloaded_error", 503, "server_error", "overloaded"),
    ],
)
def test_anthropic_error_types_map_to_openai(
    status: int, type_: str, out_status: int, out_type: str, out_code: str | None
) -> None:
    message = "model: claude-x" if type_ == "not_found_error" else "details"
    got_status, body = to_openai(status, anthropic_error(type_, message))
    assert got_status == out_status
    assert body["error"] == {"message": message, "type": out_type, "param": None, "code": out_code}


@pytest.mark.parametrize(
    ("status", "type_", "code", "out_status", "out_type"),
    [
        (400, "invalid_request_error", None, 400, "invalid_request_error"),
        (401, "invalid_request_error", "invalid_api_key", 401, "authentication_error"),
        (403, "invalid_request_error", None, 403, "permission_error"),
        (404, "invalid_request_error", "model_not_found", 404, "not_found_error"),
        (413, "invalid_request_error", None, 413, "request_too_large"),
        (429, "requests", "rate_limit_exceeded", 429, "rate_limit_error"),
        (429, "insufficient_quota", "insufficient_quota", 402, "billing_error"),
        (500, "server_error", None, 500, "api_error"),
        (502, "server_error", None, 502, "api_error"),
        (503, "server_error", None, 529, "overloaded_error"),
        (504, "server_error", None, 504, "timeout_error"),
        (422, "invalid_request_error", None, 422, "invalid_request_error"),
    ],
)
def test_openai_errors_map_to_anthropic(
    status: int, type_: str, code: str | None, out_status: int, out_type: str
) -> None:
    got_status, body = to_anthropic(status, openai_error("details", type_, code))
    assert got_status == out_status
    assert body == {"type": "error", "error": {"type": out_type, "message": "details"}}


def test_context_length_exceeded_becomes_prompt_is_too_long() -> None:
    message = "This model's maximum context length is 128000 tokens. However, your messages resulted in 130000 tokens."
    status, body = to_anthropic(
        400, openai_error(message, "invalid_request_error", "context_length_exceeded")
    )
    assert status == 400
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith("prompt is too long")
    assert message in body["error"]["message"]


def test_prompt_is_too_long_becomes_context_length_exceeded() -> None:
    status, body = to_openai(
        400,
        anthropic_error(
            "invalid_request_error", "prompt is too long: 208310 tokens > 200000 maximum"
        ),
    )
    assert status == 400
    assert body["error"]["code"] == "context_length_exceeded"
    assert body["error"]["param"] == "messages"
    _, back = to_anthropic(status, json.dumps(body).encode())
    assert back["error"]["message"] == "prompt is too long: 208310 tokens > 200000 maximum"


def test_context_length_is_recognised_by_message_when_the_code_is_missing() -> None:
    body = openai_error(
        "This model's maximum context length is 8192 tokens", "invalid_request_error"
    )
    assert to_anthropic(400, body)[1]["error"]["message"].startswith("prompt is too long")


def test_overloaded_round_trips_between_529_and_503() -> None:
    status, body = to_openai(529, anthropic_error("overloaded_error", "Overloaded"))
    assert status == 503
    assert to_anthropic(status, json.dumps(body).encode()) == (
        529,
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    )


@pytest.mark.parametrize(
    "body", [b"<html>502 Bad Gateway</html>", b"", b"[1,2]", b'{"detail": "x"}']
)
@pytest.mark.parametrize("target", [ANT, OAI])
def test_unparseable_bodies_become_a_generic_error_with_the_status(
    body: bytes, target: Format
) -> None:
    source = OAI if target is ANT else ANT
    status, out = error_to(target, 502, body, source=source)
    assert status == 502
    message = "upstream provider error (HTTP 502)"
    if target is ANT:
        assert out == {"type": "error", "error": {"type": "api_error", "message": message}}
    else:
        assert out == {
            "error": {"message": message, "type": "server_error", "param": None, "code": None}
        }


def test_unparseable_body_still_follows_its_status_class() -> None:
    assert error_to(OAI, 529, b"overloaded", source=ANT)[0] == 503
    assert error_to(ANT, 429, b"slow down", source=OAI)[1]["error"]["type"] == "rate_limit_error"


def test_bare_string_error_from_compatible_servers_keeps_its_message() -> None:
    status, out = error_to(ANT, 400, b'{"error": "bad model"}', source=OAI)
    assert (status, out["error"]) == (
        400,
        {"type": "invalid_request_error", "message": "bad model"},
    )


def test_same_format_errors_pass_through() -> None:
    body = anthropic_error("overloaded_error", "Overloaded")
    assert error_to(ANT, 529, body, source=ANT) == (529, json.loads(body))


def test_not_found_without_a_model_has_no_model_code() -> None:
    assert (
        to_openai(404, anthropic_error("not_found_error", "no such file"))[1]["error"]["code"]
        is None
    )

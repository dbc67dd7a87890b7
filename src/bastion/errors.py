"""Bastion's one error tree; every error knows its HTTP status and how to render in each API format.

    BastionError                      500  api_error / server_error
    ├── InvalidRequest                400  invalid_request_error
    │   ├── BodyTooLarge              413  request_too_large
    │   ├── HeadersTooLarge           431  invalid_request_error     (header bytes or count)
    │   ├── RequestTimeout            408  invalid_request_error     (headers or body too slow)
    │   └── InputTooLarge             400  invalid_request_error (token caps)
    ├── AuthenticationFailed          401  authentication_error
    ├── PermissionDenied              403  permission_error
    ├── NotFound                      404  not_found_error
    ├── Conflict                      409  conflict
    ├── UnprocessableRequest          422  invalid_request_error
    ├── RateLimited                   429  rate_limit_error          (Retry-After)
    │   ├── BudgetExceeded            429  budget_exceeded           (Retry-After: next day boundary)
    │   └── TooManyStreams            429  concurrency_limit_exceeded (open streams per key/user)
    ├── OutputBlocked                 422  output_blocked            (an output guard withheld it)
    ├── AIUnavailable                 503  ai_unavailable            (degraded response)
    │   └── UpstreamExhausted         429/529/502/504 as the last failure said (all deployments failed)
    ├── ConfigError                   --   raised at start-up only, never served
    ├── StateUnavailable              503  api_error                 (counter store down, fail closed)
    └── UpstreamError                 502  api_error                 (a provider failed; carries its status/body)
        ├── UpstreamConnectError      502  (refused, reset, DNS)
        ├── UpstreamTimeout           504  timeout_error
        └── UpstreamProtocolError     502  (malformed body or stream)

A guard refuses a call by raising one of these; the server renders it in the
caller's format through the caller's dialect (``Dialect.render_error``, which reads the type
names above), so no handler builds error bodies by hand and this module knows no format.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AIUnavailable",
    "AuthenticationFailed",
    "BastionError",
    "BodyTooLarge",
    "BudgetExceeded",
    "ConfigError",
    "Conflict",
    "HeadersTooLarge",
    "InputTooLarge",
    "InvalidRequest",
    "NotFound",
    "OutputBlocked",
    "PermissionDenied",
    "RateLimited",
    "RequestTimeout",
    "StateUnavailable",
    "TooManyStreams",
    "UnprocessableRequest",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamExhausted",
    "UpstreamProtocolError",
    "UpstreamTimeout",
]


class BastionError(Exception):
    """Base of every error Bastion raises on purpose."""

    status: ClassVar[int] = 500
    # the names each client format's SDKs know the error by (its dialect renders the body)
    anthropic_type: ClassVar[str] = "api_error"
    openai_type: ClassVar[str] = "server_error"
    openai_code: ClassVar[str | None] = None

    guard: str | None = None  # set by the pipeline: which guard refused
    request_id: str | None = None  # set by the gateway: the record of the refused call

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def http_status(self) -> int:
        return self.status

    def headers(self) -> dict[str, str]:
        """Extra response headers (Retry-After and the like)."""
        return {}

    def extra(self) -> dict[str, Any]:
        """Extra fields for the error object (which cap, which guard)."""
        return {}


class InvalidRequest(BastionError):
    status = 400
    anthropic_type = "invalid_request_error"
    openai_type = "invalid_request_error"


class BodyTooLarge(InvalidRequest):
    status = 413
    anthropic_type = "request_too_large"
    openai_code = "request_too_large"


class HeadersTooLarge(InvalidRequest):
    """Request headers over the server's size or count limit: refused before any work."""

    status = 431
    openai_code = "request_header_fields_too_large"


class RequestTimeout(InvalidRequest):
    """The client sent its headers or body too slowly: a stalled connection holds nothing."""

    status = 408
    openai_code = "request_timeout"


class InputTooLarge(InvalidRequest):
    openai_code = "context_length_exceeded"


class AuthenticationFailed(BastionError):
    status = 401
    anthropic_type = "authentication_error"
    openai_type = "invalid_request_error"
    openai_code = "invalid_api_key"


class PermissionDenied(BastionError):
    status = 403
    anthropic_type = "permission_error"
    openai_type = "invalid_request_error"
    openai_code = "permission_denied"


class NotFound(BastionError):
    status = 404
    anthropic_type = "not_found_error"
    openai_type = "invalid_request_error"
    openai_code = "model_not_found"


class Conflict(BastionError):
    status = 409
    anthropic_type = "invalid_request_error"
    openai_type = "invalid_request_error"
    openai_code = "conflict"


class UnprocessableRequest(BastionError):
    status = 422
    anthropic_type = "invalid_request_error"
    openai_type = "invalid_request_error"
    openai_code = "unprocessable"


class RateLimited(BastionError):
    status = 429
    anthropic_type = "rate_limit_error"
    openai_type = "rate_limit_error"
    openai_code = "rate_limit_exceeded"

    def __init__(
        self, message: str, *, retry_after: float | None = None, scope: str | None = None
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.scope = scope

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"retry-after": str(max(1, int(self.retry_after + 0.999)))}

    def extra(self) -> dict[str, Any]:
        return {"scope": self.scope} if self.scope else {}


class BudgetExceeded(RateLimited):
    openai_code = "budget_exceeded"


class TooManyStreams(RateLimited):
    """Too many open streams for one key or user in this process: one caller cannot hold them all."""

    openai_code = "concurrency_limit_exceeded"


class AIUnavailable(BastionError):
    """No deployment can answer (kill switch, all failed, deadline spent): the documented degraded answer."""

    status = 503
    anthropic_type = "ai_unavailable"
    openai_type = "ai_unavailable"
    openai_code = "ai_unavailable"

    def __init__(self, message: str, *, reason: str = "unavailable") -> None:
        super().__init__(message)
        self.reason = reason

    def extra(self) -> dict[str, Any]:
        return {"reason": self.reason}


class UpstreamExhausted(AIUnavailable):
    """Every deployment failed: the status and type say how (429 rate limited, 529 overloaded,
    502 bad answers, 504 timeouts), with the soonest Retry-After where one is known, and
    ``x-should-retry`` tells the SDKs whether their own retry could help (Bastion already
    retried and failed over, so mostly it cannot)."""

    _TYPES: ClassVar[dict[int, tuple[str, str]]] = {
        429: ("rate_limit_error", "rate_limit_error"),
        529: ("overloaded_error", "server_error"),
        504: ("timeout_error", "server_error"),
    }

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        status: int,
        retry_after: float | None = None,
        failure: str | None = None,
    ) -> None:
        super().__init__(message, reason=reason)
        self._status = status
        self.retry_after = retry_after
        self.failure = failure
        self.anthropic_type, self.openai_type = self._TYPES.get(  # type: ignore[misc]
            status, ("api_error", "server_error")
        )
        self.openai_code = "rate_limit_exceeded" if status == 429 else "upstream_unavailable"  # type: ignore[misc]

    def http_status(self) -> int:
        return self._status

    def headers(self) -> dict[str, str]:
        hs = {"x-should-retry": "true" if self._status in (429, 529) else "false"}
        if self.retry_after is not None:
            hs["retry-after"] = str(max(1, int(self.retry_after + 0.999)))
        return hs

    def extra(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reason": self.reason}
        if self.failure:
            out["failure"] = self.failure
        return out


class OutputBlocked(BastionError):
    """The model's answer was withheld by an output guard (a leaked canary, say)."""

    status = 422
    anthropic_type = "output_blocked"
    openai_type = "output_blocked"
    openai_code = "output_blocked"


class ConfigError(BastionError):
    """A bad configuration, found at start-up; the message names the key (and line)."""


class StateUnavailable(BastionError):
    status = 503
    anthropic_type = "api_error"
    openai_type = "server_error"
    openai_code = "state_unavailable"


class UpstreamError(BastionError):
    """A provider failed. Carries the provider's status and body when it sent one."""

    status = 502
    anthropic_type = "api_error"
    openai_type = "server_error"
    openai_code = "upstream_error"

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int | None = None,
        upstream_body: bytes | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.upstream_status = upstream_status
        self.upstream_body = upstream_body
        self.retry_after = retry_after


class UpstreamConnectError(UpstreamError):
    """The connection failed; ``reached`` is False only when the request cannot have arrived."""

    reached = True


class UpstreamTimeout(UpstreamError):
    status = 504
    anthropic_type = "timeout_error"
    openai_type = "timeout"
    openai_code = "upstream_timeout"


class UpstreamProtocolError(UpstreamError):
    pass

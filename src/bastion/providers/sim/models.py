"""The model catalogue endpoints (``GET /v1/models``) in each provider's list shape."""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from ..base import Format
from .result import SimResult, once
from .wire_errors import error_result

DEFAULT_MODELS = (
    "sim-small",
    "sim-large",
    "claude-sonnet-4-5",
    "claude-haiku-4-5",
    "claude-opus-4-1",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4o-mini",
)
_CREATED = 1735689600  # 2025-01-01T00:00:00Z: a fixed date keeps listings reproducible
_CREATED_AT = "2025-01-01T00:00:00Z"


def list_models(fmt: Format, models: Sequence[str], request_id: str) -> SimResult:
    """OpenAI's ``{"object": "list"}`` or Anthropic's paged ``{"data", "has_more"}``."""
    if fmt is Format.ANTHROPIC:
        data = [_anthropic_model(m) for m in models]
        body = orjson.dumps(
            {
                "data": data,
                "has_more": False,
                "first_id": models[0] if models else None,
                "last_id": models[-1] if models else None,
            }
        )
    else:
        body = orjson.dumps({"object": "list", "data": [_openai_model(m) for m in models]})
    return _json(fmt, body, request_id)


def get_model(fmt: Format, models: Sequence[str], model: str, request_id: str) -> SimResult:
    """One model, or the provider's 404 for a name it does not serve."""
    if model not in models:
        if fmt is Format.ANTHROPIC:
            return error_result(fmt, 404, request_id, message=f"model: {model}")
        return error_result(
            fmt,
            404,
            request_id,
            message=f"The model '{model}' does not exist",
            param="model",
            code="model_not_found",
        )
    obj = _anthropic_model(model) if fmt is Format.ANTHROPIC else _openai_model(model)
    return _json(fmt, orjson.dumps(obj), request_id)


def _anthropic_model(model: str) -> dict[str, object]:
    return {
        "type": "model",
        "id": model,
        "display_name": model.replace("-", " ").title(),
        "created_at": _CREATED_AT,
        "lifecycle": "active",
    }


def _openai_model(model: str) -> dict[str, object]:
    return {"id": model, "object": "model", "created": _CREATED, "owned_by": "bastion-sim"}


def _json(fmt: Format, body: bytes, request_id: str) -> SimResult:
    rid = "request-id" if fmt is Format.ANTHROPIC else "x-request-id"
    headers = {
        "content-type": "application/json",
        rid: request_id,
        "content-length": str(len(body)),
    }
    return SimResult(200, headers, once(body))

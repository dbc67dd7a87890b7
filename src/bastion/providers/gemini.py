"""Google Gemini (Generative Language API): where a request goes and what its body leaves out.

From the API reference (ai.google.dev/api/generate-content): ``POST {base}/v1beta/models/
{model}:generateContent`` answers one ``GenerateContentResponse``; ``POST {base}/v1beta/models/
{model}:streamGenerateContent?alt=sse`` streams them as server-sent events (without ``alt=sse``
the stream is one JSON array, which the gateway never asks for). The API key goes in the
``x-goog-api-key`` header (ai.google.dev/gemini-api/docs/api-key), never in the URL, so it
stays out of logs. The model is a path segment, percent-encoded (it can come from a
deployment's ``{model}``), and the body carries no ``model`` field.

Vertex AI (``{region}-aiplatform.googleapis.com/v1/projects/.../publishers/google/models/...``
with a google-auth token) is not supported here.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from ..errors import InvalidRequest

__all__ = ["API_VERSION", "DEFAULT_BASE_URL", "body", "url"]

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

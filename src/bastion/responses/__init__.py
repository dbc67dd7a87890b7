"""The OpenAI Responses API (``POST /v1/responses``), served through the chat gateway path."""

from __future__ import annotations

from .handler import ResponsesApi
from .request import Translated, to_chat
from .response import from_chat
from .stream import ResponsesEmitter, ResponsesStream

__all__ = [
    "ResponsesApi",
    "ResponsesEmitter",
    "ResponsesStream",
    "Translated",
    "from_chat",
    "to_chat",
]

"""The degraded answer: when no deployment can answer, the product around the AI keeps working.

In ``error`` mode the caller gets a 503 with the stable type ``ai_unavailable``;
in ``message`` mode a normal-looking assistant message carrying the configured
text, marked by the ``x-bastion-degraded`` header, streamed if a stream was asked.
The message is written by the client's dialect, so it is whatever its SDK parses.
"""

from __future__ import annotations

from ..dialects import Dialect, dialect_for


def canned_body(fmt: str | Dialect, model: str, text: str) -> bytes:
    """A whole answer carrying ``text`` in the client's format."""
    return dialect_for(fmt).canned_body(model, text)


def canned_stream(fmt: str | Dialect, model: str, text: str, include_usage: bool) -> list[bytes]:
    """The same answer as a complete stream in the client's format."""
    return dialect_for(fmt).canned_stream(model, text, include_usage)

"""One object per wire format: everything the gateway asks of a format (``base`` says what).

``dialect_for(fmt)`` gives the client dialect of a format, ``wire_for(fmt)`` what Bastion reads
of a provider's answers in it; both accept a dialect already resolved, so code handed either
a format or a dialect resolves it once. A format without one raises ``NoDialect``.
"""

from __future__ import annotations

from ..providers.translate._stream_splice import SpliceDiverged
from .anthropic import ANTHROPIC, AnthropicDialect
from .base import (
    Dialect,
    EditArgs,
    HoldJudge,
    MalformedEvent,
    NoDialect,
    Scope,
    Slot,
    Splicer,
    StreamView,
    TextRun,
    ToolHold,
    WatchState,
    Wire,
)
from .openai import OPENAI, OpenAIDialect

__all__ = [
    "ANTHROPIC",
    "OPENAI",
    "AnthropicDialect",
    "Dialect",
    "EditArgs",
    "HoldJudge",
    "MalformedEvent",
    "NoDialect",
    "OpenAIDialect",
    "Scope",
    "Slot",
    "SpliceDiverged",
    "Splicer",
    "StreamView",
    "TextRun",
    "ToolHold",
    "WatchState",
    "Wire",
    "dialect_for",
    "find_wire",
    "wire_for",
]

_DIALECTS: tuple[Dialect, ...] = (ANTHROPIC, OPENAI)


def dialect_for(fmt: str | Dialect) -> Dialect:
    """The dialect of a client format (a ``Format`` or its value); a dialect is returned as is."""
    if isinstance(fmt, Dialect):
        return fmt
    for d in _DIALECTS:
        if d.format == fmt:
            return d
    raise NoDialect(f"no client dialect for wire format {fmt!r}")


def wire_for(fmt: str | Wire) -> Wire:
    """How Bastion reads answers in a format (every client dialect is also a wire)."""
    if isinstance(fmt, Wire):
        return fmt
    return dialect_for(fmt)


def find_wire(fmt: str | Wire) -> Wire | None:
    """The wire of a format, or None for one only a provider speaks (Bastion sends it
    translated and reads its answers translated, so nothing format-specific applies)."""
    try:
        return wire_for(fmt)
    except NoDialect:
        return None

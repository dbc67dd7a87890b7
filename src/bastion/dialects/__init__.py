"""One object per wire format: everything the gateway asks of a format (``base`` says what).

``dialect_for(fmt)`` gives the client dialect of a format, ``wire_for(fmt)`` what Bastion reads
of a provider's answers in it; both accept a dialect already resolved, so code handed either
a format or a dialect resolves it once. A format without one raises ``NoDialect``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

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
    TraceParts,
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
    "TraceParts",
    "WatchState",
    "Wire",
    "dialect_for",
    "find_wire",
    "wire_for",
]

_ORDER: tuple[Dialect, ...] = (ANTHROPIC, OPENAI)
# read-only: a format's value to its dialect (a Format is a str, so both look up alike)
_DIALECTS: Mapping[str, Dialect] = MappingProxyType({d.format.value: d for d in _ORDER})


def dialect_for(fmt: str | Dialect) -> Dialect:
    """The dialect of a client format (a ``Format`` or its value); a dialect is returned as is."""
    if isinstance(fmt, str):
        for d in _ORDER:
            if d.format is fmt:  # a Format member: no hashing (an enum's hash is slow)
                return d
        found = _DIALECTS.get(fmt)
        if found is None:
            raise NoDialect(f"no client dialect for wire format {fmt!r}")
        return found
    return fmt


def wire_for(fmt: str | Wire) -> Wire:
    """How Bastion reads answers in a format (every client dialect is also a wire)."""
    return dialect_for(fmt) if isinstance(fmt, str) else fmt


def find_wire(fmt: str | Wire) -> Wire | None:
    """The wire of a format, or None for one only a provider speaks (Bastion sends it
    translated and reads its answers translated, so nothing format-specific applies)."""
    try:
        return wire_for(fmt)
    except NoDialect:
        return None

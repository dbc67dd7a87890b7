"""A detector's raw result, internal to the package: it carries the normalised value."""

from __future__ import annotations

from dataclasses import dataclass

from ._types import PiiType


@dataclass(frozen=True, slots=True)
class Hit:
    """A validated span; ``key`` (the normalised value) picks the placeholder and never leaves a session."""

    type: PiiType
    start: int
    end: int
    key: object
    source: str


def word_char(ch: str) -> bool:
    """ASCII ``\\w``: what may not sit right before or after most tokens."""
    return ch.isascii() and (ch.isalnum() or ch == "_")

"""Token usage of one answer: a module of its own, with no imports from the rest of Bastion,
so that provider code (``providers/base.py``) can name the type without reaching ``call``."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Usage"]


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

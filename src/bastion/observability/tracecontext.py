"""W3C trace context: take the client's ``traceparent`` or start a trace, and mint our span."""

from __future__ import annotations

import os
import re

_TP = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def new_id(nbytes: int) -> str:
    return os.urandom(nbytes).hex()


def parse_traceparent(value: str | None) -> tuple[str, str | None, str]:
    """Return (trace_id, parent_span_id, flags); a missing or malformed header starts a new trace."""
    if value:
        m = _TP.match(value.strip().lower())
        if m and m.group(1) != "ff" and m.group(2) != "0" * 32 and m.group(3) != "0" * 16:
            return m.group(2), m.group(3), m.group(4)
    return new_id(16), None, "01"


def format_traceparent(trace_id: str, span_id: str, flags: str = "01") -> str:
    return f"00-{trace_id}-{span_id}-{flags}"

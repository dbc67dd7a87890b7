"""JSON text for whatever a tool returned: it never raises and is always encodable as UTF-8.

A result that a tool produced (and, for a side effect, an action that already happened) must
reach the model and the idempotency store whatever it contains. orjson is the fast path and
what results have always rendered as (datetimes as RFC 3339, dataclasses as objects), but it
refuses integers past 64 bits, lone surrogates, non-string keys and deep nesting; stdlib json
takes those, with lone surrogates written as ``\\uXXXX`` escapes, and a value neither can
write is sent as its ``str``. Reading back uses stdlib json too, which keeps big integers exact
(orjson would turn them into floats) and reads what the fallback wrote.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

import orjson

__all__ = ["dumps", "loads", "safe_text"]

_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def safe_text(text: str) -> str:
    """``text`` with lone surrogates replaced by U+FFFD, so it can be sent anywhere."""
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)


def _describe(value: Any) -> str:
    try:
        return str(value)
    except Exception:
        return f"<{type(value).__name__}>"


def dumps(value: Any) -> str:
    """Compact JSON text for ``value``; unknown types by ``str``. Never raises."""
    try:
        return orjson.dumps(value, default=str).decode()
    except Exception:
        pass
    try:
        text = json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))
    except Exception:
        text = json.dumps(_describe(value), ensure_ascii=False)
    # Inside JSON text a lone surrogate can only sit in a string, where its escape means the same.
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def loads(data: bytes | str) -> Any:
    """The value ``dumps`` (or orjson) wrote, big integers exact; raises ``ValueError`` if none."""
    return json.loads(data)

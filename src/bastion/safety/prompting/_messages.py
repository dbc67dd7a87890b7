"""Rewriting untrusted text in a raw request body safely, and the last user turn's text.

Guards see the client's body as parsed JSON; where its untrusted texts and its system text
are is the client's dialect's (``call.dialect.untrusted_texts`` / ``system_text``), each
found as a ``Slot`` with a path. This rewrites copy-on-write along one path, because the
body's containers may be shared with the client's original request.
"""

from __future__ import annotations

from typing import Any

from ...dialects import Slot

Path = tuple[str | int, ...]

__all__ = ["Path", "Slot", "last_user_text", "replace"]


def last_user_text(body: dict[str, Any]) -> str:
    """The text of the last user turn (what a scope check reads)."""
    for m in reversed(body.get("messages") or ()):
        if isinstance(m, dict) and m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "\n".join(
                    b["text"]
                    for b in content
                    if isinstance(b, dict)
                    and b.get("type") in ("text", "input_text")
                    and isinstance(b.get("text"), str)
                )
            return ""
    return ""


def replace(body: dict[str, Any], path: Path, value: str) -> None:
    """Set ``body[path] = value``, copying every container on the way so nothing shared is mutated."""
    node: Any = body
    for key in path[:-1]:
        child = node[key]
        copy: Any = list(child) if isinstance(child, list) else dict(child)
        node[key] = copy
        node = copy
    node[path[-1]] = value

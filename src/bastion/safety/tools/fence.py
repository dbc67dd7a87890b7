"""Tool output goes back to the model as fenced data that cannot close its own fence.

Output is escaped like XML text (``& < >``, plus the fullwidth and small look-alikes of the
angle brackets), so no ``</tool_result>`` — real or confusable — survives inside it. Rendering
never raises (whatever the tool returned, the model gets an answer) and never leaves a lone
surrogate in the text, which would make the whole turn unsendable.
"""

from __future__ import annotations

import html
from typing import Any, Final

from ._jsontext import dumps, safe_text

__all__ = ["fence_tool_result", "render_content"]

_CONFUSABLES: Final = str.maketrans(
    {"\uff1c": "&#xFF1C;", "\uff1e": "&#xFF1E;", "\ufe64": "&#xFE64;", "\ufe65": "&#xFE65;"}
)


def render_content(content: Any) -> str:
    """Text as-is; anything else as JSON (unknown types by ``str``) so the model can parse it."""
    if isinstance(content, str):
        return safe_text(content)
    return dumps(content)


def fence_tool_result(name: str, content: Any, *, max_chars: int | None = None) -> str:
    """``<tool_result name="...">`` + escaped content + ``</tool_result>``, truncated if long."""
    body = render_content(content)
    if max_chars is not None and len(body) > max_chars:
        body = body[:max_chars] + f"\n[truncated {len(body) - max_chars} characters]"
    escaped = html.escape(body, quote=False).translate(_CONFUSABLES)
    attr = html.escape(safe_text(name), quote=True)
    return f'<tool_result name="{attr}">\n{escaped}\n</tool_result>'

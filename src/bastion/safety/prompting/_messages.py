"""Where untrusted text sits in a raw Anthropic or OpenAI request body, and how to rewrite it safely.

Guards see the client's body as parsed JSON; this walks it without translating it and
rewrites copy-on-write along one path, because the body's containers may be shared
with the client's original request.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

Source = Literal["user", "tool"]
Path = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Slot:
    """One untrusted text in a body: who supplied it, where it is, and the text."""

    source: Source
    path: Path
    text: str
    earlier: bool = False  # before the last assistant turn (history the client sent again)

    @property
    def where(self) -> str:
        out = ""
        for p in self.path:
            out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
        return out


def system_text(body: dict[str, Any], fmt: str) -> str:
    """The trusted instructions of a request (Anthropic ``system``; OpenAI system/developer turns)."""
    if fmt == "anthropic":
        return _joined(body.get("system"))
    parts = [
        _joined(m.get("content"))
        for m in body.get("messages") or ()
        if isinstance(m, dict) and m.get("role") in ("system", "developer")
    ]
    return "\n".join(p for p in parts if p)


def _joined(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            b["text"] for b in content if isinstance(b, dict) and isinstance(b.get("text"), str)
        )
    return ""


def slots(body: dict[str, Any], fmt: str, scope: Literal["last", "all"] = "last") -> Iterator[Slot]:
    """Untrusted texts: user turns and tool results after the last assistant turn, or (``all``)
    every one, those before it marked ``earlier``."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return
    last = 0
    for i, m in enumerate(messages):
        if isinstance(m, dict) and m.get("role") == "assistant":
            last = i + 1
    for i in range(last if scope == "last" else 0, len(messages)):
        m = messages[i]
        if not isinstance(m, dict):
            continue
        role = m.get("role")
        path: Path = ("messages", i, "content")
        if role == "user":
            yield from _content(path, m.get("content"), "user", i < last)
        elif role in ("tool", "function") and fmt == "openai":
            yield from _content(path, m.get("content"), "tool", i < last)


def _content(path: Path, content: Any, source: Source, earlier: bool) -> Iterator[Slot]:
    if isinstance(content, str):
        yield Slot(source, path, content, earlier)
        return
    if not isinstance(content, list):
        return
    for j, block in enumerate(content):
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind in ("text", "input_text") and isinstance(block.get("text"), str):
            yield Slot(source, (*path, j, "text"), block["text"], earlier)
        elif kind == "tool_result":
            yield from _content((*path, j, "content"), block.get("content"), "tool", earlier)
        elif kind == "document":
            src = block.get("source")
            if (
                isinstance(src, dict)
                and src.get("type") == "text"
                and isinstance(src.get("data"), str)
            ):
                yield Slot("tool", (*path, j, "source", "data"), src["data"], earlier)


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

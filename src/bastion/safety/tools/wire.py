"""Tool calls, results and definitions in both wire formats, so the executor speaks neither.

Anthropic: assistant ``tool_use`` blocks in, a user turn of ``tool_result`` blocks out, tools as
``{name, description, input_schema}``. OpenAI: ``tool_calls`` on the assistant message in
(arguments as a JSON string), one ``role: "tool"`` message per call out, tools as
``{type: "function", function: {name, description, parameters}}``. The provider-neutral parts
of ``bastion.providers.translate.model`` convert too, for code that already holds them.
Whatever arguments a model wrote, converting them never raises and never changes a value (a
64-bit-overflowing integer stays exact; text that is not clean JSON travels as ``_raw``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bastion.providers.translate.model import TextPart, ToolCallPart, ToolResultPart

from ..validation.jsonout import strict_loads
from ._jsontext import dumps
from .executor import ToolCall, ToolResult
from .registry import ToolSpec

__all__ = [
    "anthropic_tool_definitions",
    "calls_from_anthropic",
    "calls_from_openai",
    "calls_from_parts",
    "calls_to_anthropic",
    "calls_to_openai",
    "openai_tool_definitions",
    "results_to_anthropic",
    "results_to_openai",
    "results_to_parts",
]


def _content(message_or_content: Mapping[str, Any] | Iterable[Any]) -> Iterable[Any]:
    if isinstance(message_or_content, Mapping):
        content = message_or_content.get("content") or []
        return [] if isinstance(content, str) else content
    return message_or_content


def calls_from_anthropic(message_or_content: Mapping[str, Any] | Iterable[Any]) -> list[ToolCall]:
    """The ``tool_use`` blocks of an assistant message (or of its content list)."""
    return [
        ToolCall(str(block.get("id", "")), str(block.get("name", "")), block.get("input") or {})
        for block in _content(message_or_content)
        if isinstance(block, Mapping) and block.get("type") == "tool_use"
    ]


def calls_from_openai(message: Mapping[str, Any]) -> list[ToolCall]:
    """The ``tool_calls`` of an assistant message; arguments stay raw until validated."""
    calls: list[ToolCall] = []
    for item in message.get("tool_calls") or []:
        function = item.get("function") or {}
        arguments = function.get("arguments")
        calls.append(
            ToolCall(
                str(item.get("id", "")),
                str(function.get("name", "")),
                arguments if isinstance(arguments, str | Mapping) else "",
            )
        )
    return calls


def _arguments(call: ToolCall) -> dict[str, Any]:
    if isinstance(call.arguments, str):
        try:
            value = strict_loads(call.arguments or "{}")
        except (ValueError, RecursionError):
            return {"_raw": call.arguments}
        return value if isinstance(value, dict) else {"_raw": call.arguments}
    return dict(call.arguments)


def calls_to_anthropic(calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
    """``tool_use`` content blocks for an assistant message."""
    return [{"type": "tool_use", "id": c.id, "name": c.name, "input": _arguments(c)} for c in calls]


def calls_to_openai(calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
    """The ``tool_calls`` list of an assistant message."""
    out: list[dict[str, Any]] = []
    for c in calls:
        raw = c.arguments if isinstance(c.arguments, str) else dumps(dict(c.arguments))
        out.append({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": raw}})
    return out


def results_to_anthropic(results: Sequence[ToolResult]) -> dict[str, Any]:
    """One user turn carrying every result, fenced, errors marked ``is_error``."""
    blocks: list[dict[str, Any]] = []
    for r in results:
        block: dict[str, Any] = {"type": "tool_result", "tool_use_id": r.call_id, "content": r.text}
        if not r.ok:
            block["is_error"] = True
        blocks.append(block)
    return {"role": "user", "content": blocks}


def results_to_openai(results: Sequence[ToolResult]) -> list[dict[str, Any]]:
    """One ``role: "tool"`` message per result, fenced, in call order."""
    return [{"role": "tool", "tool_call_id": r.call_id, "content": r.text} for r in results]


def calls_from_parts(parts: Iterable[Any]) -> list[ToolCall]:
    """Tool calls from provider-neutral message parts."""
    return [ToolCall(p.id, p.name, p.arguments) for p in parts if isinstance(p, ToolCallPart)]


def results_to_parts(results: Sequence[ToolResult]) -> list[ToolResultPart]:
    """Provider-neutral result parts, fenced text inside."""
    return [ToolResultPart(r.call_id, (TextPart(r.text),), not r.ok) for r in results]


def anthropic_tool_definitions(specs: Iterable[ToolSpec]) -> list[dict[str, Any]]:
    """The ``tools`` array of an Anthropic Messages request."""
    return [
        {"name": s.name, "description": s.description, "input_schema": dict(s.parameters)}
        for s in specs
    ]


def openai_tool_definitions(specs: Iterable[ToolSpec]) -> list[dict[str, Any]]:
    """The ``tools`` array of an OpenAI Chat Completions request."""
    return [
        {
            "type": "function",
            "function": {
                "name": s.name,
                "description": s.description,
                "parameters": dict(s.parameters),
            },
        }
        for s in specs
    ]

"""Tool sandbox: the model requests tool calls; the executor decides what runs for whom."""

from __future__ import annotations

from .executor import ToolCall, ToolExecutor, ToolResult, idempotency_key
from .fence import fence_tool_result
from .registry import ToolContext, ToolError, ToolFunc, ToolRegistry, ToolSpec
from .wire import (
    anthropic_tool_definitions,
    calls_from_anthropic,
    calls_from_openai,
    calls_from_parts,
    calls_to_anthropic,
    calls_to_openai,
    openai_tool_definitions,
    results_to_anthropic,
    results_to_openai,
    results_to_parts,
)

__all__ = [
    "ToolCall",
    "ToolContext",
    "ToolError",
    "ToolExecutor",
    "ToolFunc",
    "ToolRegistry",
    "ToolResult",
    "ToolSpec",
    "anthropic_tool_definitions",
    "calls_from_anthropic",
    "calls_from_openai",
    "calls_from_parts",
    "calls_to_anthropic",
    "calls_to_openai",
    "fence_tool_result",
    "idempotency_key",
    "openai_tool_definitions",
    "results_to_anthropic",
    "results_to_openai",
    "results_to_parts",
]

"""Anthropic Messages bodies ↔ the neutral model (requests and non-streaming responses).

Dropped when parsing, because OpenAI Chat Completions has no counterpart:
``thinking`` and ``redacted_thinking`` blocks and the ``thinking`` setting, ``document``,
``search_result`` and server-tool blocks, server tools (``web_search_*``, ``bash_*`` …),
``cache_control`` markers, citations, ``top_k``, ``service_tier``, ``container``,
``output_config``/``output_format``, ``file`` image sources, and tool ``strict``/``input_examples``.

Emitting adapts the conversation to Anthropic's rules: consecutive same-role turns are
merged, ``tool_result`` blocks are moved to the front of their user turn, a conversation
that opens with the assistant gets a short user turn first, empty text is dropped,
whitespace-only stop sequences (which Anthropic rejects) are dropped, ``temperature`` is
clamped to 0..1, and ``max_tokens`` (required) defaults to ``DEFAULT_MAX_TOKENS``.
"""

from __future__ import annotations

from typing import Any

from ._common import (
    ANTHROPIC_MSG_PREFIX,
    anthropic_tool_id,
    as_dict,
    as_int,
    as_list,
    as_str,
    message_id,
    opt_float,
    opt_int,
    parse_arguments,
)
from .model import (
    ImagePart,
    Message,
    Part,
    Request,
    Response,
    Role,
    StopReason,
    TextPart,
    Tool,
    ToolCallPart,
    ToolChoice,
    ToolChoiceMode,
    ToolResultPart,
    Usage,
)

DEFAULT_MAX_TOKENS = 4096
LEADING_USER_TEXT = "(conversation continues)"

STOP_FROM_ANTHROPIC: dict[str, StopReason] = {
    "end_turn": StopReason.END_TURN,
    "stop_sequence": StopReason.STOP_SEQUENCE,
    "max_tokens": StopReason.MAX_TOKENS,
    "model_context_window_exceeded": StopReason.MAX_TOKENS,
    "tool_use": StopReason.TOOL_USE,
    "pause_turn": StopReason.END_TURN,
    "refusal": StopReason.REFUSAL,
}
STOP_TO_ANTHROPIC: dict[StopReason, str] = {
    StopReason.END_TURN: "end_turn",
    StopReason.STOP_SEQUENCE: "stop_sequence",
    StopReason.MAX_TOKENS: "max_tokens",
    StopReason.TOOL_USE: "tool_use",
    StopReason.REFUSAL: "refusal",
    StopReason.ERROR: "end_turn",
}


# --- requests ---------------------------------------------------------------------------


def parse_request(body: dict[str, Any]) -> Request:
    """Read an Anthropic Messages request body."""
    disable_parallel = as_dict(body.get("tool_choice")).get("disable_parallel_tool_use")
    return Request(
        messages=tuple(
            _parse_message(m) for m in as_list(body.get("messages")) if isinstance(m, dict)
        ),
        system=_system_text(body.get("system")),
        tools=tuple(_parse_tool(t) for t in as_list(body.get("tools")) if _is_client_tool(t)),
        tool_choice=_parse_tool_choice(body.get("tool_choice")),
        parallel_tool_calls=None if disable_parallel is None else not disable_parallel,
        stop=tuple(s for s in as_list(body.get("stop_sequences")) if isinstance(s, str)),
        max_tokens=opt_int(body.get("max_tokens")),
        temperature=opt_float(body.get("temperature")),
        top_p=opt_float(body.get("top_p")),
        user_id=as_str(as_dict(body.get("metadata")).get("user_id")) or None,
        stream=body.get("stream") is True,
    )


def emit_request(req: Request, model: str) -> dict[str, Any]:
    """Write an Anthropic Messages request body."""
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": req.max_tokens if req.max_tokens is not None else DEFAULT_MAX_TOKENS,
        "messages": _emit_messages(req.messages),
    }
    if req.system:
        body["system"] = req.system
    stops = [s for s in req.stop if s.strip()]
    if stops:
        body["stop_sequences"] = stops
    if req.temperature is not None:
        body["temperature"] = min(1.0, max(0.0, req.temperature))
    if req.top_p is not None:
        body["top_p"] = req.top_p
    if req.user_id:
        body["metadata"] = {"user_id": req.user_id}
    if req.tools:
        body["tools"] = [_emit_tool(t) for t in req.tools]
        choice = _emit_tool_choice(req.tool_choice, req.parallel_tool_calls)
        if choice is not None:
            body["tool_choice"] = choice
    if req.stream:
        body["stream"] = True
    return body


def _system_text(system: object) -> str | None:
    if isinstance(system, str):
        return system or None
    texts = [as_str(b.get("text")) for b in as_list(system) if isinstance(b, dict)]
    joined = "\n\n".join(t for t in texts if t)
    return joined or None


def _parse_message(msg: dict[str, Any]) -> Message:
    role = Role.ASSISTANT if msg.get("role") == "assistant" else Role.USER
    content = msg.get("content")
    if isinstance(content, str):
        return Message(role, (TextPart(content),) if content else ())
    parts = [_parse_block(b) for b in as_list(content) if isinstance(b, dict)]
    return Message(role, tuple(p for p in parts if p is not None))


def _parse_block(block: dict[str, Any]) -> Part | None:
    kind = block.get("type")
    if kind == "text":
        text = as_str(block.get("text"))
        return TextPart(text) if text else None
    if kind == "image":
        return _parse_image(block)
    if kind == "tool_use":
        return ToolCallPart(
            id=as_str(block.get("id")),
            name=as_str(block.get("name")),
            arguments=parse_arguments(block.get("input")),
        )
    if kind == "tool_result":
        return ToolResultPart(
            tool_call_id=as_str(block.get("tool_use_id")),
            content=_parse_result_content(block.get("content")),
            is_error=block.get("is_error") is True,
        )
    return None


def _parse_image(block: dict[str, Any]) -> ImagePart | None:
    source = as_dict(block.get("source"))
    if source.get("type") == "base64":
        return ImagePart(
            media_type=as_str(source.get("media_type")) or None, data=as_str(source.get("data"))
        )
    if source.get("type") == "url":
        return ImagePart(url=as_str(source.get("url")))
    return None


def _parse_result_content(content: object) -> tuple[TextPart | ImagePart, ...]:
    if isinstance(content, str):
        return (TextPart(content),) if content else ()
    out: list[TextPart | ImagePart] = []
    for block in as_list(content):
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" and as_str(block.get("text")):
            out.append(TextPart(as_str(block.get("text"))))
        elif block.get("type") == "image" and (image := _parse_image(block)) is not None:
            out.append(image)
    return tuple(out)


def _is_client_tool(tool: object) -> bool:
    return (
        isinstance(tool, dict) and tool.get("type") in (None, "custom") and bool(tool.get("name"))
    )


def _parse_tool(tool: dict[str, Any]) -> Tool:
    schema = tool.get("input_schema")
    return Tool(
        name=as_str(tool.get("name")),
        description=tool.get("description") if isinstance(tool.get("description"), str) else None,
        parameters=schema if isinstance(schema, dict) else {"type": "object", "properties": {}},
    )


def _parse_tool_choice(choice: object) -> ToolChoice | None:
    kind = as_dict(choice).get("type")
    if kind == "tool":
        return ToolChoice(ToolChoiceMode.TOOL, as_str(as_dict(choice).get("name")))
    if kind in ("auto", "any", "none"):
        return ToolChoice(ToolChoiceMode(kind))
    return None


def _emit_messages(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for msg in messages:
        blocks = [b for b in (_emit_part(p) for p in msg.parts) if b is not None]
        if not blocks:
            continue
        if out and out[-1]["role"] == msg.role.value:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": msg.role.value, "content": blocks})
    for turn in out:
        if turn["role"] == "user":
            turn["content"].sort(key=lambda b: b["type"] != "tool_result")
    if out and out[0]["role"] == "assistant":
        out.insert(0, {"role": "user", "content": [{"type": "text", "text": LEADING_USER_TEXT}]})
    return out


def _emit_part(part: Part) -> dict[str, Any] | None:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text} if part.text else None
    if isinstance(part, ImagePart):
        return emit_image(part)
    if isinstance(part, ToolCallPart):
        return {
            "type": "tool_use",
            "id": anthropic_tool_id(part.id, "toolu_missing"),
            "name": part.name,
            "input": part.arguments,
        }
    block: dict[str, Any] = {
        "type": "tool_result",
        "tool_use_id": anthropic_tool_id(part.tool_call_id, "toolu_missing"),
    }
    content = [b for b in (_emit_part(p) for p in part.content) if b is not None]
    if len(content) == 1 and content[0]["type"] == "text":
        block["content"] = content[0]["text"]
    elif content:
        block["content"] = content
    if part.is_error:
        block["is_error"] = True
    return block


def emit_image(image: ImagePart) -> dict[str, Any]:
    """An Anthropic image block: base64 source when inline, url source otherwise."""
    if image.data is not None:
        source = {
            "type": "base64",
            "media_type": image.media_type or "image/png",
            "data": image.data,
        }
        return {"type": "image", "source": source}
    return {"type": "image", "source": {"type": "url", "url": image.url or ""}}


def _emit_tool(tool: Tool) -> dict[str, Any]:
    out: dict[str, Any] = {"name": tool.name, "input_schema": tool.parameters}
    if tool.description:
        out["description"] = tool.description
    return out


def _emit_tool_choice(choice: ToolChoice | None, parallel: bool | None) -> dict[str, Any] | None:
    disable = parallel is False
    if choice is None:
        return {"type": "auto", "disable_parallel_tool_use": True} if disable else None
    if choice.mode is ToolChoiceMode.NONE:
        return {"type": "none"}
    out: dict[str, Any] = {"type": choice.mode.value}
    if choice.mode is ToolChoiceMode.TOOL:
        out["name"] = choice.name or ""
    if disable:
        out["disable_parallel_tool_use"] = True
    return out


# --- responses --------------------------------------------------------------------------


def parse_response(body: dict[str, Any]) -> Response:
    """Read an Anthropic Messages response body."""
    parts: list[TextPart | ToolCallPart] = []
    for block in as_list(body.get("content")):
        part = _parse_block(block) if isinstance(block, dict) else None
        if isinstance(part, TextPart | ToolCallPart):
            parts.append(part)
    reason = body.get("stop_reason")
    return Response(
        id=as_str(body.get("id")),
        model=as_str(body.get("model")),
        parts=tuple(parts),
        stop_reason=None
        if reason is None
        else STOP_FROM_ANTHROPIC.get(str(reason), StopReason.END_TURN),
        stop_sequence=body.get("stop_sequence")
        if isinstance(body.get("stop_sequence"), str)
        else None,
        usage=parse_usage(as_dict(body.get("usage"))),
    )


def emit_response(resp: Response, model: str) -> dict[str, Any]:
    """Write an Anthropic Messages response body."""
    content = [b for b in (_emit_part(p) for p in resp.parts) if b is not None]
    return {
        "id": message_id(resp.id, ANTHROPIC_MSG_PREFIX),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": None if resp.stop_reason is None else STOP_TO_ANTHROPIC[resp.stop_reason],
        "stop_sequence": resp.stop_sequence,
        "usage": emit_usage(resp.usage),
    }


def parse_usage(usage: dict[str, Any], base: Usage | None = None) -> Usage:
    """Read Anthropic usage; fields absent here keep their value from ``base`` (stream deltas)."""
    base = base or Usage()

    def pick(key: str, old: int) -> int:
        return as_int(usage[key]) if usage.get(key) is not None else old

    return Usage(
        input_tokens=pick("input_tokens", base.input_tokens),
        output_tokens=pick("output_tokens", base.output_tokens),
        cache_read=pick("cache_read_input_tokens", base.cache_read),
        cache_write=pick("cache_creation_input_tokens", base.cache_write),
    )


def emit_usage(usage: Usage) -> dict[str, int]:
    """Anthropic usage: input excludes cache reads and writes, which get their own fields."""
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_creation_input_tokens": usage.cache_write,
        "cache_read_input_tokens": usage.cache_read,
    }

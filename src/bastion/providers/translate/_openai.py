"""OpenAI Chat Completions bodies ↔ the neutral model (requests and non-streaming responses).

Dropped when parsing, because Anthropic Messages has no counterpart: ``n``, ``seed``,
``logprobs``/``top_logprobs``, ``logit_bias``, ``frequency_penalty``/``presence_penalty``,
``response_format``, ``reasoning_effort``, ``verbosity``, ``modalities``/``audio``,
``prediction``, ``store``/``metadata``, ``service_tier``, ``web_search_options``,
``prompt_cache_*``, the legacy ``functions``/``function_call`` and ``function`` role,
message ``name``, ``input_audio`` and ``file`` content parts, image ``detail``,
custom (non-function) tools and ``allowed_tools`` tool choices, and tool ``strict``.
System and developer messages anywhere in the list become the one system text, in order.

Emitting: ``max_completion_tokens`` (``max_tokens`` is rejected by reasoning models),
at most 4 stop sequences (OpenAI's limit), ``stream_options.include_usage`` whenever
streaming, ``tool_choice``/``parallel_tool_calls`` only alongside tools (OpenAI rejects
them otherwise). Tool results become ``tool`` messages; as those carry text only, images
from a tool result follow in a user message. ``is_error`` becomes ``TOOL_ERROR_PREFIX``
in front of the result text, and that prefix is read back as ``is_error``.
"""

from __future__ import annotations

from typing import Any

from ._common import (
    OPENAI_MSG_PREFIX,
    as_dict,
    as_int,
    as_list,
    as_str,
    dump_arguments,
    image_from_url,
    image_to_url,
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

TOOL_ERROR_PREFIX = "[tool error] "
MAX_STOP_SEQUENCES = 4

STOP_FROM_OPENAI: dict[str, StopReason] = {
    "stop": StopReason.END_TURN,
    "length": StopReason.MAX_TOKENS,
    "tool_calls": StopReason.TOOL_USE,
    "function_call": StopReason.TOOL_USE,
    "content_filter": StopReason.REFUSAL,
    "error": StopReason.ERROR,
}
STOP_TO_OPENAI: dict[StopReason, str] = {
    StopReason.END_TURN: "stop",
    StopReason.STOP_SEQUENCE: "stop",
    StopReason.MAX_TOKENS: "length",
    StopReason.TOOL_USE: "tool_calls",
    StopReason.REFUSAL: "content_filter",
    StopReason.ERROR: "stop",
}
_CHOICE_TO_OPENAI = {
    ToolChoiceMode.AUTO: "auto",
    ToolChoiceMode.ANY: "required",
    ToolChoiceMode.NONE: "none",
}
_CHOICE_FROM_OPENAI = {
    "auto": ToolChoiceMode.AUTO,
    "required": ToolChoiceMode.ANY,
    "none": ToolChoiceMode.NONE,
}


# --- requests ---------------------------------------------------------------------------


def parse_request(body: dict[str, Any]) -> Request:
    """Read an OpenAI Chat Completions request body."""
    system: list[str] = []
    messages: list[Message] = []
    for msg in as_list(body.get("messages")):
        if not isinstance(msg, dict):
            continue
        role = msg.get("role")
        if role in ("system", "developer"):
            if text := "\n\n".join(p.text for p in _text_parts(msg.get("content"))):
                system.append(text)
        elif role == "tool":
            result = _parse_tool_message(msg)
            if messages and messages[-1].role is Role.USER and _all_results(messages[-1]):
                messages[-1] = Message(Role.USER, (*messages[-1].parts, result))
            else:
                messages.append(Message(Role.USER, (result,)))
        elif role == "assistant":
            messages.append(_parse_assistant(msg))
        elif role == "user":
            messages.append(Message(Role.USER, _parse_user_content(msg.get("content"))))
    stop = body.get("stop")
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    user = body.get("user") or body.get("safety_identifier")
    parallel = body.get("parallel_tool_calls")
    return Request(
        messages=tuple(messages),
        system="\n\n".join(system) or None,
        tools=tuple(_parse_tool(t) for t in as_list(body.get("tools")) if _is_function_tool(t)),
        tool_choice=_parse_tool_choice(body.get("tool_choice")),
        parallel_tool_calls=parallel if isinstance(parallel, bool) else None,
        stop=(stop,)
        if isinstance(stop, str)
        else tuple(s for s in as_list(stop) if isinstance(s, str)),
        max_tokens=opt_int(max_tokens),
        temperature=opt_float(body.get("temperature")),
        top_p=opt_float(body.get("top_p")),
        user_id=user if isinstance(user, str) and user else None,
        stream=body.get("stream") is True,
    )


def emit_request(req: Request, model: str) -> dict[str, Any]:
    """Write an OpenAI Chat Completions request body."""
    messages: list[dict[str, Any]] = []
    if req.system:
        messages.append({"role": "system", "content": req.system})
    for msg in req.messages:
        messages.extend(_emit_message(msg))
    body: dict[str, Any] = {"model": model, "messages": messages}
    if req.max_tokens is not None:
        body["max_completion_tokens"] = req.max_tokens
    if req.stop:
        body["stop"] = list(req.stop[:MAX_STOP_SEQUENCES])
    if req.temperature is not None:
        body["temperature"] = req.temperature
    if req.top_p is not None:
        body["top_p"] = req.top_p
    if req.user_id:
        body["user"] = req.user_id
    if req.tools:
        body["tools"] = [_emit_tool(t) for t in req.tools]
        if req.tool_choice is not None:
            body["tool_choice"] = _emit_tool_choice(req.tool_choice)
        if req.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = req.parallel_tool_calls
    if req.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def _text_parts(content: object) -> list[TextPart]:
    if isinstance(content, str):
        return [TextPart(content)] if content else []
    out: list[TextPart] = []
    for part in as_list(content):
        text = as_str(as_dict(part).get("text")) or as_str(as_dict(part).get("refusal"))
        if text and as_dict(part).get("type") in ("text", "refusal"):
            out.append(TextPart(text))
    return out


def _parse_user_content(content: object) -> tuple[Part, ...]:
    if isinstance(content, str):
        return (TextPart(content),) if content else ()
    parts: list[Part] = []
    for part in as_list(content):
        kind = as_dict(part).get("type")
        if kind == "text" and (text := as_str(part.get("text"))):
            parts.append(TextPart(text))
        elif kind == "image_url":
            url = as_str(as_dict(part.get("image_url")).get("url"))
            if url:
                parts.append(image_from_url(url))
    return tuple(parts)


def _parse_assistant(msg: dict[str, Any]) -> Message:
    parts: list[Part] = list(_text_parts(msg.get("content")))
    if refusal := as_str(msg.get("refusal")):
        parts.append(TextPart(refusal))
    for call in as_list(msg.get("tool_calls")):
        fn = as_dict(as_dict(call).get("function"))
        if as_dict(call).get("type", "function") == "function" and fn:
            args = parse_arguments(fn.get("arguments"))
            parts.append(
                ToolCallPart(id=as_str(call.get("id")), name=as_str(fn.get("name")), arguments=args)
            )
    return Message(Role.ASSISTANT, tuple(parts))


def _parse_tool_message(msg: dict[str, Any]) -> ToolResultPart:
    texts = _text_parts(msg.get("content"))
    is_error = bool(texts) and texts[0].text.startswith(TOOL_ERROR_PREFIX)
    if is_error:
        rest = texts[0].text[len(TOOL_ERROR_PREFIX) :]
        texts = ([TextPart(rest)] if rest else []) + texts[1:]
    return ToolResultPart(as_str(msg.get("tool_call_id")), tuple(texts), is_error)


def _all_results(msg: Message) -> bool:
    return all(isinstance(p, ToolResultPart) for p in msg.parts)


def _is_function_tool(tool: object) -> bool:
    return (
        isinstance(tool, dict)
        and tool.get("type", "function") == "function"
        and bool(tool.get("function"))
    )


def _parse_tool(tool: dict[str, Any]) -> Tool:
    fn = as_dict(tool.get("function"))
    params = fn.get("parameters")
    return Tool(
        name=as_str(fn.get("name")),
        description=fn.get("description") if isinstance(fn.get("description"), str) else None,
        parameters=params if isinstance(params, dict) else {"type": "object", "properties": {}},
    )


def _parse_tool_choice(choice: object) -> ToolChoice | None:
    if isinstance(choice, str):
        mode = _CHOICE_FROM_OPENAI.get(choice)
        return ToolChoice(mode) if mode else None
    if as_dict(choice).get("type") == "function":
        return ToolChoice(
            ToolChoiceMode.TOOL, as_str(as_dict(as_dict(choice).get("function")).get("name"))
        )
    return None


def _emit_message(msg: Message) -> list[dict[str, Any]]:
    if msg.role is Role.ASSISTANT:
        texts = [p for p in msg.parts if isinstance(p, TextPart) and p.text]
        calls = [p for p in msg.parts if isinstance(p, ToolCallPart)]
        if not texts and not calls:
            return []
        out: dict[str, Any] = {"role": "assistant", "content": _emit_text_content(texts)}
        if calls:
            out["tool_calls"] = [_emit_tool_call(c) for c in calls]
        return [out]
    tool_msgs: list[dict[str, Any]] = []
    rest: list[TextPart | ImagePart] = []
    for part in msg.parts:
        if isinstance(part, ToolResultPart):
            tool_msgs.append(_emit_tool_result(part))
            rest.extend(p for p in part.content if isinstance(p, ImagePart))
        elif isinstance(part, TextPart | ImagePart):
            rest.append(part)
    if rest:
        tool_msgs.append({"role": "user", "content": _emit_user_content(rest)})
    return tool_msgs


def _emit_text_content(texts: list[TextPart]) -> str | list[dict[str, Any]] | None:
    if not texts:
        return None
    if len(texts) == 1:
        return texts[0].text
    return [{"type": "text", "text": t.text} for t in texts]


def _emit_user_content(parts: list[TextPart | ImagePart]) -> str | list[dict[str, Any]]:
    if len(parts) == 1 and isinstance(parts[0], TextPart):
        return parts[0].text
    out: list[dict[str, Any]] = []
    for p in parts:
        if isinstance(p, TextPart):
            out.append({"type": "text", "text": p.text})
        else:
            out.append({"type": "image_url", "image_url": {"url": image_to_url(p)}})
    return out


def _emit_tool_result(part: ToolResultPart) -> dict[str, Any]:
    texts = [p.text for p in part.content if isinstance(p, TextPart)]
    if part.is_error:
        texts = [TOOL_ERROR_PREFIX + (texts[0] if texts else ""), *texts[1:]]
    content: str | list[dict[str, Any]]
    content = (
        texts[0]
        if len(texts) == 1
        else [{"type": "text", "text": t} for t in texts]
        if texts
        else ""
    )
    return {"role": "tool", "tool_call_id": part.tool_call_id, "content": content}


def _emit_tool_call(call: ToolCallPart) -> dict[str, Any]:
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": dump_arguments(call.arguments)},
    }


def _emit_tool(tool: Tool) -> dict[str, Any]:
    fn: dict[str, Any] = {"name": tool.name}
    if tool.description:
        fn["description"] = tool.description
    fn["parameters"] = tool.parameters
    return {"type": "function", "function": fn}


def _emit_tool_choice(choice: ToolChoice) -> str | dict[str, Any]:
    if choice.mode is ToolChoiceMode.TOOL:
        return {"type": "function", "function": {"name": choice.name or ""}}
    return _CHOICE_TO_OPENAI[choice.mode]


# --- responses --------------------------------------------------------------------------


def parse_response(body: dict[str, Any]) -> Response:
    """Read an OpenAI Chat Completions response body (first choice only)."""
    choices = as_list(body.get("choices"))
    choice = as_dict(choices[0]) if choices else {}
    msg = _parse_assistant(as_dict(choice.get("message")))
    parts = tuple(p for p in msg.parts if isinstance(p, TextPart | ToolCallPart))
    stop = stop_from_openai(
        choice.get("finish_reason"), has_tools=any(isinstance(p, ToolCallPart) for p in parts)
    )
    if stop is StopReason.END_TURN and as_str(as_dict(choice.get("message")).get("refusal")):
        stop = StopReason.REFUSAL
    return Response(
        id=as_str(body.get("id")),
        model=as_str(body.get("model")),
        parts=parts,
        stop_reason=stop,
        usage=parse_usage(as_dict(body.get("usage"))),
    )


def emit_response(resp: Response, model: str, created: int) -> dict[str, Any]:
    """Write an OpenAI Chat Completions response body."""
    text = "".join(p.text for p in resp.parts if isinstance(p, TextPart))
    calls = [_emit_tool_call(p) for p in resp.parts if isinstance(p, ToolCallPart)]
    message: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None}
    if calls:
        message["tool_calls"] = calls
    finish = "stop" if resp.stop_reason is None else STOP_TO_OPENAI[resp.stop_reason]
    return {
        "id": message_id(resp.id, OPENAI_MSG_PREFIX),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": emit_usage(resp.usage),
    }


def stop_from_openai(reason: object, *, has_tools: bool) -> StopReason | None:
    """Map a finish_reason; ``stop`` after tool calls (compatible servers) means tool use."""
    if reason is None:
        return None
    stop = STOP_FROM_OPENAI.get(str(reason), StopReason.END_TURN)
    return StopReason.TOOL_USE if stop is StopReason.END_TURN and has_tools else stop


def parse_usage(usage: dict[str, Any]) -> Usage:
    """OpenAI's prompt_tokens include cached tokens; take them out to get Anthropic-style input."""
    details = as_dict(usage.get("prompt_tokens_details"))
    cached = as_int(details.get("cached_tokens"))
    written = as_int(details.get("cache_write_tokens"))
    return Usage(
        input_tokens=max(0, as_int(usage.get("prompt_tokens")) - cached - written),
        output_tokens=as_int(usage.get("completion_tokens")),
        cache_read=cached,
        cache_write=written,
    )


def emit_usage(usage: Usage) -> dict[str, Any]:
    """OpenAI usage: prompt_tokens = input + cache reads + cache writes."""
    prompt = usage.input_tokens + usage.cache_read + usage.cache_write
    details: dict[str, int] = {"cached_tokens": usage.cache_read}
    if usage.cache_write:
        details["cache_write_tokens"] = usage.cache_write
    return {
        "prompt_tokens": prompt,
        "completion_tokens": usage.output_tokens,
        "total_tokens": prompt + usage.output_tokens,
        "prompt_tokens_details": details,
    }

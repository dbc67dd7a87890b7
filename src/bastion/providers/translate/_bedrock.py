"""AWS Bedrock Converse bodies ↔ the neutral model (requests, non-streaming responses, errors).

Field by field, from the Bedrock Runtime API reference (``Converse``, ``Message``,
``ContentBlock``, ``ToolConfiguration``, ``InferenceConfiguration``, ``TokenUsage``) and the
service model botocore ships (``botocore/data/bedrock-runtime/*/service-2.json``):

- request: ``messages[]`` of ``{role: "user" | "assistant", content[]}``; a content block is
  a union with exactly one member: ``{text}``, ``{image: {format: png|jpeg|gif|webp, source:
  {bytes: base64}}}``, ``{toolUse: {toolUseId, name, input}}`` or ``{toolResult: {toolUseId,
  content: [{text} | {json} | {image}], status: success|error}}``; ``system: [{text}]``;
  ``inferenceConfig: {maxTokens, temperature (0..1), topP, stopSequences}``; ``toolConfig:
  {tools: [{toolSpec: {name, description, inputSchema: {json}}}], toolChoice: {auto: {}} |
  {any: {}} | {tool: {name}}}``. The model is in the URL (``/model/{modelId}/converse``), and
  so is streaming (``/converse-stream``).
- response: ``{output: {message: {role, content}}, stopReason, usage: {inputTokens,
  outputTokens, totalTokens, cacheReadInputTokens, cacheWriteInputTokens}, metrics:
  {latencyMs}}``: no id and no model (the transport supplies them: ``x-amzn-requestid`` and
  the URL's model id). ``inputTokens`` excludes cache reads and writes, as in Anthropic's usage.
- stop reasons: ``end_turn``, ``tool_use``, ``max_tokens``, ``stop_sequence``,
  ``guardrail_intervened``, ``content_filtered``, ``malformed_model_output``,
  ``malformed_tool_use``, ``model_context_window_exceeded``.
- errors: the type is the ``x-amzn-errortype`` header (``ThrottlingException:http://…``, the
  part before ``:``), the body ``{"message": …}`` (``Message`` from some front ends).

Emitting adapts the conversation to Converse's rules as Anthropic's emitter does: roles
alternate (same-role turns are merged), tool results lead their user turn, a conversation
opening with the assistant gets a short user turn first, empty text is dropped, tool ids are
kept when they match ``[a-zA-Z0-9_.:-]{1,64}`` (others become a digest of the id, so distinct
ids stay distinct), temperature is clamped to 0..1. A request with tool history must carry
``toolConfig`` (Converse refuses ``toolUse``/``toolResult`` blocks otherwise).

Dropped, for lack of a counterpart: ``parallel_tool_calls``, ``user``/``metadata.user_id``,
image URLs (Converse takes inline bytes or S3 locations only), and ``tool_choice: none``
(Converse has no such choice: tools are dropped when the conversation has no tool history,
else kept under ``auto``). Bedrock's own extras (``guardrailConfig``,
``additionalModelRequestFields``, documents, video, reasoning, citations, cache points) are
dropped when read.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from ._common import (
    as_dict,
    as_int,
    as_list,
    as_str,
    dumps,
    loads_object,
    opt_float,
    opt_int,
    parse_arguments,
)
from .model import (
    ErrorKind,
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

LEADING_USER_TEXT = "(conversation continues)"
EMPTY_RESULT_TEXT = "(no output)"
_TOOL_ID_BAD = re.compile(r"[^a-zA-Z0-9_.:-]")
_TOOL_NAME_BAD = re.compile(r"[^a-zA-Z0-9_-]")
_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/gif": "gif", "image/webp": "webp"}
_MEDIA = {v: k for k, v in _FORMATS.items()}

STOP_FROM_BEDROCK: dict[str, StopReason] = {
    "end_turn": StopReason.END_TURN,
    "tool_use": StopReason.TOOL_USE,
    "max_tokens": StopReason.MAX_TOKENS,
    "stop_sequence": StopReason.STOP_SEQUENCE,
    "guardrail_intervened": StopReason.REFUSAL,
    "content_filtered": StopReason.REFUSAL,
    "malformed_model_output": StopReason.ERROR,
    "malformed_tool_use": StopReason.ERROR,
    "model_context_window_exceeded": StopReason.MAX_TOKENS,
}
STOP_TO_BEDROCK: dict[StopReason, str] = {
    StopReason.END_TURN: "end_turn",
    StopReason.TOOL_USE: "tool_use",
    StopReason.MAX_TOKENS: "max_tokens",
    StopReason.STOP_SEQUENCE: "stop_sequence",
    StopReason.REFUSAL: "content_filtered",
    StopReason.ERROR: "malformed_model_output",
}

# x-amzn-errortype (before ":") -> neutral kind; the statuses are the service model's
ERROR_KINDS: dict[str, ErrorKind] = {
    "ValidationException": ErrorKind.INVALID_REQUEST,
    "ThrottlingException": ErrorKind.RATE_LIMIT,
    "ServiceQuotaExceededException": ErrorKind.RATE_LIMIT,
    "ModelNotReadyException": ErrorKind.OVERLOADED,
    "ServiceUnavailableException": ErrorKind.OVERLOADED,
    "InternalServerException": ErrorKind.API_ERROR,
    "ModelErrorException": ErrorKind.API_ERROR,
    "ModelStreamErrorException": ErrorKind.API_ERROR,
    "ModelTimeoutException": ErrorKind.TIMEOUT,
    "AccessDeniedException": ErrorKind.PERMISSION,
    "ResourceNotFoundException": ErrorKind.NOT_FOUND,
    "UnrecognizedClientException": ErrorKind.AUTHENTICATION,
    "InvalidSignatureException": ErrorKind.AUTHENTICATION,
    "IncompleteSignatureException": ErrorKind.AUTHENTICATION,
    "ExpiredTokenException": ErrorKind.AUTHENTICATION,
}
ERROR_TYPES: dict[ErrorKind, tuple[int, str]] = {
    ErrorKind.INVALID_REQUEST: (400, "ValidationException"),
    ErrorKind.CONTEXT_LENGTH: (400, "ValidationException"),
    ErrorKind.AUTHENTICATION: (403, "UnrecognizedClientException"),
    ErrorKind.BILLING: (403, "AccessDeniedException"),
    ErrorKind.PERMISSION: (403, "AccessDeniedException"),
    ErrorKind.NOT_FOUND: (404, "ResourceNotFoundException"),
    ErrorKind.REQUEST_TOO_LARGE: (400, "ValidationException"),
    ErrorKind.RATE_LIMIT: (429, "ThrottlingException"),
    ErrorKind.API_ERROR: (500, "InternalServerException"),
    ErrorKind.TIMEOUT: (408, "ModelTimeoutException"),
    ErrorKind.OVERLOADED: (503, "ServiceUnavailableException"),
}
# what Bedrock says when the prompt does not fit (the wording varies by model family)
_TOO_LONG = ("too long", "too many input tokens", "context length", "context window")


# --- requests ---------------------------------------------------------------------------


def parse_request(body: dict[str, Any]) -> Request:
    """Read a Converse request body (the model id and streaming come from the URL)."""
    inference = as_dict(body.get("inferenceConfig"))
    tool_config = as_dict(body.get("toolConfig"))
    return Request(
        messages=tuple(
            _parse_message(m) for m in as_list(body.get("messages")) if isinstance(m, dict)
        ),
        system=_system_text(body.get("system")),
        tools=tuple(
            _parse_tool(as_dict(t.get("toolSpec")))
            for t in as_list(tool_config.get("tools"))
            if isinstance(t, dict) and isinstance(t.get("toolSpec"), dict)
        ),
        tool_choice=_parse_tool_choice(tool_config.get("toolChoice")),
        stop=tuple(s for s in as_list(inference.get("stopSequences")) if isinstance(s, str)),
        max_tokens=opt_int(inference.get("maxTokens")),
        temperature=opt_float(inference.get("temperature")),
        top_p=opt_float(inference.get("topP")),
    )


def emit_request(req: Request, model: str) -> dict[str, Any]:
    """Write a Converse request body (``model`` goes in the URL, see ``providers.bedrock``)."""
    del model  # the model id is a path segment, not a body field
    messages = _emit_messages(req.messages)
    body: dict[str, Any] = {"messages": messages}
    if req.system:
        body["system"] = [{"text": req.system}]
    inference: dict[str, Any] = {}
    if req.max_tokens is not None:
        inference["maxTokens"] = max(1, req.max_tokens)
    if req.temperature is not None:
        inference["temperature"] = min(1.0, max(0.0, req.temperature))
    if req.top_p is not None:
        inference["topP"] = min(1.0, max(0.0, req.top_p))
    stops = [s for s in req.stop if s]
    if stops:
        inference["stopSequences"] = stops
    if inference:
        body["inferenceConfig"] = inference
    history = any(
        isinstance(p, ToolCallPart | ToolResultPart) for m in req.messages for p in m.parts
    )
    choice = req.tool_choice
    if req.tools and (history or choice is None or choice.mode is not ToolChoiceMode.NONE):
        config: dict[str, Any] = {"tools": [_emit_tool(t) for t in req.tools]}
        emitted = _emit_tool_choice(choice)
        if emitted is not None:
            config["toolChoice"] = emitted
        body["toolConfig"] = config
    elif history:
        # Converse refuses tool blocks without a toolConfig: declare the tools the history used
        names = sorted(
            {p.name for m in req.messages for p in m.parts if isinstance(p, ToolCallPart)}
        )
        tools = [Tool(n, None, {"type": "object", "properties": {}}) for n in names if n]
        if tools:
            body["toolConfig"] = {"tools": [_emit_tool(t) for t in tools]}
    return body


def _system_text(system: object) -> str | None:
    if isinstance(system, str):
        return system or None
    texts = [as_str(b.get("text")) for b in as_list(system) if isinstance(b, dict)]
    joined = "\n\n".join(t for t in texts if t)
    return joined or None


def _parse_message(msg: dict[str, Any]) -> Message:
    role = Role.ASSISTANT if msg.get("role") == "assistant" else Role.USER
    parts = [_parse_block(b) for b in as_list(msg.get("content")) if isinstance(b, dict)]
    return Message(role, tuple(p for p in parts if p is not None))


def _parse_block(block: dict[str, Any]) -> Part | None:
    if "text" in block:
        text = as_str(block.get("text"))
        return TextPart(text) if text else None
    if "image" in block:
        return _parse_image(as_dict(block.get("image")))
    if "toolUse" in block:
        use = as_dict(block.get("toolUse"))
        return ToolCallPart(
            id=as_str(use.get("toolUseId")),
            name=as_str(use.get("name")),
            arguments=parse_arguments(use.get("input")),
        )
    if "toolResult" in block:
        result = as_dict(block.get("toolResult"))
        return ToolResultPart(
            tool_call_id=as_str(result.get("toolUseId")),
            content=_parse_result_content(result.get("content")),
            is_error=result.get("status") == "error",
        )
    return None


def _parse_image(image: dict[str, Any]) -> ImagePart | None:
    data = as_dict(image.get("source")).get("bytes")
    if not isinstance(data, str):
        return None
    return ImagePart(media_type=_MEDIA.get(as_str(image.get("format")), "image/png"), data=data)


def _parse_result_content(content: object) -> tuple[TextPart | ImagePart, ...]:
    out: list[TextPart | ImagePart] = []
    for block in as_list(content):
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str) and block["text"]:
            out.append(TextPart(block["text"]))
        elif "json" in block:
            out.append(TextPart(dumps(block["json"])))
        elif "image" in block and (image := _parse_image(as_dict(block["image"]))) is not None:
            out.append(image)
    return tuple(out)


def _parse_tool(spec: dict[str, Any]) -> Tool:
    schema = as_dict(spec.get("inputSchema")).get("json")
    return Tool(
        name=as_str(spec.get("name")),
        description=spec.get("description") if isinstance(spec.get("description"), str) else None,
        parameters=schema if isinstance(schema, dict) else {"type": "object", "properties": {}},
    )


def _parse_tool_choice(choice: object) -> ToolChoice | None:
    c = as_dict(choice)
    if isinstance(c.get("tool"), dict):
        return ToolChoice(ToolChoiceMode.TOOL, as_str(c["tool"].get("name")))
    if "any" in c:
        return ToolChoice(ToolChoiceMode.ANY)
    if "auto" in c:
        return ToolChoice(ToolChoiceMode.AUTO)
    return None


def tool_id(raw: str, fallback: str) -> str:
    """A ``toolUseId`` Converse accepts (``[a-zA-Z0-9_.:-]``, 1 to 64 characters).

    One it accepts goes as is; another becomes a digest of it, the same for a call and its
    result, and different for different ids (``call/1`` and ``call?1`` must not become one id,
    nor two long ids alike in their first 64 characters, or results answer the wrong call).
    """
    if not raw:
        return fallback
    if len(raw) <= 64 and not _TOOL_ID_BAD.search(raw):
        return raw
    return "tooluse_" + hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:48]


def _tool_name(raw: str) -> str:
    return (_TOOL_NAME_BAD.sub("_", raw) or "tool")[:64]


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
            turn["content"].sort(key=lambda b: "toolResult" not in b)
    if out and out[0]["role"] == "assistant":
        out.insert(0, {"role": "user", "content": [{"text": LEADING_USER_TEXT}]})
    return out


def _emit_image(image: ImagePart) -> dict[str, Any] | None:
    if image.data is None:
        return None  # Converse takes inline bytes or S3 locations, never a URL
    fmt = _FORMATS.get(image.media_type or "image/png", "png")
    return {"image": {"format": fmt, "source": {"bytes": image.data}}}


def _emit_part(part: Part) -> dict[str, Any] | None:
    if isinstance(part, TextPart):
        return {"text": part.text} if part.text else None
    if isinstance(part, ImagePart):
        return _emit_image(part)
    if isinstance(part, ToolCallPart):
        return {
            "toolUse": {
                "toolUseId": tool_id(part.id, "tooluse_missing"),
                "name": _tool_name(part.name),
                "input": part.arguments,
            }
        }
    content = [b for b in (_emit_part(p) for p in part.content) if b is not None]
    result: dict[str, Any] = {
        "toolUseId": tool_id(part.tool_call_id, "tooluse_missing"),
        "content": content or [{"text": EMPTY_RESULT_TEXT}],
    }
    if part.is_error:
        result["status"] = "error"
    return {"toolResult": result}


def _emit_tool(tool: Tool) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": _tool_name(tool.name), "inputSchema": {"json": tool.parameters}}
    if tool.description:
        spec["description"] = tool.description
    return {"toolSpec": spec}


def _emit_tool_choice(choice: ToolChoice | None) -> dict[str, Any] | None:
    # auto is Converse's default, and only some model families take a toolChoice at all
    # (Claude, Mistral Large, Nova): it is sent only when it asks for something else
    if choice is None or choice.mode in (ToolChoiceMode.AUTO, ToolChoiceMode.NONE):
        return None
    if choice.mode is ToolChoiceMode.ANY:
        return {"any": {}}
    return {"tool": {"name": _tool_name(choice.name or "")}}


# --- responses --------------------------------------------------------------------------


def parse_response(body: dict[str, Any], *, id_: str = "", model: str = "") -> Response:
    """Read a Converse response body; ``id_`` and ``model`` come from the header and the URL."""
    message = as_dict(as_dict(body.get("output")).get("message"))
    parts: list[TextPart | ToolCallPart] = []
    for block in as_list(message.get("content")):
        part = _parse_block(block) if isinstance(block, dict) else None
        if isinstance(part, TextPart | ToolCallPart):
            parts.append(part)
    reason = body.get("stopReason")
    return Response(
        id=id_,
        model=model,
        parts=tuple(parts),
        stop_reason=None
        if reason is None
        else STOP_FROM_BEDROCK.get(str(reason), StopReason.END_TURN),
        usage=parse_usage(as_dict(body.get("usage"))),
    )


def emit_response(resp: Response, model: str) -> dict[str, Any]:
    """Write a Converse response body (no id or model: Converse carries neither)."""
    del model
    content = [b for b in (_emit_part(p) for p in resp.parts) if b is not None]
    stop = resp.stop_reason or StopReason.END_TURN
    return {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": STOP_TO_BEDROCK[stop],
        "usage": emit_usage(resp.usage),
        "metrics": {"latencyMs": 0},
    }


def parse_usage(usage: Mapping[str, Any]) -> Usage:
    """Converse ``TokenUsage``: ``inputTokens`` excludes cache reads and writes."""
    return Usage(
        input_tokens=as_int(usage.get("inputTokens")),
        output_tokens=as_int(usage.get("outputTokens")),
        cache_read=as_int(usage.get("cacheReadInputTokens")),
        cache_write=as_int(usage.get("cacheWriteInputTokens")),
    )


def emit_usage(usage: Usage) -> dict[str, int]:
    out = {
        "inputTokens": usage.input_tokens,
        "outputTokens": usage.output_tokens,
        "totalTokens": usage.input_tokens
        + usage.output_tokens
        + usage.cache_read
        + usage.cache_write,
    }
    if usage.cache_read:
        out["cacheReadInputTokens"] = usage.cache_read
    if usage.cache_write:
        out["cacheWriteInputTokens"] = usage.cache_write
    return out


# --- errors -----------------------------------------------------------------------------


def error_type(headers: Mapping[str, str], body: Mapping[str, Any] | None = None) -> str:
    """The exception name: ``x-amzn-errortype`` before its ``:``, else the body's ``__type``."""
    raw = headers.get("x-amzn-errortype") or as_str((body or {}).get("__type"))
    return raw.split(":", 1)[0].rsplit("#", 1)[-1]


def parse_error(status: int, headers: Mapping[str, str], raw: bytes) -> tuple[ErrorKind, str]:
    """A Bedrock error answer (status, headers, body) as (kind, message)."""
    from ._errors import kind_from_status

    body = loads_object(raw) if raw else None
    message = as_str((body or {}).get("message")) or as_str((body or {}).get("Message"))
    kind = ERROR_KINDS.get(error_type(headers, body)) or kind_from_status(status)
    if kind is ErrorKind.INVALID_REQUEST and any(w in message.lower() for w in _TOO_LONG):
        kind = ErrorKind.CONTEXT_LENGTH
    return kind, message or f"upstream provider error (HTTP {status})"


def render_error(kind: ErrorKind, message: str) -> tuple[int, dict[str, str], dict[str, Any]]:
    """A Bedrock error answer for ``kind``: status, the ``x-amzn-errortype`` header, body."""
    status, name = ERROR_TYPES[kind]
    return (
        status,
        {"x-amzn-errortype": f"{name}:http://internal.amazon.com/coral/com.amazon.bedrock/"},
        {"message": message},
    )

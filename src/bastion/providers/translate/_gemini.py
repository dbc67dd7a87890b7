"""Gemini ``generateContent`` bodies ↔ the neutral model (requests and non-streaming responses).

Field by field, from the Gemini API reference (ai.google.dev/api/generate-content and the
``Content``/``Part``/``Tool``/``ToolConfig``/``GenerationConfig`` types it links):

- request: ``contents[]`` of ``{role: "user" | "model", parts[]}``; a part is ``{text}``,
  ``{inlineData: {mimeType, data}}``, ``{fileData: {mimeType, fileUri}}``,
  ``{functionCall: {id?, name, args}}`` or ``{functionResponse: {id?, name, response}}``
  (``response`` is a JSON object, and function responses go in a ``user`` turn);
  ``systemInstruction: {parts: [{text}]}``; ``tools: [{functionDeclarations: [{name,
  description, parametersJsonSchema}]}]`` (``parametersJsonSchema`` takes JSON Schema as
  clients write it; the older ``parameters`` takes an OpenAPI subset that refuses e.g.
  ``additionalProperties``; the two are mutually exclusive); ``toolConfig:
  {functionCallingConfig: {mode: AUTO | ANY | NONE, allowedFunctionNames}}``;
  ``generationConfig: {stopSequences (at most 5), maxOutputTokens, temperature, topP}``. The
  model is in the URL, not the body, and so is streaming (``:streamGenerateContent``).
- response: ``candidates[0]: {content: {role: "model", parts}, finishReason, index}``,
  ``usageMetadata: {promptTokenCount, candidatesTokenCount, totalTokenCount,
  cachedContentTokenCount, thoughtsTokenCount}``, ``modelVersion``, ``responseId``; a blocked
  prompt has no candidates and ``promptFeedback.blockReason`` instead. ``finishReason`` is
  ``STOP`` for a natural end, a stop sequence and function calls alike (Candidate.FinishReason).
- finish reasons (``Candidate.FinishReason``): the content filters (``SAFETY``,
  ``RECITATION``, ``BLOCKLIST``, ``PROHIBITED_CONTENT``, ``SPII``, ``IMAGE_SAFETY``,
  ``IMAGE_PROHIBITED_CONTENT``, ``IMAGE_RECITATION``, Vertex's ``MODEL_ARMOR``) and
  ``LANGUAGE`` (an unsupported language: declined, the same every time) are a refusal, which
  clients read as ``content_filter`` / ``refusal``; the model's own failures
  (``MALFORMED_FUNCTION_CALL``, ``UNEXPECTED_TOOL_CALL``, ``TOO_MANY_TOOL_CALLS``,
  ``MALFORMED_RESPONSE``, ``MISSING_THOUGHT_SIGNATURE``, ``NO_IMAGE``, ``IMAGE_OTHER``,
  ``OTHER``) and any reason not listed are an error (``failure``): never a clean finish.
- ``promptTokenCount`` includes ``cachedContentTokenCount``; ``thoughtsTokenCount`` is billed
  as output beside ``candidatesTokenCount``. Parts marked ``thought: true`` are thinking
  summaries, not answer text.

Dropped, for lack of a counterpart: ``parallel_tool_calls``, ``user``/``metadata.user_id``,
stop sequences past five, image ``url``s become ``fileData`` (Gemini fetches only URIs it
knows). Gemini's own extras (``safetySettings``, ``topK``, ``responseSchema``, thinking,
grounding, code execution) are dropped when read, and so are ``thoughtSignature``s, which
no client can carry: a replayed call gets ``SKIP_SIGNATURE``. A ``functionCall`` usually has no ``id``
on this API: one is made from the response id and the call's position, and a function
response names its function (required) by looking up the call with the result's id.
A tool result is ``{"output": text}`` and ``is_error`` one ``{"error": text}``, the keys
``FunctionResponse.response`` documents (without either, the whole object is the output).
"""

from __future__ import annotations

from typing import Any

from ._common import (
    as_dict,
    as_int,
    as_list,
    as_str,
    dump_arguments,
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

MAX_STOP_SEQUENCES = 5
GEMINI_MSG_PREFIX = ""  # responseId has no prefix
UNKNOWN_FUNCTION = "unknown_function"
# Gemini 3 refuses a replayed functionCall without the thoughtSignature it was answered with
# (400 "Function call is missing a thought_signature"); a client of another format cannot
# return it, so replayed calls carry the validator-skip value the thought-signatures guide
# documents for history from elsewhere (ai.google.dev/gemini-api/docs/thought-signatures)
SKIP_SIGNATURE = "skip_thought_signature_validator"
LEADING_USER_TEXT = "(conversation continues)"
_OUTPUT = "output"
_ERROR = "error"

STOP_FROM_GEMINI: dict[str, StopReason] = {
    "STOP": StopReason.END_TURN,
    "MAX_TOKENS": StopReason.MAX_TOKENS,
    # content filters and a declined language: the provider would not answer this
    "SAFETY": StopReason.REFUSAL,
    "RECITATION": StopReason.REFUSAL,
    "LANGUAGE": StopReason.REFUSAL,
    "BLOCKLIST": StopReason.REFUSAL,
    "PROHIBITED_CONTENT": StopReason.REFUSAL,
    "SPII": StopReason.REFUSAL,
    "IMAGE_SAFETY": StopReason.REFUSAL,
    "IMAGE_PROHIBITED_CONTENT": StopReason.REFUSAL,
    "IMAGE_RECITATION": StopReason.REFUSAL,
    "MODEL_ARMOR": StopReason.REFUSAL,
    # the model failed (a retry or another provider may not): an error, never a finish
    "MALFORMED_FUNCTION_CALL": StopReason.ERROR,
    "UNEXPECTED_TOOL_CALL": StopReason.ERROR,
    "TOO_MANY_TOOL_CALLS": StopReason.ERROR,
    "MALFORMED_RESPONSE": StopReason.ERROR,
    "MISSING_THOUGHT_SIGNATURE": StopReason.ERROR,
    "NO_IMAGE": StopReason.ERROR,
    "IMAGE_OTHER": StopReason.ERROR,
    "OTHER": StopReason.ERROR,
}
STOP_TO_GEMINI: dict[StopReason, str] = {
    StopReason.END_TURN: "STOP",
    StopReason.STOP_SEQUENCE: "STOP",
    StopReason.TOOL_USE: "STOP",
    StopReason.MAX_TOKENS: "MAX_TOKENS",
    StopReason.REFUSAL: "SAFETY",
    StopReason.ERROR: "OTHER",
}
_MODES = {ToolChoiceMode.AUTO: "AUTO", ToolChoiceMode.ANY: "ANY", ToolChoiceMode.NONE: "NONE"}


def call_id(response_id: str, index: int) -> str:
    """The id given to the ``index``-th function call of a response that named none."""
    return f"call_{response_id or 'gemini'}_{index}"


# --- requests ---------------------------------------------------------------------------


def parse_request(body: dict[str, Any]) -> Request:
    """Read a Gemini ``generateContent`` request body."""
    reader = _PartReader()
    messages: list[Message] = []
    for content in as_list(body.get("contents")):
        content = as_dict(content)
        role = Role.ASSISTANT if content.get("role") == "model" else Role.USER
        parts = (reader.read(as_dict(raw)) for raw in as_list(content.get("parts")))
        messages.append(Message(role, tuple(p for p in parts if p is not None)))
    system = "\n\n".join(
        t
        for p in as_list(as_dict(body.get("systemInstruction")).get("parts"))
        if (t := part_text(p))
    )
    gen = as_dict(body.get("generationConfig"))
    tools = tuple(
        _parse_tool(as_dict(d))
        for t in as_list(body.get("tools"))
        for d in as_list(as_dict(t).get("functionDeclarations"))
        if as_str(as_dict(d).get("name"))
    )
    return Request(
        messages=tuple(messages),
        system=system or None,
        tools=tools,
        tool_choice=_parse_tool_choice(body.get("toolConfig")),
        stop=tuple(s for s in as_list(gen.get("stopSequences")) if isinstance(s, str)),
        max_tokens=opt_int(gen.get("maxOutputTokens")),
        temperature=opt_float(gen.get("temperature")),
        top_p=opt_float(gen.get("topP")),
    )


def emit_request(req: Request, model: str) -> dict[str, Any]:
    """Write a Gemini request body; ``model`` is kept under that key for the adapter, which
    moves it into the URL (``providers.gemini.body``), as the API takes no model field."""
    body: dict[str, Any] = {"model": model, "contents": _emit_contents(req.messages)}
    if req.system:
        body["systemInstruction"] = {"parts": [{"text": req.system}]}
    if req.tools:
        body["tools"] = [{"functionDeclarations": [_emit_tool(t) for t in req.tools]}]
        if req.tool_choice is not None:
            body["toolConfig"] = {"functionCallingConfig": _emit_tool_choice(req.tool_choice)}
    gen: dict[str, Any] = {}
    if req.stop:
        gen["stopSequences"] = list(req.stop[:MAX_STOP_SEQUENCES])
    if req.max_tokens is not None:
        gen["maxOutputTokens"] = req.max_tokens
    if req.temperature is not None:
        gen["temperature"] = req.temperature
    if req.top_p is not None:
        gen["topP"] = req.top_p
    if gen:
        body["generationConfig"] = gen
    return body


def part_text(part: object) -> str:
    p = as_dict(part)
    return "" if p.get("thought") is True else as_str(p.get("text"))


class _PartReader:
    """Reads request parts; a call without an id gets one, and a response without an id
    answers the oldest unanswered call of its function."""

    def __init__(self) -> None:
        self._calls = 0
        self._pending: dict[str, list[str]] = {}

    def read(self, part: dict[str, Any]) -> Part | None:
        if text := part_text(part):
            return TextPart(text)
        if "inlineData" in part:
            data = as_dict(part["inlineData"])
            media = as_str(data.get("mimeType")) or None
            return ImagePart(media_type=media, data=as_str(data.get("data")))
        if "fileData" in part:
            data = as_dict(part["fileData"])
            media = as_str(data.get("mimeType")) or None
            return ImagePart(media_type=media, url=as_str(data.get("fileUri")))
        if "functionCall" in part:
            fc = as_dict(part["functionCall"])
            name = as_str(fc.get("name"))
            cid = as_str(fc.get("id")) or call_id("", self._calls)
            self._calls += 1
            self._pending.setdefault(name, []).append(cid)
            return ToolCallPart(cid, name, parse_arguments(fc.get("args")))
        if "functionResponse" in part:
            fr = as_dict(part["functionResponse"])
            name = as_str(fr.get("name"))
            waiting = self._pending.get(name) or []
            rid = as_str(fr.get("id"))
            if rid in waiting:
                waiting.remove(rid)
            elif not rid:
                rid = waiting.pop(0) if waiting else name
            return _parse_function_response(rid, fr.get("response"))
        return None


def _parse_function_response(rid: str, response: object) -> ToolResultPart:
    obj = as_dict(response)
    if set(obj) == {_ERROR} and isinstance(obj[_ERROR], str):
        text, is_error = obj[_ERROR], True
    elif set(obj) == {_OUTPUT} and isinstance(obj[_OUTPUT], str):
        text, is_error = obj[_OUTPUT], False
    else:
        text, is_error = (dump_arguments(obj) if obj else ""), False
    return ToolResultPart(rid, (TextPart(text),) if text else (), is_error)


def _parse_tool(decl: dict[str, Any]) -> Tool:
    schema = decl.get("parametersJsonSchema")
    if not isinstance(schema, dict):
        schema = decl.get("parameters")
    return Tool(
        name=as_str(decl.get("name")),
        description=decl.get("description") if isinstance(decl.get("description"), str) else None,
        parameters=schema if isinstance(schema, dict) else {"type": "object", "properties": {}},
    )


def _parse_tool_choice(config: object) -> ToolChoice | None:
    fcc = as_dict(as_dict(config).get("functionCallingConfig"))
    mode = as_str(fcc.get("mode")).upper()
    names = [n for n in as_list(fcc.get("allowedFunctionNames")) if isinstance(n, str)]
    if mode == "ANY":
        if len(names) == 1:
            return ToolChoice(ToolChoiceMode.TOOL, names[0])
        return ToolChoice(ToolChoiceMode.ANY)
    if mode == "NONE":
        return ToolChoice(ToolChoiceMode.NONE)
    if mode in ("AUTO", "VALIDATED"):
        return ToolChoice(ToolChoiceMode.AUTO)
    return None


def _emit_contents(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    names: dict[str, str] = {}  # tool call id -> function name, for the responses
    out: list[dict[str, Any]] = []
    for msg in messages:
        parts: list[dict[str, Any]] = []
        trailing: list[dict[str, Any]] = []
        for p in msg.parts:
            if isinstance(p, ToolCallPart):
                names[p.id] = p.name
                parts.append({"functionCall": _emit_call(p), "thoughtSignature": SKIP_SIGNATURE})
            elif isinstance(p, ToolResultPart):
                parts.append({"functionResponse": _emit_result(p, names)})
                trailing += [_emit_image(i) for i in p.content if isinstance(i, ImagePart)]
            elif isinstance(p, TextPart):
                if p.text:
                    parts.append({"text": p.text})
            else:
                parts.append(_emit_image(p))
        parts += trailing
        if not parts:
            continue
        role = "model" if msg.role is Role.ASSISTANT else "user"
        if out and out[-1]["role"] == role:
            out[-1]["parts"].extend(parts)
        else:
            out.append({"role": role, "parts": parts})
    if out and out[0]["role"] == "model":
        out.insert(0, {"role": "user", "parts": [{"text": LEADING_USER_TEXT}]})
    return out


def _emit_call(call: ToolCallPart) -> dict[str, Any]:
    out: dict[str, Any] = {"name": call.name, "args": call.arguments}
    if call.id:
        out["id"] = call.id
    return out


def _emit_result(part: ToolResultPart, names: dict[str, str]) -> dict[str, Any]:
    text = "\n".join(p.text for p in part.content if isinstance(p, TextPart))
    out: dict[str, Any] = {
        "name": names.get(part.tool_call_id) or UNKNOWN_FUNCTION,
        "response": {_ERROR if part.is_error else _OUTPUT: text},
    }
    if part.tool_call_id:
        out["id"] = part.tool_call_id
    return out


def _emit_image(image: ImagePart) -> dict[str, Any]:
    if image.data is not None:
        return {"inlineData": {"mimeType": image.media_type or "image/png", "data": image.data}}
    return {"fileData": {"mimeType": image.media_type or "image/png", "fileUri": image.url or ""}}


def _emit_tool(tool: Tool) -> dict[str, Any]:
    out: dict[str, Any] = {"name": tool.name}
    if tool.description:
        out["description"] = tool.description
    out["parametersJsonSchema"] = tool.parameters
    return out


def _emit_tool_choice(choice: ToolChoice) -> dict[str, Any]:
    if choice.mode is ToolChoiceMode.TOOL:
        return {"mode": "ANY", "allowedFunctionNames": [choice.name or ""]}
    return {"mode": _MODES[choice.mode]}


# --- responses --------------------------------------------------------------------------


def parse_response(body: dict[str, Any]) -> Response:
    """Read a Gemini ``GenerateContentResponse`` (first candidate only)."""
    rid = as_str(body.get("responseId"))
    cands = as_list(body.get("candidates"))
    cand = as_dict(cands[0]) if cands else {}
    parts: list[TextPart | ToolCallPart] = []
    for raw in as_list(as_dict(cand.get("content")).get("parts")):
        raw = as_dict(raw)
        if text := part_text(raw):
            parts.append(TextPart(text))
        elif "functionCall" in raw:
            fc = as_dict(raw["functionCall"])
            n = sum(isinstance(p, ToolCallPart) for p in parts)
            cid = as_str(fc.get("id")) or call_id(rid, n)
            parts.append(ToolCallPart(cid, as_str(fc.get("name")), parse_arguments(fc.get("args"))))
    has_tools = any(isinstance(p, ToolCallPart) for p in parts)
    stop = stop_from_gemini(cand.get("finishReason"), has_tools=has_tools)
    if not cands and as_dict(body.get("promptFeedback")).get("blockReason"):
        stop = StopReason.REFUSAL
    return Response(
        id=rid,
        model=as_str(body.get("modelVersion")),
        parts=tuple(parts),
        stop_reason=stop,
        usage=parse_usage(as_dict(body.get("usageMetadata"))),
    )


def emit_response(resp: Response, model: str) -> dict[str, Any]:
    """Write a Gemini ``GenerateContentResponse``."""
    parts: list[dict[str, Any]] = []
    for p in resp.parts:
        if isinstance(p, TextPart):
            if p.text:
                parts.append({"text": p.text})
        else:
            parts.append({"functionCall": _emit_call(p)})
    stop = STOP_TO_GEMINI[resp.stop_reason or StopReason.END_TURN]
    candidate = {"content": {"role": "model", "parts": parts}, "finishReason": stop, "index": 0}
    return {
        "candidates": [candidate],
        "usageMetadata": emit_usage(resp.usage),
        "modelVersion": model,
        "responseId": resp.id,
    }


def stop_from_gemini(reason: object, *, has_tools: bool) -> StopReason | None:
    """Map a finishReason; ``STOP`` with function calls is tool use."""
    if not isinstance(reason, str) or not reason or reason == "FINISH_REASON_UNSPECIFIED":
        return None
    stop = STOP_FROM_GEMINI.get(reason, StopReason.ERROR)
    return StopReason.TOOL_USE if stop is StopReason.END_TURN and has_tools else stop


def failure(body: dict[str, Any]) -> str | None:
    """What an answer whose candidate stopped on a failure (a ``finishReason`` that maps to
    ``StopReason.ERROR``: ``MALFORMED_FUNCTION_CALL``, ``OTHER``, one not known…) tells the
    caller; None for any other answer, a blocked prompt (no candidates) included."""
    cands = as_list(body.get("candidates"))
    reason = as_dict(cands[0]).get("finishReason") if cands else None
    if stop_from_gemini(reason, has_tools=False) is not StopReason.ERROR:
        return None
    return failed_message(reason)


def failed_message(reason: object) -> str:
    """The error a failed ``finishReason`` becomes (the reason only: Google's
    ``finishMessage`` can quote the model's output, which the output guards never see)."""
    return f"Gemini ended the answer with finishReason {str(reason)[:64]!r}"


def parse_usage(usage: dict[str, Any]) -> Usage:
    """Gemini's promptTokenCount includes cached tokens; thoughts are output."""
    cached = as_int(usage.get("cachedContentTokenCount"))
    return Usage(
        input_tokens=max(0, as_int(usage.get("promptTokenCount")) - cached),
        output_tokens=as_int(usage.get("candidatesTokenCount"))
        + as_int(usage.get("thoughtsTokenCount")),
        cache_read=cached,
    )


def emit_usage(usage: Usage) -> dict[str, int]:
    """Gemini usage: the prompt count includes cache reads (and writes, which it has no field for)."""
    prompt = usage.input_tokens + usage.cache_read + usage.cache_write
    out = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": usage.output_tokens,
        "totalTokenCount": prompt + usage.output_tokens,
    }
    if usage.cache_read:
        out["cachedContentTokenCount"] = usage.cache_read
    return out

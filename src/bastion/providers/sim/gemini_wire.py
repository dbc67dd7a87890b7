"""The Gemini API's wire (generateContent / streamGenerateContent), over the simulator's chat.

Written from the Gemini API reference (ai.google.dev/api/generate-content) and its
troubleshooting table (ai.google.dev/gemini-api/docs/troubleshooting); independent of the
gateway's own translation code, so a mistake there is not mirrored here. Routes:

- ``POST /{v1beta|v1}/models/{model}:generateContent``: one ``GenerateContentResponse``
  ``{candidates: [{content: {role: "model", parts}, finishReason, index}], usageMetadata:
  {promptTokenCount, candidatesTokenCount, totalTokenCount, cachedContentTokenCount?,
  promptTokensDetails}, modelVersion, responseId}``;
- ``POST /{v1beta|v1}/models/{model}:streamGenerateContent?alt=sse``: ``data:`` events each
  holding a ``GenerateContentResponse`` (``\\r\\n\\r\\n`` separated, no ``[DONE]``), text in
  pieces, each ``functionCall`` whole, the last event carrying ``finishReason`` and the complete
  ``usageMetadata``; without ``alt=sse`` the same objects as one JSON array.

Checks, as the API makes them (Google's error shape ``{"error": {code, message, status,
details?}}``): the key comes in ``x-goog-api-key`` (or ``?key=``), none is 403
``PERMISSION_DENIED``, a wrong one (when ``Simulator.api_key`` is set) 400 ``INVALID_ARGUMENT``
with an ``ErrorInfo`` ``API_KEY_INVALID``; unknown body fields (``model``, ``stream``,
``max_tokens`` …) are 400 "Invalid JSON payload received. Unknown name"; ``contents`` must be
a non-empty list of ``user``/``model`` turns with parts; ``parameters`` and
``parametersJsonSchema`` are exclusive; at most 5 stop sequences; a function response names
its function; a Gemini 3 model (``gemini-3*``) signs the first function call of each answer
(``thoughtSignature``) and refuses a replayed call without one (400 "Function call is missing
a thought_signature"). Faults, pacing and the answer are the simulator's chat (``x-sim-fault`` etc.),
re-shaped: 429 ``RESOURCE_EXHAUSTED`` (with ``RetryInfo`` when a retry delay is set), 500
``INTERNAL``, 503/529 ``UNAVAILABLE``, 504 ``DEADLINE_EXCEEDED``, an unknown model 404
``NOT_FOUND``, context too long 400 "The input token count (N) exceeds the maximum number of
tokens allowed (M)."; the ``content_policy`` fault is a blocked prompt (200,
``promptFeedback.blockReason: SAFETY``, no candidates), as Gemini reports one. Function calls
are answered without ``id`` (optional in ``FunctionCall``), so callers must pair them by name
and order, as with the real API. ``x-sim-gemini-finish-reason: REASON`` ends the answer with
that ``finishReason`` (``MALFORMED_FUNCTION_CALL``, ``SAFETY`` … which only a real model
produces) after its text; ``REASON;empty`` ends it with no content at all, as Gemini answers a
malformed function call (a candidate with ``finishReason`` only: streamed, one chunk).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

import orjson

from ..sse import SSEDecoder
from .result import SimResult, once
from .scenario import split_model

if TYPE_CHECKING:
    from .core import Simulator

__all__ = ["FINISH_REASON_HEADER", "handle", "is_gemini_path"]

FINISH_REASON_HEADER = "x-sim-gemini-finish-reason"

_ROUTE = re.compile(r"/(v1beta|v1)/models/([^/:]+):(generateContent|streamGenerateContent)")
_JSON = "application/json; charset=UTF-8"
_SSE = "text/event-stream"
_FIELDS = {
    "contents",
    "systemInstruction",
    "system_instruction",
    "tools",
    "toolConfig",
    "tool_config",
    "safetySettings",
    "safety_settings",
    "generationConfig",
    "generation_config",
    "cachedContent",
    "cached_content",
}
_MAX_STOPS = 5
_RPC = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_MESSAGES = {
    429: "You exceeded your current quota, please check your plan and billing details. For more "
    "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.",
    500: "An internal error has occurred. Please retry or report in "
    "https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
    504: "Deadline expired before operation could complete.",
}
_UNREGISTERED = (
    "Method doesn't allow unregistered callers (callers without established identity). Please "
    "use API Key or other form of API consumer identity to call this API."
)
_BAD_KEY = "API key not valid. Please pass a valid API key."
_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP", "content_filter": "SAFETY"}


class _Refused(ValueError):
    """A request the API refuses with 400 INVALID_ARGUMENT."""


def _get(obj: Any, name: str) -> Any:
    """A field by its JSON name or its proto name (``maxOutputTokens`` / ``max_output_tokens``):
    proto3 JSON parsers accept both, and Google's own SDK sends some in snake case."""
    if not isinstance(obj, dict):
        return None
    if name in obj:
        return obj[name]
    return obj.get(re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name))


def signs(model: str) -> bool:
    """Gemini 3 models sign their function calls and refuse a replayed call without its
    ``thoughtSignature`` (ai.google.dev/gemini-api/docs/thought-signatures)."""
    return split_model(model)[0].startswith("gemini-3")


def is_gemini_path(path: str) -> bool:
    return _ROUTE.fullmatch(path.split("?", 1)[0]) is not None


def error(status: int, message: str | None = None, **extra: Any) -> SimResult:
    """Google's error body for ``status``."""
    rpc = _RPC.get(status, "INTERNAL" if status >= 500 else "INVALID_ARGUMENT")
    err = {"code": status, "message": message or _MESSAGES.get(status, rpc), "status": rpc, **extra}
    data = orjson.dumps({"error": err})
    return SimResult(status, {"content-type": _JSON, "content-length": str(len(data))}, once(data))


async def handle(
    sim: Simulator, method: str, path: str, h: Mapping[str, str], body: bytes
) -> SimResult:
    """Answer one request on Gemini's routes (``h`` has lower-case names)."""
    route, _, query = path.partition("?")
    match = _ROUTE.fullmatch(route)
    assert match is not None
    version, model, verb = match.group(1), unquote(match.group(2)), match.group(3)
    params = parse_qs(query, keep_blank_values=True)
    bad_json = False
    try:
        parsed: Any = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed, bad_json = body.decode("utf-8", "replace"), True
    sim._record(method, path, dict(h), parsed, model, split_model(model)[1])
    if method != "POST":
        return error(404, f"Method {method} is not supported for {route}.")
    key = h.get("x-goog-api-key") or (params.get("key") or [""])[0]
    if not key:
        return error(403, _UNREGISTERED)
    if sim.api_key is not None and key != sim.api_key:
        info = {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "API_KEY_INVALID",
            "domain": "googleapis.com",
            "metadata": {"service": "generativelanguage.googleapis.com"},
        }
        return error(400, _BAD_KEY, details=[info])
    if bad_json or not isinstance(parsed, dict):
        return error(400, "Invalid JSON payload received. Unexpected token.")
    stream = verb == "streamGenerateContent"
    try:
        chat = to_chat(parsed, model, stream=stream)
    except _Refused as exc:
        return error(400, str(exc))
    inner = {k: v for k, v in h.items() if k != "x-goog-api-key"}
    if sim.api_key is not None:
        inner["authorization"] = "Bearer " + sim.api_key
    result = await sim.handle(
        "POST", "/v1/chat/completions", inner, orjson.dumps(chat), record=False
    )
    sse = (params.get("alt") or [""])[0] == "sse"
    if result.status != 200:
        return await _error_from_chat(result, model, version, sim.context_window, stream, sse)
    name = split_model(model)[0]
    forced = _Forced.of(h.get(FINISH_REASON_HEADER))
    if not stream:
        raw = await result.read()
        data = _reshape_body(raw, name, forced)
        return SimResult(200, {"content-type": _JSON, "content-length": str(len(data))}, once(data))
    frames = _stream(result.body, name, sse=sse, forced=forced)
    return SimResult(200, {"content-type": _SSE if sse else _JSON}, frames)


class _Forced:
    """The ``finishReason`` an answer must end with (``x-sim-gemini-finish-reason``), and
    whether it comes without content (``;empty``)."""

    __slots__ = ("empty", "reason")

    def __init__(self, reason: str | None, empty: bool) -> None:
        self.reason = reason
        self.empty = empty

    @classmethod
    def of(cls, value: str | None) -> _Forced:
        reason, _, flag = (value or "").partition(";")
        return cls(reason.strip() or None, flag.strip() == "empty")

    def finish(self, natural: str) -> str:
        return self.reason or natural

    def candidate(self, cand: dict[str, Any]) -> dict[str, Any]:
        """The candidate as sent: with no content when the answer is to be empty."""
        if self.empty:
            return {k: v for k, v in cand.items() if k != "content"}
        return cand


# --- request: Gemini -> the simulator's chat ------------------------------------------------


def to_chat(body: dict[str, Any], model: str, *, stream: bool) -> dict[str, Any]:
    """The chat request the simulator answers; raises ``_Refused`` where Gemini would."""
    for name in body:
        if name not in _FIELDS:
            raise _Refused(
                f'Invalid JSON payload received. Unknown name "{name}": Cannot find field.'
            )
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise _Refused("* GenerateContentRequest.contents: contents is not specified\n")
    messages: list[dict[str, Any]] = []
    system = _get(body, "systemInstruction")
    if isinstance(system, dict):
        text = "".join(_texts(system.get("parts")))
        if text:
            messages.append({"role": "system", "content": text})
    pending: dict[str, list[str]] = {}
    calls = 0
    signed = signs(model)
    for i, content in enumerate(contents):
        if not isinstance(content, dict):
            raise _Refused(f"* GenerateContentRequest.contents[{i}]: must be an object\n")
        role = content.get("role", "user")
        if role not in ("user", "model"):
            raise _Refused("Please use a valid role: user, model.")
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            raise _Refused(
                f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty.\n"
            )
        if role == "model":
            msg: dict[str, Any] = {"role": "assistant", "content": "".join(_texts(parts)) or None}
            tool_calls = []
            for p in parts:
                fc = _get(p, "functionCall")
                if isinstance(fc, dict) and signed and not _get(p, "thoughtSignature"):
                    raise _Refused(
                        f"Function call is missing a thought_signature in functionCall parts. "
                        f"This is required for tools to work correctly, and missing "
                        f"thought_signature may lead to degraded model performance. Additional "
                        f"data, function call `default_api:{fc.get('name')}` , position {i + 1}. "
                        "Please refer to https://ai.google.dev/gemini-api/docs/thought-signatures "
                        "for more details."
                    )
                if isinstance(fc, dict):
                    given = fc.get("id")
                    cid = given if isinstance(given, str) else f"gemini_call_{calls}"
                    calls += 1
                    pending.setdefault(str(fc.get("name")), []).append(cid)
                    args = fc.get("args") if isinstance(fc.get("args"), dict) else {}
                    fn = {"name": str(fc.get("name")), "arguments": orjson.dumps(args).decode()}
                    tool_calls.append({"id": cid, "type": "function", "function": fn})
            if tool_calls:
                msg["tool_calls"] = tool_calls
            messages.append(msg)
            continue
        texts = []
        for j, p in enumerate(parts):
            fr = _get(p, "functionResponse")
            if isinstance(fr, dict):
                fname = fr.get("name")
                if not isinstance(fname, str) or not fname:
                    raise _Refused(
                        f"* GenerateContentRequest.contents[{i}].parts[{j}].function_response.name:"
                        " Name cannot be empty.\n"
                    )
                waiting = pending.get(fname) or []
                rid = fr.get("id")
                if isinstance(rid, str):
                    if rid in waiting:
                        waiting.remove(rid)
                    cid = rid
                else:
                    cid = waiting.pop(0) if waiting else fname
                result = orjson.dumps(fr.get("response") or {}).decode()
                messages.append({"role": "tool", "tool_call_id": cid, "content": result})
            elif isinstance(p, dict) and isinstance(p.get("text"), str):
                texts.append(p["text"])
        if texts:
            messages.append({"role": "user", "content": "".join(texts)})
    chat: dict[str, Any] = {"model": model, "messages": messages}
    tools = _tools(body.get("tools"))
    if tools:
        chat["tools"] = tools
        choice = _tool_choice(_get(body, "toolConfig"))
        if choice is not None:
            chat["tool_choice"] = choice
    gen = _get(body, "generationConfig") or {}
    if isinstance(gen, dict):
        stops = _get(gen, "stopSequences")
        if isinstance(stops, list):
            if len(stops) > _MAX_STOPS:
                raise _Refused(
                    "* GenerateContentRequest.generation_config.stop_sequences: "
                    f"at most {_MAX_STOPS} stop sequences are allowed.\n"
                )
            if stops:
                chat["stop"] = stops
        limit = _get(gen, "maxOutputTokens")
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
            chat["max_tokens"] = limit
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True, "include_obfuscation": False}
    return chat


def _texts(parts: object) -> list[str]:
    if not isinstance(parts, list):
        return []
    return [
        p["text"]
        for p in parts
        if isinstance(p, dict) and isinstance(p.get("text"), str) and p.get("thought") is not True
    ]


def _tools(raw: object) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for t in raw if isinstance(raw, list) else []:
        decls = _get(t, "functionDeclarations")
        for d in decls if isinstance(decls, list) else []:
            if not isinstance(d, dict) or not isinstance(d.get("name"), str):
                raise _Refused("* GenerateContentRequest.tools: function name is required\n")
            if "parameters" in d and _get(d, "parametersJsonSchema") is not None:
                raise _Refused(
                    "* GenerateContentRequest.tools[0].function_declarations: parameters and "
                    "parameters_json_schema are mutually exclusive.\n"
                )
            schema = _get(d, "parametersJsonSchema") or d.get("parameters")
            fn = {"name": d["name"], "parameters": schema if isinstance(schema, dict) else {}}
            out.append({"type": "function", "function": fn})
    return out


def _tool_choice(raw: object) -> Any:
    fcc = _get(raw, "functionCallingConfig")
    if not isinstance(fcc, dict):
        return None
    mode = fcc.get("mode")
    names = _get(fcc, "allowedFunctionNames")
    if mode == "ANY" and isinstance(names, list) and len(names) == 1:
        return {"type": "function", "function": {"name": names[0]}}
    return {"ANY": "required", "NONE": "none", "AUTO": "auto"}.get(str(mode))


# --- answers: the simulator's chat -> Gemini ------------------------------------------------


def _usage(usage: object) -> dict[str, Any]:
    u = usage if isinstance(usage, dict) else {}
    prompt = int(u.get("prompt_tokens") or 0)
    out_tokens = int(u.get("completion_tokens") or 0)
    cached = int((u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    meta: dict[str, Any] = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": out_tokens,
        "totalTokenCount": prompt + out_tokens,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
    }
    if cached:
        meta["cachedContentTokenCount"] = cached
    return meta


def _sign(parts: list[dict[str, Any]], model: str) -> None:
    """Gemini 3: the first function call of a step carries an opaque thoughtSignature."""
    first = next((p for p in parts if "functionCall" in p), None)
    if first is not None and signs(model):
        digest = hashlib.blake2b(orjson.dumps(first), digest_size=48).digest()
        first["thoughtSignature"] = base64.b64encode(digest).decode()


def _response_id(chat_id: object) -> str:
    return str(chat_id or "").removeprefix("chatcmpl-")


def _candidate(parts: list[dict[str, Any]], finish: str | None) -> dict[str, Any]:
    cand: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish is not None:
        cand["finishReason"] = finish
    return cand


def _reshape_body(raw: bytes, model: str, forced: _Forced) -> bytes:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw  # a malformed-body fault stays malformed
    choice = (obj.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    parts: list[dict[str, Any]] = []
    if message.get("content"):
        parts.append({"text": message["content"]})
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        args = orjson.loads(fn.get("arguments") or "{}")
        parts.append({"functionCall": {"name": fn.get("name"), "args": args}})
    _sign(parts, model)
    finish = forced.finish(_FINISH.get(str(choice.get("finish_reason")), "OTHER"))
    out = {
        "candidates": [forced.candidate(_candidate(parts, finish))],
        "usageMetadata": _usage(obj.get("usage")),
        "modelVersion": model,
        "responseId": _response_id(obj.get("id")),
    }
    return orjson.dumps(out)


async def _stream(
    frames: AsyncIterator[bytes], model: str, *, sse: bool, forced: _Forced
) -> AsyncIterator[bytes]:
    """The chat stream as Gemini's: text chunks as they come, calls and the finish at the end."""
    decoder = SSEDecoder()
    calls: dict[int, dict[str, Any]] = {}
    finish: str | None = None
    usage: Any = None
    rid = ""
    first = True

    def frame(obj: dict[str, Any]) -> bytes:
        nonlocal first
        data = orjson.dumps(obj)
        if sse:
            return b"data: " + data + b"\r\n\r\n"
        lead = b"[" if first else b",\r\n"
        first = False
        return lead + data

    try:
        async for chunk in frames:
            for ev in decoder.feed(chunk):
                if ev.data.strip() == b"[DONE]":  # withheld by no_final: the stream is cut
                    last = _last(calls, forced.finish(finish or "STOP"), usage, model, rid)
                    last["candidates"] = [forced.candidate(c) for c in last["candidates"]]
                    yield frame(last)
                    if not sse:
                        yield b"]"
                    continue
                try:
                    obj = orjson.loads(ev.data)
                except orjson.JSONDecodeError:
                    yield ev.raw  # a malformed-event fault stays malformed
                    continue
                if isinstance(obj.get("error"), dict):
                    said = str(obj["error"].get("message") or "").lower()
                    status = 503 if "overloaded" in said else 500
                    err = {"code": status, "message": _MESSAGES[status], "status": _RPC[status]}
                    yield frame({"error": err})
                    continue
                rid = rid or _response_id(obj.get("id"))
                for choice in obj.get("choices") or ():
                    delta = choice.get("delta") or {}
                    if delta.get("content") and not forced.empty:
                        parts = [{"text": delta["content"]}]
                        head = {"candidates": [_candidate(parts, None)], "modelVersion": model}
                        yield frame({**head, "responseId": rid})
                    for tc in delta.get("tool_calls") or ():
                        slot = calls.setdefault(tc.get("index", 0), {"name": "", "args": ""})
                        fn = tc.get("function") or {}
                        slot["name"] = fn.get("name") or slot["name"]
                        slot["args"] += fn.get("arguments") or ""
                    if choice.get("finish_reason"):
                        finish = _FINISH.get(choice["finish_reason"], "OTHER")
                if obj.get("usage"):
                    usage = obj["usage"]
    finally:  # a client that hangs up closes the simulator's stream too (a stall included)
        closer = getattr(frames, "aclose", None)
        if closer is not None:
            await closer()


def _last(
    calls: dict[int, dict[str, Any]], finish: str | None, usage: Any, model: str, rid: str
) -> dict[str, Any]:
    """The stream's last chunk: whole function calls, the finish reason, the usage."""
    parts: list[dict[str, Any]] = [
        {"functionCall": {"name": c["name"], "args": orjson.loads(c["args"] or "{}")}}
        for c in calls.values()
    ] or [{"text": ""}]
    _sign(parts, model)
    return {
        "candidates": [_candidate(parts, finish or "STOP")],
        "usageMetadata": _usage(usage),
        "modelVersion": model,
        "responseId": rid,
    }


async def _error_from_chat(
    result: SimResult, model: str, version: str, window: int, stream: bool, sse: bool
) -> SimResult:
    """The simulator's chat error, as Gemini reports the same failure."""
    raw = await result.read()
    try:
        err = orjson.loads(raw).get("error") or {}
    except (orjson.JSONDecodeError, AttributeError):
        err = {}
    status = result.status
    code = err.get("code")
    if status == 400 and code == "context_length_exceeded":
        numbers = [int(n) for n in re.findall(r"\d+", str(err.get("message")))]
        tokens = max(numbers) if numbers else window + 1
        return error(
            400,
            f"The input token count ({tokens}) exceeds the maximum number of tokens allowed "
            f"({window}).",
        )
    if status == 400 and code == "content_policy_violation":
        return _blocked(split_model(model)[0], stream, sse)
    if status == 404:
        name = split_model(model)[0]
        return error(
            404,
            f"models/{name} is not found for API version {version}, or is not supported for "
            "generateContent. Call ListModels to see the list of available models and their "
            "supported methods.",
        )
    if status == 429:
        wait = result.headers.get("retry-after")
        details = (
            [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{wait}s"}]
            if wait
            else []
        )
        return error(429, details=details) if details else error(429)
    if status == 529:
        return error(503)
    if status >= 500:
        return error(status if status in _RPC else 500)
    return error(400 if status not in _RPC else status, str(err.get("message") or "") or None)


def _blocked(model: str, stream: bool, sse: bool) -> SimResult:
    """A prompt the safety filters block: 200, no candidates, ``promptFeedback.blockReason``."""
    obj = {
        "promptFeedback": {
            "blockReason": "SAFETY",
            "safetyRatings": [
                {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"}
            ],
        },
        "usageMetadata": {"promptTokenCount": 8, "totalTokenCount": 8},
        "modelVersion": model,
    }
    data = orjson.dumps(obj)
    if stream and sse:
        return SimResult(200, {"content-type": _SSE}, once(b"data: " + data + b"\r\n\r\n"))
    if stream:
        data = b"[" + data + b"]"
    return SimResult(200, {"content-type": _JSON, "content-length": str(len(data))}, once(data))

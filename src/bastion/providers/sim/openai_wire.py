"""The OpenAI Chat Completions API on the wire: request checks, completions and stream chunks.

Stream order, as the API sends it: a first chunk with ``delta.role`` (and the first
tool call's id and name), content or ``tool_calls`` argument chunks, a chunk with
``finish_reason`` and an empty delta, then, when ``stream_options.include_usage``
is set, a chunk with ``choices: []`` and ``usage`` (earlier chunks carry
``usage: null``), and finally ``data: [DONE]``. Chunks carry the ``obfuscation``
padding field unless ``stream_options.include_obfuscation`` is false.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

import orjson

from ..sse import encode_event
from .answers import Answer, Prompt, StopReason, ToolMode, ToolSpec
from .cache import CacheUsage
from .result import Frame, WireError

IMAGE_WEIGHT = 6000  # bytes counted for an image part: ~1500 tokens
_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
# Stream chunks carry random-length padding unless stream_options.include_obfuscation
# is false; fixed strings keep the simulator deterministic.
_PADS = ("kX3v", "Qm9aT2", "p0", "Zr7LwB1e", "H4sd9", "yTq2VnMc0", "b8", "JfR5uA")
_FINISH: dict[StopReason, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}


@dataclass(slots=True)
class OpenAICall:
    """A checked Chat Completions request, reduced to what the simulator needs."""

    model: str
    stream: bool
    include_usage: bool
    obfuscate: bool
    prompt: Prompt
    prompt_bytes: bytes
    cache_key: str


def parse(body: Any, *, model: str) -> OpenAICall:
    """Check ``body`` like the API does (400 on the first problem); ``model`` is fault-free."""
    if not isinstance(body, dict):
        raise WireError("Invalid type for request body: expected an object.")
    messages = body.get("messages")
    if messages is None:
        raise WireError(
            "Missing required parameter: 'messages'.",
            param="messages",
            code="missing_required_parameter",
        )
    if not isinstance(messages, list):
        raise WireError("Invalid type for 'messages': expected an array.", param="messages")
    if not messages:
        raise WireError(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
            param="messages",
            code="empty_array",
        )
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise WireError(f"Invalid type for 'messages[{i}]': expected an object.")
        if m.get("role") not in _ROLES:
            raise WireError(
                f"Invalid value: '{m.get('role')}'. Supported values are: 'system', 'assistant', "
                "'user', 'function', 'tool', and 'developer'.",
                param=f"messages[{i}].role",
                code="invalid_value",
            )
    max_tokens = _max_tokens(body)
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    if not all(isinstance(s, str) for s in stops):
        raise WireError("Invalid type for 'stop': expected a string or array.", param="stop")
    tools = [
        ToolSpec(fn["name"], params if isinstance(params := fn.get("parameters"), dict) else {})
        for t in (body.get("tools") or [])
        if isinstance(t, dict) and isinstance(fn := t.get("function"), dict) and "name" in fn
    ]
    mode, forced = _tool_choice(body.get("tool_choice"), tools)
    schema, json_mode = _response_format(body.get("response_format"))
    options = body.get("stream_options")
    cache_key = body.get("prompt_cache_key")
    prompt = Prompt(
        seed=orjson.dumps({"m": messages}, option=orjson.OPT_SORT_KEYS),
        last_user_text=_last_user_text(messages),
        guarded_texts=[
            _text_of(m.get("content"))
            for m in messages
            if m.get("role") in ("system", "developer", "user", "tool")
        ],
        last_is_user=messages[-1].get("role") == "user",
        tool_result=_text_of(messages[-1].get("content"))
        if messages[-1].get("role") in ("tool", "function")
        else None,
        tools=tools,
        tool_mode=mode,
        forced_tool=forced,
        parallel_tools=body.get("parallel_tool_calls") is not False,
        stop_sequences=[s for s in stops if isinstance(s, str)],
        max_tokens=max_tokens,
        json_schema=schema,
        json_mode=json_mode,
        system_text="\n".join(
            _text_of(m.get("content")) for m in messages if m.get("role") in ("system", "developer")
        ),
    )
    return OpenAICall(
        model=model,
        stream=body.get("stream") is True,
        include_usage=isinstance(options, dict) and options.get("include_usage") is True,
        obfuscate=not (isinstance(options, dict) and options.get("include_obfuscation") is False),
        prompt=prompt,
        prompt_bytes=_prompt_bytes(body.get("tools"), messages),
        cache_key=cache_key if isinstance(cache_key, str) else "",
    )


def completion_body(call: OpenAICall, answer: Answer, usage: CacheUsage, cid: str) -> bytes:
    """The non-streaming ``chat.completion`` object."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": answer.text if answer.text_pieces or not answer.tool_calls else None,
        "refusal": None,
        "annotations": [],
    }
    if answer.tool_calls:
        message["tool_calls"] = [
            {
                "id": tc.id,
                "type": "function",
                "function": {"name": tc.name, "arguments": tc.arguments_json},
            }
            for tc in answer.tool_calls
        ]
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": _FINISH[answer.stop],
    }
    obj = _head(call, cid, "chat.completion")
    obj["choices"] = [choice]
    obj["usage"] = usage_object(usage, answer.output_tokens)
    return orjson.dumps(obj)


def stream_frames(call: OpenAICall, answer: Answer, usage: CacheUsage, cid: str) -> list[Frame]:
    """Every chunk of the stream, in order, ending with ``[DONE]``."""
    head = _head(call, cid, "chat.completion.chunk")
    if call.include_usage:
        head["usage"] = None
    pad = _PADS if call.obfuscate else ()

    def chunk(delta: dict[str, Any], finish: str | None = None, content: bool = False) -> Frame:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        obj = {**head, "choices": [choice]}
        if pad:
            obj["obfuscation"] = pad[len(orjson.dumps(delta)) % len(pad)]
        return Frame(encode_event(orjson.dumps(obj)), content=content)

    calls = answer.tool_calls
    first: dict[str, Any] = {"role": "assistant", "content": "" if not calls else None}
    if calls and not answer.text_pieces:
        first["tool_calls"] = [_tool_head(0, calls[0])]
    first["refusal"] = None
    frames = [chunk(first)]
    for piece in answer.text_pieces:
        frames.append(chunk({"content": piece}, content=True))
    for i, tc in enumerate(calls):
        if i > 0 or answer.text_pieces:
            frames.append(chunk({"tool_calls": [_tool_head(i, tc)]}))
        for piece in tc.pieces:
            arg = {"index": i, "function": {"arguments": piece}}
            frames.append(chunk({"tool_calls": [arg]}, content=True))
    frames.append(chunk({}, _FINISH[answer.stop]))
    if call.include_usage:
        tail = {**head, "choices": [], "usage": usage_object(usage, answer.output_tokens)}
        if pad:
            tail["obfuscation"] = pad[0]
        frames.append(Frame(encode_event(orjson.dumps(tail))))
    frames.append(Frame(encode_event(b"[DONE]"), final=True))
    return frames


def usage_object(usage: CacheUsage, output_tokens: int) -> dict[str, Any]:
    """OpenAI usage: ``prompt_tokens`` includes the cached part reported in its details."""
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": output_tokens,
        "total_tokens": usage.input_tokens + output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _head(call: OpenAICall, cid: str, obj: str) -> dict[str, Any]:
    fp = hashlib.blake2b(call.model.encode(), digest_size=5).hexdigest()
    return {
        "id": cid,
        "object": obj,
        "created": int(time.time()),
        "model": call.model,
        "service_tier": "default",
        "system_fingerprint": "fp_" + fp,
    }


def _tool_head(index: int, tc: Any) -> dict[str, Any]:
    return {
        "index": index,
        "id": tc.id,
        "type": "function",
        "function": {"name": tc.name, "arguments": ""},
    }


def _max_tokens(body: dict[str, Any]) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            raise WireError(
                f"Invalid type for '{name}': expected an integer.", param=name, code="invalid_type"
            )
        if value < 1:
            raise WireError(
                f"Invalid '{name}': integer below minimum value. Expected a value >= 1, "
                f"but got {value} instead.",
                param=name,
                code="integer_below_min_value",
            )
        return value
    return None


def _tool_choice(raw: Any, tools: list[ToolSpec]) -> tuple[ToolMode, str | None]:
    if raw is None or raw == "auto":
        return "auto", None
    if raw == "none":
        return "none", None
    if raw == "required":
        return "any", None
    if isinstance(raw, dict):
        fn = raw.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        if isinstance(name, str):
            if name not in {t.name for t in tools}:
                raise WireError(
                    f"Invalid value for 'tool_choice': tool '{name}' not found in 'tools'.",
                    param="tool_choice",
                    code="invalid_value",
                )
            return "tool", name
    raise WireError(
        "Invalid value for 'tool_choice': expected 'none', 'auto', 'required' or a named function.",
        param="tool_choice",
        code="invalid_value",
    )


def _response_format(raw: Any) -> tuple[dict[str, Any] | None, bool]:
    if not isinstance(raw, dict):
        return None, False
    if raw.get("type") == "json_object":
        return None, True
    if raw.get("type") == "json_schema":
        spec = raw.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return (schema if isinstance(schema, dict) else {}), True
    return None, False


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
    return "\n".join(p for p in parts if isinstance(p, str))


def _last_user_text(messages: list[Any]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            return _text_of(m.get("content"))
    return ""


def _prompt_bytes(tools: Any, messages: list[dict[str, Any]]) -> bytes:
    """The prompt as one byte string: its length is the token estimate, its prefixes the cache."""
    out = bytearray()
    if isinstance(tools, list) and tools:
        out += orjson.dumps(tools, option=orjson.OPT_SORT_KEYS)
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            out += content.encode()
        elif isinstance(content, list):
            for part in content:
                if not isinstance(part, dict):
                    continue
                if part.get("type") == "text" and isinstance(part.get("text"), str):
                    out += part["text"].encode()
                else:
                    seed = hashlib.blake2b(orjson.dumps(part), digest_size=64).digest()
                    out += (seed * (IMAGE_WEIGHT // 64 + 1))[:IMAGE_WEIGHT]
        calls = m.get("tool_calls")
        if isinstance(calls, list) and calls:
            out += orjson.dumps(calls, option=orjson.OPT_SORT_KEYS)
    return bytes(out)

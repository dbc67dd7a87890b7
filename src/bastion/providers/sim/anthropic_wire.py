"""The Anthropic Messages API on the wire: request checks, message bodies and stream events.

Stream order, as the API sends it: ``message_start`` (empty content, input and
cache usage), then per block ``content_block_start`` / ``content_block_delta``
(``text_delta`` or ``input_json_delta``) / ``content_block_stop`` with a ``ping``
after the first start, then ``message_delta`` (stop reason, cumulative usage) and
``message_stop``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from ..sse import encode_event
from .answers import Answer, Prompt, ToolMode, ToolSpec
from .cache import DEFAULT_TTL, TTL_1H, CacheUsage, Segment
from .result import Frame, WireError

MAX_BREAKPOINTS = 4
IMAGE_WEIGHT = 6000  # bytes counted for an image or document: ~1500 tokens
_ROLES = ("user", "assistant")
_TOOL_MODES: dict[str, ToolMode] = {"auto": "auto", "any": "any", "tool": "tool", "none": "none"}


@dataclass(slots=True)
class AnthropicCall:
    """A checked Messages request, reduced to what the simulator needs."""

    model: str
    stream: bool
    prompt: Prompt
    segments: list[Segment]


def parse(body: Any, *, model: str, count_only: bool = False) -> AnthropicCall:
    """Check ``body`` like the API does (400 on the first problem); ``model`` is fault-free."""
    if not isinstance(body, dict):
        raise WireError("Input should be a valid dictionary")
    if "max_tokens" not in body and not count_only:
        raise WireError("max_tokens: Field required")
    max_tokens = body.get("max_tokens")
    if not count_only and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool)):
        raise WireError("max_tokens: Input should be a valid integer")
    if isinstance(max_tokens, int) and max_tokens < 1 and not count_only:
        raise WireError("max_tokens: Input should be greater than or equal to 1")
    messages = body.get("messages")
    if messages is None:
        raise WireError("messages: Field required")
    if not isinstance(messages, list):
        raise WireError("messages: Input should be a valid list")
    if not messages:
        raise WireError("messages: at least one message is required")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise WireError(f"messages.{i}: Input should be a valid dictionary")
        if m.get("role") not in _ROLES:
            raise WireError(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        if "content" not in m:
            raise WireError(f"messages.{i}.content: Field required")
        if not isinstance(m["content"], str | list):
            raise WireError(f"messages.{i}.content: Input should be a valid string or list")
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        raise WireError("system: Input should be a valid string or list")
    tools_raw = body.get("tools") or []
    if not isinstance(tools_raw, list):
        raise WireError("tools: Input should be a valid list")
    stops = body.get("stop_sequences") or []
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise WireError("stop_sequences: Input should be a valid list of strings")
    segments = _segments(tools_raw, system, messages, body.get("cache_control"))
    found = sum(1 for s in segments if s.ttl is not None) - _auto_breakpoint(body, messages)
    if found > MAX_BREAKPOINTS:
        raise WireError(
            f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. "
            f"Found {found}."
        )
    tools = [
        ToolSpec(t["name"], t["input_schema"] if isinstance(t.get("input_schema"), dict) else {})
        for t in tools_raw
        if isinstance(t, dict) and isinstance(t.get("name"), str) and "input_schema" in t
    ]
    mode, forced, parallel = _tool_choice(body.get("tool_choice"), tools)
    prompt = Prompt(
        seed=orjson.dumps({"s": system, "m": messages}, option=orjson.OPT_SORT_KEYS),
        last_user_text=_last_user_text(messages),
        guarded_texts=_guarded_texts(system, messages),
        last_is_user=messages[-1]["role"] == "user",
        tool_result=_last_tool_result(messages[-1]),
        tools=tools,
        tool_mode=mode,
        forced_tool=forced,
        parallel_tools=parallel,
        stop_sequences=list(stops),
        max_tokens=max_tokens if isinstance(max_tokens, int) else None,
        system_text=_text_of(system),
    )
    return AnthropicCall(
        model=model, stream=body.get("stream") is True, prompt=prompt, segments=segments
    )


def message_body(call: AnthropicCall, answer: Answer, usage: CacheUsage, msg_id: str) -> bytes:
    """The non-streaming ``message`` object."""
    content: list[dict[str, Any]] = []
    if answer.text_pieces:
        content.append({"type": "text", "text": answer.text})
    for tc in answer.tool_calls:
        content.append({"type": "tool_use", "id": tc.id, "name": tc.name, "input": tc.arguments})
    message = _message_head(call, msg_id, usage, answer.output_tokens)
    message.update(content=content, stop_reason=answer.stop, stop_sequence=answer.stop_sequence)
    return orjson.dumps(message)


def stream_frames(
    call: AnthropicCall, answer: Answer, usage: CacheUsage, msg_id: str
) -> list[Frame]:
    """Every event of the stream, in order, one event per frame."""
    start = _message_head(call, msg_id, usage, 1)
    frames = [_event("message_start", {"type": "message_start", "message": start})]
    index = 0
    if answer.text_pieces:
        block: dict[str, Any] = {"type": "text", "text": ""}
        frames.append(_block_start(index, block))
        frames.append(_event("ping", {"type": "ping"}))
        for piece in answer.text_pieces:
            frames.append(_delta(index, {"type": "text_delta", "text": piece}))
        frames.append(_event("content_block_stop", {"type": "content_block_stop", "index": index}))
        index += 1
    for tc in answer.tool_calls:
        block = {"type": "tool_use", "id": tc.id, "name": tc.name, "input": {}}
        frames.append(_block_start(index, block))
        if index == 0:
            frames.append(_event("ping", {"type": "ping"}))
        for piece in tc.pieces:
            frames.append(_delta(index, {"type": "input_json_delta", "partial_json": piece}))
        frames.append(_event("content_block_stop", {"type": "content_block_stop", "index": index}))
        index += 1
    if index == 0:
        frames.append(_event("ping", {"type": "ping"}))
    delta: dict[str, Any] = {
        "type": "message_delta",
        "delta": {"stop_reason": answer.stop, "stop_sequence": answer.stop_sequence},
        "usage": {
            "input_tokens": usage.input_tokens,
            "cache_creation_input_tokens": usage.cache_creation,
            "cache_read_input_tokens": usage.cache_read,
            "output_tokens": answer.output_tokens,
        },
    }
    frames.append(_event("message_delta", delta))
    frames.append(Frame(encode_event(b'{"type":"message_stop"}', "message_stop"), final=True))
    return frames


def _message_head(
    call: AnthropicCall, msg_id: str, usage: CacheUsage, output: int
) -> dict[str, Any]:
    return {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": call.model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {
            "input_tokens": usage.input_tokens,
            "cache_creation_input_tokens": usage.cache_creation,
            "cache_read_input_tokens": usage.cache_read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": usage.creation_5m,
                "ephemeral_1h_input_tokens": usage.creation_1h,
            },
            "output_tokens": output,
            "service_tier": "standard",
        },
    }


def _event(name: str, payload: dict[str, Any]) -> Frame:
    return Frame(encode_event(orjson.dumps(payload), name))


def _block_start(index: int, block: dict[str, Any]) -> Frame:
    payload = {"type": "content_block_start", "index": index, "content_block": block}
    return _event("content_block_start", payload)


def _delta(index: int, delta: dict[str, Any]) -> Frame:
    payload = {"type": "content_block_delta", "index": index, "delta": delta}
    return Frame(encode_event(orjson.dumps(payload), "content_block_delta"), content=True)


def _tool_choice(raw: Any, tools: list[ToolSpec]) -> tuple[ToolMode, str | None, bool]:
    if raw is None:
        return "auto", None, True
    if not isinstance(raw, dict) or raw.get("type") not in _TOOL_MODES:
        raise WireError("tool_choice: Input should be an object with type auto, any, tool or none")
    mode = _TOOL_MODES[raw["type"]]
    parallel = raw.get("disable_parallel_tool_use") is not True
    if mode != "tool":
        return mode, None, parallel
    name = raw.get("name")
    if not isinstance(name, str):
        raise WireError("tool_choice.name: Field required")
    if name not in {t.name for t in tools}:
        raise WireError(f"Tool '{name}' not found in 'tools'")
    return mode, name, parallel


def _segments(
    tools: list[Any], system: Any, messages: list[dict[str, Any]], auto: Any
) -> list[Segment]:
    segs: list[Segment] = []
    for tool in tools:
        if isinstance(tool, dict):
            plain = {k: v for k, v in tool.items() if k != "cache_control"}
            raw = orjson.dumps(plain, option=orjson.OPT_SORT_KEYS)
            segs.append(Segment(b"tool:" + raw, len(raw), _ttl(tool.get("cache_control"))))
    if isinstance(system, str):
        data = system.encode()
        segs.append(Segment(b"system:" + data, len(data)))
    elif isinstance(system, list):
        for block in system:
            segs.append(_block_segment("system", block))
    for m in messages:
        role = m["role"]
        if isinstance(m["content"], str):
            data = m["content"].encode()
            segs.append(Segment(role.encode() + b":" + data, len(data)))
        else:
            segs.extend(_block_segment(role, block) for block in m["content"])
    if isinstance(auto, dict) and segs and segs[-1].ttl is None:
        last = segs[-1]
        segs[-1] = Segment(last.material, last.weight, _ttl(auto))
    return segs


def _auto_breakpoint(body: dict[str, Any], messages: list[dict[str, Any]]) -> int:
    """1 when a top-level ``cache_control`` added a breakpoint (not counted toward the limit)."""
    if not isinstance(body.get("cache_control"), dict):
        return 0
    last = messages[-1]["content"]
    if isinstance(last, list) and last and isinstance(last[-1], dict):
        return 0 if "cache_control" in last[-1] else 1
    return 1


def _block_segment(role: str, block: Any) -> Segment:
    if not isinstance(block, dict):
        raw = orjson.dumps(block)
        return Segment(raw, len(raw))
    ttl = _ttl(block.get("cache_control"))
    plain = {k: v for k, v in block.items() if k != "cache_control"}
    material = role.encode() + b":" + orjson.dumps(plain, option=orjson.OPT_SORT_KEYS)
    return Segment(material, _weight(plain), ttl)


def _weight(block: dict[str, Any]) -> int:
    kind = block.get("type")
    if kind == "text":
        return len(str(block.get("text", "")).encode())
    if kind in ("image", "document"):
        return IMAGE_WEIGHT
    if kind == "tool_use":
        return len(str(block.get("name", "")).encode()) + len(orjson.dumps(block.get("input")))
    if kind == "tool_result":
        content = block.get("content")
        if isinstance(content, list):
            return sum(_weight(b) for b in content if isinstance(b, dict))
        return len(str(content or "").encode())
    if kind == "thinking":
        return len(str(block.get("thinking", "")).encode())
    return len(orjson.dumps(block))


def _ttl(cache_control: Any) -> float | None:
    if not isinstance(cache_control, dict):
        return None
    return TTL_1H if cache_control.get("ttl") == "1h" else DEFAULT_TTL


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts = [b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text"]
    return "\n".join(p for p in parts if isinstance(p, str))


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m["role"] == "user":
            return _text_of(m["content"])
    return ""


def _guarded_texts(system: Any, messages: list[dict[str, Any]]) -> list[str]:
    texts = [_text_of(system)]
    for m in messages:
        if m["role"] != "user":
            continue
        texts.append(_text_of(m["content"]))
        if isinstance(m["content"], list):
            for b in m["content"]:
                if isinstance(b, dict) and b.get("type") == "tool_result":
                    texts.append(_text_of(b.get("content")))
    return texts


def _last_tool_result(message: dict[str, Any]) -> str | None:
    if message["role"] != "user" or not isinstance(message["content"], list):
        return None
    for b in message["content"]:
        if isinstance(b, dict) and b.get("type") == "tool_result":
            return _text_of(b.get("content"))
    return None

"""OpenAI's Responses API on the simulator's wire: ``POST /v1/responses``, body and event stream.

Written from OpenAI's API reference for the Responses API, independent of the gateway's own
Responses code (``bastion.responses``, ``bastion.dialects``, ``providers.translate``: a test
keeps it so), so a mistake there is not mirrored here. A request is checked as the API
checks it (a 400 ``invalid_request_error`` naming the field the API's way, ``input[0].call_id``),
run as the simulator's own Chat Completions call (faults, pacing, tools, usage and the prompt
cache all apply), and answered as ``responses_answer`` writes a ``response`` object or its
event stream. Status faults are the API's error bodies (chat's shape); a cut stream stays cut.

Served: ``input`` as a string or a list of ``message`` (text and image parts),
``function_call``, ``function_call_output`` and ``reasoning`` items (the last dropped: only
its model reads it); ``instructions``; function ``tools`` and ``tool_choice``;
``parallel_tool_calls``; ``max_output_tokens``; ``temperature``; ``top_p``; ``text.format``
and ``text.verbosity``; ``reasoning.effort``; ``user``, ``safety_identifier``,
``prompt_cache_key``, ``service_tier``, ``metadata``, ``store``, ``truncation``,
``max_tool_calls``, ``top_logprobs`` (echoed); ``include`` and ``stream_options`` are read and
ignored. The simulator keeps no responses, conversations or prompts, so
``previous_response_id``, ``conversation``, ``prompt`` and ``item_reference`` items are
answered as the API answers an id it does not know; hosted tools, file inputs and
``background`` are refused with a 400 naming the field.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from ..base import Format
from .refusals import check_auth
from .responses_answer import EventWriter, response_body
from .result import SimCut, SimResult, WireError, once
from .scenario import split_model
from .wire_errors import error_result

if TYPE_CHECKING:
    from .core import Simulator

__all__ = ["ROUTE", "handle", "to_chat"]

ROUTE = "/responses"
_ROLES = ("user", "assistant", "system", "developer")
_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
_TIERS = ("auto", "default", "flex", "scale", "priority")
_VERBOSITY = ("low", "medium", "high")


async def handle(
    sim: Simulator, method: str, path: str, h: Mapping[str, str], body: bytes
) -> SimResult:
    """Answer ``POST /v1/responses`` (``h`` has lower-case names)."""
    try:
        parsed: Any = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = None
    model = parsed.get("model") if isinstance(parsed, dict) else None
    model_str = model if isinstance(model, str) else None
    sim._record(
        method, path, dict(h), parsed, model_str, split_model(model_str)[1] if model_str else None
    )
    rid = "req_" + uuid.uuid4().hex
    if method != "POST":
        return error_result(Format.OPENAI, 405, rid, message="Method Not Allowed")
    refused = check_auth(
        Format.OPENAI, h, rid, api_key=sim.api_key, require_anthropic_version=False
    )
    if refused is not None:
        return refused
    if not isinstance(parsed, dict):
        return error_result(
            Format.OPENAI, 400, rid, message="We could not parse the JSON body of your request."
        )
    try:
        chat, echo = to_chat(parsed)
    except WireError as exc:
        return error_result(
            Format.OPENAI, exc.status, rid, message=exc.message, param=exc.param, code=exc.code
        )
    result = await sim.handle("POST", "/v1/chat/completions", h, orjson.dumps(chat), record=False)
    if result.status != 200:
        return result  # the API's error body, its status and headers
    headers = {k: v for k, v in result.headers.items() if k != "content-length"}
    resp_id = f"resp_{uuid.uuid4().hex}{uuid.uuid4().hex[:16]}"
    created = int(time.time())
    if result.headers.get("content-type", "").startswith("text/event-stream"):
        writer = EventWriter(resp_id, echo, created)
        return SimResult(200, headers, _closing(writer.events(result.body), result.body))
    chunks: list[bytes] = []
    try:
        async for c in result.body:
            chunks.append(c)
    except SimCut:
        return SimResult(200, headers, _cut(chunks))
    raw = b"".join(chunks)
    try:
        answer = orjson.loads(raw)
    except orjson.JSONDecodeError:
        answer = None
    data = response_body(answer, resp_id, echo, created) if isinstance(answer, dict) else raw
    headers["content-length"] = str(len(data))  # a malformed-body fault stays malformed
    return SimResult(200, headers, once(data))


async def _closing(
    events: AsyncIterator[bytes], inner: AsyncIterator[bytes]
) -> AsyncIterator[bytes]:
    """``events``; a client that hangs up closes the chat stream too (a stall included)."""
    try:
        async for out in events:
            yield out
    finally:
        for it in (events, inner):
            closer = getattr(it, "aclose", None)
            if closer is not None:
                await closer()


async def _cut(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for c in chunks:
        yield c
    raise SimCut("cut by a simulated fault")


# -- the request ------------------------------------------------------------------------------


def _missing(param: str) -> WireError:
    return WireError(
        f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
    )


def _type(param: str, expected: str, got: Any) -> WireError:
    kind = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(got), "null" if got is None else "a number"
    )
    return WireError(
        f"Invalid type for '{param}': expected {expected}, but got {kind} instead.",
        param=param,
        code="invalid_type",
    )


def _value(param: str, got: Any, allowed: tuple[str, ...]) -> WireError:
    names = ", ".join(f"'{a}'" for a in allowed)
    return WireError(
        f"Invalid value: '{str(got)[:64]}'. Supported values are: {names}.",
        param=param,
        code="invalid_value",
    )


def _string(obj: dict[str, Any], key: str, param: str, *, required: bool = False) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise _missing(param)
        return None
    if not isinstance(value, str):
        raise _type(param, "a string", value)
    if required and not value:
        raise WireError(
            f"Invalid '{param}': empty string. Expected a string with minimum length 1, but "
            "got an empty string instead.",
            param=param,
            code="empty_string",
        )
    return value


def to_chat(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check a Responses request; the chat body the simulator runs, and what the answer echoes."""
    model = _string(body, "model", "model", required=True)
    _refuse_unknown_ids(body)
    if body.get("background") is True:
        raise WireError("The simulator does not run background responses.", param="background")
    messages: list[dict[str, Any]] = []
    instructions = _string(body, "instructions", "instructions")
    if instructions:
        messages.append({"role": "system", "content": instructions})
    raw = body.get("input")
    if raw is None:
        raise _missing("input")
    if isinstance(raw, str):
        messages.append({"role": "user", "content": raw})
    elif isinstance(raw, list):
        messages += _items(raw)
    else:
        raise _type("input", "a string or an array", raw)
    if not messages:
        raise WireError(
            "Invalid 'input': empty array. Expected an array with minimum length 1, but got an "
            "empty array instead.",
            param="input",
            code="empty_array",
        )
    chat: dict[str, Any] = {"model": model, "messages": messages}
    tools = _tools(body.get("tools"))
    if tools:
        chat["tools"] = [
            {"type": "function", "function": {k: v for k, v in t.items() if k != "type"}}
            for t in tools
        ]
    choice = _tool_choice(body.get("tool_choice"))
    if tools and isinstance(choice, str):
        chat["tool_choice"] = choice
    elif tools and isinstance(choice, dict):
        chat["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise _type("parallel_tool_calls", "a boolean", parallel)
    if tools and parallel is not None:
        chat["parallel_tool_calls"] = parallel
    limit = body.get("max_output_tokens")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise _type("max_output_tokens", "an integer", limit)
        if limit < 1:
            raise WireError(
                "Invalid 'max_output_tokens': integer below minimum value. Expected a value >= "
                f"1, but got {limit} instead.",
                param="max_output_tokens",
                code="integer_below_min_value",
            )
        chat["max_completion_tokens"] = limit
    for name, top in (("temperature", 2.0), ("top_p", 1.0)):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _type(name, "a number", value)
        if not 0 <= value <= top:
            raise WireError(
                f"Invalid '{name}': expected a value between 0 and {top:g}, but got {value} "
                "instead.",
                param=name,
                code="invalid_value",
            )
        chat[name] = value
    text = _text(body.get("text"), chat)
    reasoning = body.get("reasoning")
    effort = None
    if reasoning is not None:
        if not isinstance(reasoning, dict):
            raise _type("reasoning", "an object", reasoning)
        effort = reasoning.get("effort")
        if effort is not None:
            if effort not in _EFFORTS:
                raise _value("reasoning.effort", effort, _EFFORTS)
            chat["reasoning_effort"] = effort
    for name in ("user", "safety_identifier", "prompt_cache_key"):
        value = _string(body, name, name)
        if value is not None:
            chat[name] = value
    tier = body.get("service_tier")
    if tier is not None and tier not in _TIERS:
        raise _value("service_tier", tier, _TIERS)
    _flag(body, "store")  # checked, not echoed: the Response object has no ``store``
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _type("stream", "a boolean", stream)
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    echo = {
        "instructions": instructions,
        "max_output_tokens": limit,
        "max_tool_calls": _echo_int(body, "max_tool_calls", 1),
        "metadata": _metadata(body.get("metadata")),
        "model": model,
        "parallel_tool_calls": parallel is not False,
        "previous_response_id": None,
        "prompt_cache_key": chat.get("prompt_cache_key"),
        "reasoning": {"effort": effort, "summary": None},
        "safety_identifier": chat.get("safety_identifier"),
        "service_tier": tier or "default",
        "temperature": chat.get("temperature", 1.0),
        "text": text,
        "tool_choice": choice if choice is not None else "auto",
        "tools": tools,
        "top_logprobs": _echo_int(body, "top_logprobs", 0) or 0,
        "top_p": chat.get("top_p", 1.0),
        "truncation": _truncation(body.get("truncation")),
        "user": chat.get("user"),
    }
    return chat, echo


def _refuse_unknown_ids(body: dict[str, Any]) -> None:
    """Ids of stored objects: the simulator stores none, so each is one it does not know."""
    for key, what in (
        ("previous_response_id", "Previous response"),
        ("conversation", "Conversation"),
        ("prompt", "Prompt"),
    ):
        value = body.get(key)
        if value is None:
            continue
        ident = value.get("id") if isinstance(value, dict) else value
        raise WireError(f"{what} with id '{str(ident)[:64]}' not found.", param=key)


def _items(items: list[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        at = f"input[{i}]"
        if not isinstance(item, dict):
            raise _type(at, "an object", item)
        kind = item.get("type", "message")
        if kind == "message":
            out.append(_message(item, at))
        elif kind == "function_call":
            call_id = _string(item, "call_id", f"{at}.call_id", required=True)
            name = _string(item, "name", f"{at}.name", required=True)
            args = _string(item, "arguments", f"{at}.arguments")
            if args is None:
                raise _missing(f"{at}.arguments")
            call = {
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": args},
            }
            if out and out[-1]["role"] == "assistant":
                out[-1].setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            call_id = _string(item, "call_id", f"{at}.call_id", required=True)
            output = item.get("output")
            if output is None:
                raise _missing(f"{at}.output")
            if isinstance(output, list):
                output = _joined_text(output, f"{at}.output")
            elif not isinstance(output, str):
                raise _type(f"{at}.output", "a string or an array", output)
            out.append({"role": "tool", "tool_call_id": call_id, "content": output})
        elif kind == "reasoning":
            continue
        elif kind == "item_reference":
            ident = item.get("id")
            raise WireError(f"Item with id '{str(ident)[:64]}' not found.", param=f"{at}.id")
        else:
            raise _value(
                f"{at}.type",
                kind,
                ("message", "function_call", "function_call_output", "reasoning", "item_reference"),
            )
    return out


def _message(item: dict[str, Any], at: str) -> dict[str, Any]:
    role = item.get("role")
    if role is None:
        raise _missing(f"{at}.role")
    if role not in _ROLES:
        raise _value(f"{at}.role", role, _ROLES)
    content = item.get("content")
    if content is None:
        raise _missing(f"{at}.content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise _type(f"{at}.content", "a string or an array", content)
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        where = f"{at}.content[{j}]"
        if not isinstance(part, dict):
            raise _type(where, "an object", part)
        kind = part.get("type")
        if kind in ("input_text", "output_text"):
            parts.append(
                {"type": "text", "text": _string(part, "text", f"{where}.text", required=True)}
            )
        elif kind == "refusal":
            parts.append(
                {"type": "text", "text": _string(part, "refusal", f"{where}.refusal") or ""}
            )
        elif kind == "input_image":
            url = _string(part, "image_url", f"{where}.image_url")
            if not url:
                raise WireError(
                    "The simulator reads images by URL only (it stores no files).",
                    param=f"{where}.file_id",
                )
            image: dict[str, Any] = {"url": url}
            if isinstance(part.get("detail"), str):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        elif kind == "input_file":
            raise WireError("The simulator does not read files.", param=f"{where}.type")
        else:
            raise _value(
                f"{where}.type",
                kind,
                ("input_text", "input_image", "input_file", "output_text", "refusal"),
            )
    if any(p["type"] == "image_url" for p in parts):
        return {"role": role, "content": parts}
    return {"role": role, "content": "".join(p["text"] for p in parts)}


def _joined_text(parts: list[Any], at: str) -> str:
    texts = []
    for j, part in enumerate(parts):
        if not isinstance(part, dict):
            raise _type(f"{at}[{j}]", "an object", part)
        if part.get("type") == "input_text":
            texts.append(_string(part, "text", f"{at}[{j}].text", required=True) or "")
    return "".join(texts)


def _tools(raw: Any) -> list[dict[str, Any]]:
    """Function tools, as the response echoes them (``strict`` defaults to true)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _type("tools", "an array", raw)
    out = []
    for i, tool in enumerate(raw):
        at = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise _type(at, "an object", tool)
        if tool.get("type") != "function":
            raise WireError(
                f"The simulator runs function tools only, not '{str(tool.get('type'))[:64]}'.",
                param=f"{at}.type",
                code="invalid_value",
            )
        params = tool.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise _type(f"{at}.parameters", "an object", params)
        strict = tool.get("strict")
        if strict is not None and not isinstance(strict, bool):
            raise _type(f"{at}.strict", "a boolean", strict)
        out.append(
            {
                "type": "function",
                "name": _string(tool, "name", f"{at}.name", required=True),
                "description": _string(tool, "description", f"{at}.description"),
                "parameters": params,
                "strict": strict is not False,
            }
        )
    return out


def _tool_choice(raw: Any) -> str | dict[str, Any] | None:
    if raw is None or raw in ("auto", "none", "required"):
        return raw  # type: ignore[no-any-return]
    if isinstance(raw, dict) and raw.get("type") == "function":
        return {"type": "function", "name": _string(raw, "name", "tool_choice.name", required=True)}
    raise WireError(
        "Invalid value for 'tool_choice': the simulator takes 'none', 'auto', 'required' or "
        "{type: 'function', name}.",
        param="tool_choice",
        code="invalid_value",
    )


def _text(raw: Any, chat: dict[str, Any]) -> dict[str, Any]:
    """``text`` as echoed (format text and verbosity medium by default); sets the chat format."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise _type("text", "an object", raw)
    verbosity = raw.get("verbosity")
    if verbosity is not None and verbosity not in _VERBOSITY:
        raise _value("text.verbosity", verbosity, _VERBOSITY)
    if verbosity is not None:
        chat["verbosity"] = verbosity
    fmt = raw.get("format")
    echoed: dict[str, Any] = {"type": "text"}
    if fmt is not None:
        if not isinstance(fmt, dict):
            raise _type("text.format", "an object", fmt)
        kind = fmt.get("type")
        if kind == "json_object":
            chat["response_format"] = {"type": "json_object"}
            echoed = {"type": "json_object"}
        elif kind == "json_schema":
            name = _string(fmt, "name", "text.format.name", required=True)
            schema = fmt.get("schema")
            if schema is None:
                raise _missing("text.format.schema")
            if not isinstance(schema, dict):
                raise _type("text.format.schema", "an object", schema)
            spec = {"name": name, "schema": schema}
            for key in ("description", "strict"):
                if fmt.get(key) is not None:
                    spec[key] = fmt[key]
            chat["response_format"] = {"type": "json_schema", "json_schema": spec}
            echoed = {"type": "json_schema", **spec}
        elif kind != "text":
            raise _value("text.format.type", kind, ("text", "json_object", "json_schema"))
    return {"format": echoed, "verbosity": verbosity or "medium"}


def _metadata(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise _type("metadata", "an object of strings", raw)
    return raw


def _echo_int(body: dict[str, Any], key: str, low: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type(key, "an integer", value)
    if value < low:
        raise WireError(
            f"Invalid '{key}': integer below minimum value. Expected a value >= {low}, but got "
            f"{value} instead.",
            param=key,
            code="integer_below_min_value",
        )
    return value


def _flag(body: dict[str, Any], key: str) -> None:
    value = body.get(key)
    if value is not None and not isinstance(value, bool):
        raise _type(key, "a boolean", value)


def _truncation(raw: Any) -> str:
    if raw is None:
        return "disabled"
    if raw not in ("auto", "disabled"):
        raise _value("truncation", raw, ("auto", "disabled"))
    return str(raw)

"""A Responses API request (``POST /v1/responses``) as a Chat Completions body the gateway runs.

Translating before the gateway sees the call is what lets every guard (budget reservation,
rate limits, PII, injection, kill switch, records) apply unchanged: they all read the chat
body. Validation happens here, in the Responses API's own terms and written as OpenAI writes a
400's ``param`` (``input[2].call_id``, ``tools[1].name``: list indexes in brackets), so a
caller never sees an error that names a chat field it did not send; anything this module
emits is a chat body ``schema.validate_openai`` accepts.

Served: text and image input items, ``function_call`` / ``function_call_output`` items,
function tools and tool choices, ``instructions``, ``max_output_tokens``, ``temperature``,
``top_p``, ``user`` / ``safety_identifier``, ``text.format`` (JSON object and schema),
``text.verbosity``, ``reasoning.effort``, ``prompt_cache_key``, ``service_tier``, ``stream``.
Refused with a 400 naming the field, because they need state or tools the gateway does not
hold: ``previous_response_id``, ``conversation``, ``background: true``, ``prompt``,
``item_reference`` items, hosted (non-function) tools and their tool choices, file inputs;
``n`` other than 1 (the API has no ``n``: one response per request, never one of n silently).
Dropped: ``reasoning`` input items (nothing but the model that wrote them can read them),
``include``, ``truncation``, ``max_tool_calls``, ``top_logprobs``, ``metadata`` (echoed back).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidRequest
from ..schema import json_schema_problem

_MESSAGE_ROLES = frozenset({"user", "assistant", "system", "developer"})
_CHOICE_MODES = frozenset({"auto", "none", "required"})
_FORMATS = frozenset({"text", "json_object", "json_schema"})


def _bad(param: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"{param}: {why}", param=param)


@dataclass(slots=True)
class Translated:
    """The chat body to run, and what the response object echoes of the request."""

    chat: dict[str, Any]
    echo: dict[str, Any] = field(default_factory=dict)


def to_chat(body: dict[str, Any]) -> Translated:
    """Check a Responses request and write it as a Chat Completions body; raise ``InvalidRequest``."""
    _refuse_stateful(body)
    n = body.get("n")
    if n is not None and (type(n) is not int or n != 1):
        # The Responses API has no n: ignoring it would answer n > 1 with one response.
        raise _bad("n", "the Responses API returns one response per request; send one per answer")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("model", "is required and must be a non-empty string")
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise _bad("instructions", "must be a string")
        if instructions:
            messages.append({"role": "system", "content": instructions})
    raw_input = body.get("input")
    if isinstance(raw_input, str):
        if raw_input:
            messages.append({"role": "user", "content": raw_input})
    elif isinstance(raw_input, list):
        messages.extend(input_messages(raw_input))
    elif raw_input is not None:
        raise _bad("input", "must be a string or a list of input items")
    if not any(m["role"] not in ("system", "developer") for m in messages):
        raise _bad("input", "is required: give at least one message or function_call_output")
    chat: dict[str, Any] = {"model": model, "messages": messages}
    tools = _tools(body.get("tools"))
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise _bad("parallel_tool_calls", "must be a boolean")  # even without tools: it is echoed
    if tools:
        chat["tools"] = tools
        choice = _tool_choice(body.get("tool_choice"))
        if choice is not None:
            chat["tool_choice"] = choice
        if parallel is not None:
            chat["parallel_tool_calls"] = parallel
    elif body.get("tool_choice") is not None:
        _tool_choice(body.get("tool_choice"))  # still checked: a bad value is a bad request
    _limits(body, chat)
    _text(body.get("text"), chat)
    reasoning = body.get("reasoning")
    if reasoning is not None:
        if not isinstance(reasoning, dict):
            raise _bad("reasoning", "must be an object")
        effort = reasoning.get("effort")
        if effort is not None:
            if not isinstance(effort, str):
                raise _bad("reasoning.effort", "must be a string")
            chat["reasoning_effort"] = effort
    for name in ("user", "safety_identifier", "prompt_cache_key", "service_tier"):
        value = body.get(name)
        if value is not None:
            if not isinstance(value, str):
                raise _bad(name, "must be a string")
            chat[name] = value
    if "user" not in chat and "safety_identifier" in chat:
        chat["user"] = chat["safety_identifier"]  # the end user the gateway caps and records
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _bad("stream", "must be a boolean")
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}  # response.completed carries usage
    return Translated(chat, _echo(body))


def _refuse_stateful(body: dict[str, Any]) -> None:
    if body.get("previous_response_id") is not None:
        raise _bad(
            "previous_response_id",
            "is not supported by this gateway (it stores no responses); send the earlier "
            "turns in input instead",
        )
    if body.get("conversation") is not None:
        raise _bad("conversation", "is not supported by this gateway; send the turns in input")
    if body.get("background") is True:
        raise _bad("background", "background responses are not supported by this gateway")
    if body.get("prompt") is not None:
        raise _bad("prompt", "stored prompt templates are not supported by this gateway")
    store = body.get("store")
    if store is not None and not isinstance(store, bool):
        raise _bad("store", "must be a boolean")
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise _bad("metadata", "must be an object")
    truncation = body.get("truncation")
    if truncation is not None and truncation not in ("auto", "disabled"):
        raise _bad("truncation", "must be auto or disabled")  # echoed in the response object


def input_messages(items: list[Any]) -> list[dict[str, Any]]:
    """Input items as chat messages: function calls join the assistant turn they belong to."""
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise _bad(where, "must be an object")
        kind = item.get("type", "message")
        if kind == "message":
            msg = _message(item, where)
            if msg is not None:
                out.append(msg)
        elif kind == "function_call":
            call = _function_call(item, where)
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            out.append(_function_output(item, where))
        elif kind == "reasoning":
            continue  # only the model that wrote it can read it; see the module docstring
        elif kind == "item_reference":
            raise _bad(where, "item_reference needs stored items, which this gateway does not keep")
        else:
            raise _bad(f"{where}.type", f"input items of type {str(kind)[:64]!r} are not supported")
    return out


def _message(item: dict[str, Any], where: str) -> dict[str, Any] | None:
    role = item.get("role")
    if role not in _MESSAGE_ROLES:
        raise _bad(f"{where}.role", "must be one of assistant, developer, system, user")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise _bad(f"{where}.content", "must be a string or a list of content parts")
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        parts.append(_content_part(part, f"{where}.content[{j}]", role))
    if role != "user" or not any(p["type"] == "image_url" for p in parts):
        # text-only turns as one string: what every chat provider accepts
        text = "".join(p["text"] for p in parts)
        if role == "assistant" and not text:
            return None  # an empty assistant turn carries nothing (chat rejects it)
        return {"role": role, "content": text}
    return {"role": role, "content": parts}


def _content_part(part: Any, where: str, role: str) -> dict[str, Any]:
    if not isinstance(part, dict):
        raise _bad(where, "must be an object")
    kind = part.get("type")
    if kind in ("input_text", "output_text"):
        text = part.get("text")
        if not isinstance(text, str):
            raise _bad(f"{where}.text", "must be a string")
        return {"type": "text", "text": text}
    if kind == "refusal" and role == "assistant":
        refusal = part.get("refusal")
        if not isinstance(refusal, str):
            raise _bad(f"{where}.refusal", "must be a string")
        return {"type": "text", "text": refusal}
    if kind == "input_image" and role == "user":
        url = part.get("image_url")
        if not isinstance(url, str) or not url:
            raise _bad(f"{where}.image_url", "is required (file_id images are not supported)")
        image: dict[str, Any] = {"url": url}
        detail = part.get("detail")
        if isinstance(detail, str) and detail != "auto":
            image["detail"] = detail
        return {"type": "image_url", "image_url": image}
    raise _bad(f"{where}.type", f"content parts of type {str(kind)[:64]!r} are not supported here")


def _function_call(item: dict[str, Any], where: str) -> dict[str, Any]:
    call_id, name, args = item.get("call_id"), item.get("name"), item.get("arguments")
    if not isinstance(call_id, str) or not call_id:
        raise _bad(f"{where}.call_id", "is required and must be a string")
    if not isinstance(name, str) or not name:
        raise _bad(f"{where}.name", "is required and must be a string")
    if not isinstance(args, str):
        raise _bad(f"{where}.arguments", "is required and must be a JSON string")
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}


def _function_output(item: dict[str, Any], where: str) -> dict[str, Any]:
    call_id, output = item.get("call_id"), item.get("output")
    if not isinstance(call_id, str) or not call_id:
        raise _bad(f"{where}.call_id", "is required and must be a string")
    if isinstance(output, str):
        return {"role": "tool", "tool_call_id": call_id, "content": output}
    if not isinstance(output, list):
        raise _bad(f"{where}.output", "must be a string or a list of input_text parts")
    texts = []
    for j, part in enumerate(output):
        if not isinstance(part, dict) or part.get("type") != "input_text":
            raise _bad(
                f"{where}.output[{j}]", "only input_text parts are supported in a tool output"
            )
        text = part.get("text")
        if not isinstance(text, str):
            raise _bad(f"{where}.output[{j}].text", "must be a string")
        texts.append(text)
    return {"role": "tool", "tool_call_id": call_id, "content": "".join(texts)}


def _tools(tools: Any) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise _bad("tools", "must be a list")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise _bad(f"tools[{i}]", "must be an object")
        if tool.get("type") != "function":
            kind = str(tool.get("type"))[:64]
            raise _bad(
                f"tools[{i}].type",
                f"only function tools are served by this gateway, not {kind!r}",
            )
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise _bad(f"tools[{i}].name", "is required and must be a string")
        fn: dict[str, Any] = {"name": name}
        desc = tool.get("description")
        if desc is not None:
            if not isinstance(desc, str):
                raise _bad(f"tools[{i}].description", "must be a string")
            fn["description"] = desc
        params = tool.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise _bad(f"tools[{i}].parameters", "must be a JSON schema object")
        fn["parameters"] = params if params is not None else {"type": "object", "properties": {}}
        strict = tool.get("strict")
        if isinstance(strict, bool):
            fn["strict"] = strict
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: Any) -> str | dict[str, Any] | None:
    if choice is None:
        return None
    if isinstance(choice, str):
        if choice not in _CHOICE_MODES:
            raise _bad("tool_choice", "must be auto, none, required or a function")
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            raise _bad("tool_choice.name", "is required and must be a string")
        return {"type": "function", "function": {"name": name}}
    raise _bad("tool_choice", "must be auto, none, required or {type: function, name}")


def _limits(body: dict[str, Any], chat: dict[str, Any]) -> None:
    mot = body.get("max_output_tokens")
    if mot is not None:
        if isinstance(mot, bool) or not isinstance(mot, int) or mot < 1:
            raise _bad("max_output_tokens", "must be a positive integer")
        chat["max_completion_tokens"] = mot
    for name, hi in (("temperature", 2.0), ("top_p", 1.0)):
        v = body.get(name)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 <= v <= hi:
            raise _bad(name, f"must be a number between 0 and {hi:g}")
        chat[name] = v


def _text(text: Any, chat: dict[str, Any]) -> None:
    if text is None:
        return
    if not isinstance(text, dict):
        raise _bad("text", "must be an object")
    verbosity = text.get("verbosity")
    if verbosity is not None:
        if not isinstance(verbosity, str):
            raise _bad("text.verbosity", "must be a string")
        chat["verbosity"] = verbosity
    fmt = text.get("format")
    if fmt is None:
        return
    if not isinstance(fmt, dict) or fmt.get("type") not in _FORMATS:
        raise _bad("text.format.type", "must be text, json_object or json_schema")
    if fmt["type"] == "json_object":
        chat["response_format"] = {"type": "json_object"}
    elif fmt["type"] == "json_schema":
        name, schema = fmt.get("name"), fmt.get("schema")
        if not isinstance(name, str) or not name:
            raise _bad("text.format.name", "is required and must be a string")
        if not isinstance(schema, dict):
            raise _bad("text.format.schema", "is required and must be a JSON schema object")
        why = json_schema_problem(schema)  # refused here, in this API's own terms, before billing
        if why is not None:
            raise _bad("text.format.schema", why)
        spec: dict[str, Any] = {"name": name, "schema": schema}
        for key, kind in (("description", str), ("strict", bool)):
            if fmt.get(key) is not None:
                if not isinstance(fmt[key], kind):
                    raise _bad(f"text.format.{key}", f"must be a {kind.__name__}")
                spec[key] = fmt[key]
        chat["response_format"] = {"type": "json_schema", "json_schema": spec}


def _echo(body: dict[str, Any]) -> dict[str, Any]:
    """The request fields a response object repeats, with OpenAI's defaults when absent."""
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
    fmt = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    return {
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "metadata": body.get("metadata") or {},
        "model": body.get("model"),
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": {"effort": (body.get("reasoning") or {}).get("effort"), "summary": None},
        "store": False,  # nothing is stored: GET /v1/responses/{id} has nothing to return
        "temperature": body.get("temperature", 1.0),
        "text": {"format": fmt if isinstance(fmt, dict) else {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": [
            {
                "type": "function",
                "name": t.get("name"),
                "description": t.get("description"),
                "parameters": t.get("parameters"),
                "strict": t.get("strict") is True,  # sent upstream only when asked for
            }
            for t in tools
        ],
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation") or "disabled",
        "user": body.get("user"),
        "safety_identifier": body.get("safety_identifier"),
    }

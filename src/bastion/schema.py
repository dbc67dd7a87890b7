"""Request parsing for both client formats: strict enough to name the bad field, cheap enough for the hot path.

Hand-written rather than a pydantic model because it runs on every call and
must only check what would otherwise fail upstream or break a guard; unknown
fields are passed through untouched so new provider features keep working.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from .errors import InvalidRequest

_ANTHROPIC_ROLES = frozenset({"user", "assistant"})
_OPENAI_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})

MAX_DEPTH = 64
"""Deepest nesting of arrays and objects a request may use.

Far beyond any real request (a tool's JSON schema nests a few levels), and far below what
breaks the code after parsing: orjson serializes at most 255 levels, recursive walks hit
Python's recursion limit.
"""

MAX_MODEL_CHARS = 256
# a model name is echoed in response headers (the deployment) and upstream URLs: visible ASCII only
_MODEL_RE = re.compile(r"[\x21-\x7e]+")


def header_token(value: str | None, max_chars: int) -> str | None:
    """``value`` if it is safe to store and echo in a response header, else None.

    Visible ASCII only, at most ``max_chars``: an id that could split a header or bloat a
    record is dropped, not trimmed into another id.
    """
    if not value or len(value) > max_chars or not all(" " < ch < "\x7f" for ch in value):
        return None
    return value


def _bad(field: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"{field}: {why}", param=field)


def _opt_number(body: dict[str, Any], name: str, lo: float, hi: float) -> None:
    v = body.get(name)
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise _bad(name, "must be a number")
    if not lo <= v <= hi:
        raise _bad(name, f"must be between {lo:g} and {hi:g}")


def _opt_int(body: dict[str, Any], name: str, lo: int = 1) -> None:
    v = body.get(name)
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad(name, "must be an integer")
    if v < lo:
        raise _bad(name, f"must be >= {lo}")


def _opt_bool(body: dict[str, Any], name: str) -> None:
    v = body.get(name)
    if v is not None and not isinstance(v, bool):
        raise _bad(name, "must be a boolean")


def _str_list(v: Any, field: str) -> None:
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise _bad(field, "must be a list of strings")


def _blocks(content: Any, field: str, *, allow_none: bool = False) -> None:
    if content is None and allow_none:
        return
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _bad(field, "must be a string or a list of content blocks")
    for i, block in enumerate(content):
        if not isinstance(block, dict):
            raise _bad(f"{field}.{i}", "must be an object")
        t = block.get("type")
        if not isinstance(t, str):
            raise _bad(f"{field}.{i}.type", "is required and must be a string")
        if t == "text" and not isinstance(block.get("text"), str):
            raise _bad(f"{field}.{i}.text", "must be a string")


def parse_body(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and too_deep(body, MAX_DEPTH):
        raise InvalidRequest(f"request body nests deeper than {MAX_DEPTH} levels")
    return body


def too_deep(value: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than ``limit`` levels (iterative: no recursion limit).

    Only containers are visited, so a real request costs a few hundred steps; the byte count in
    ``parse_body`` skips the walk entirely for bodies with too few brackets to be that deep.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        kids = node.values() if isinstance(node, dict) else node
        stack.extend((k, depth + 1) for k in kids if isinstance(k, dict | list))
    return False


def _common(body: dict[str, Any]) -> None:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("model", "is required and must be a non-empty string")
    if len(model) > MAX_MODEL_CHARS or not _MODEL_RE.fullmatch(model):
        raise _bad(
            "model",
            f"must be at most {MAX_MODEL_CHARS} visible ASCII characters (no spaces or controls)",
        )
    msgs = body.get("messages")
    templated = isinstance(body.get("bastion"), dict)  # a server-side template writes the turn
    if templated and msgs is None:
        body["messages"] = msgs = []
    if not isinstance(msgs, list) or (not msgs and not templated):
        raise _bad("messages", "is required and must be a non-empty list")
    _opt_bool(body, "stream")


def validate_anthropic(body: dict[str, Any]) -> None:
    """Check an Anthropic Messages request; ``max_tokens`` may be absent (a guard injects it)."""
    _common(body)
    for i, m in enumerate(body["messages"]):
        if not isinstance(m, dict):
            raise _bad(f"messages.{i}", "must be an object")
        if m.get("role") not in _ANTHROPIC_ROLES:
            raise _bad(f"messages.{i}.role", "must be 'user' or 'assistant'")
        if "content" not in m:
            raise _bad(f"messages.{i}.content", "is required")
        _blocks(m["content"], f"messages.{i}.content")
    _opt_int(body, "max_tokens")
    _opt_number(body, "temperature", 0.0, 1.0)
    _opt_number(body, "top_p", 0.0, 1.0)
    _opt_int(body, "top_k", 0)
    if "system" in body and body["system"] is not None:
        _blocks(body["system"], "system")
    if "stop_sequences" in body and body["stop_sequences"] is not None:
        _str_list(body["stop_sequences"], "stop_sequences")
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise _bad("tools", "must be a list")
        for i, t in enumerate(tools):
            if not isinstance(t, dict) or not isinstance(t.get("name"), str):
                raise _bad(f"tools.{i}.name", "is required and must be a string")
    tc = body.get("tool_choice")
    if tc is not None and (
        not isinstance(tc, dict) or tc.get("type") not in {"auto", "any", "tool", "none"}
    ):
        raise _bad("tool_choice.type", "must be one of auto, any, tool, none")
    md = body.get("metadata")
    if md is not None:
        if not isinstance(md, dict):
            raise _bad("metadata", "must be an object")
        uid = md.get("user_id")
        if uid is not None and not isinstance(uid, str):
            raise _bad("metadata.user_id", "must be a string")


def validate_openai(body: dict[str, Any]) -> None:
    """Check an OpenAI Chat Completions request."""
    _common(body)
    for i, m in enumerate(body["messages"]):
        if not isinstance(m, dict):
            raise _bad(f"messages.{i}", "must be an object")
        role = m.get("role")
        if role not in _OPENAI_ROLES:
            raise _bad(f"messages.{i}.role", "must be one of " + ", ".join(sorted(_OPENAI_ROLES)))
        _blocks(m.get("content"), f"messages.{i}.content", allow_none=role == "assistant")
        if role == "tool" and not isinstance(m.get("tool_call_id"), str):
            raise _bad(f"messages.{i}.tool_call_id", "is required for tool messages")
    _opt_int(body, "max_tokens")
    _opt_int(body, "max_completion_tokens")
    _opt_int(body, "n")
    _opt_number(body, "temperature", 0.0, 2.0)
    _opt_number(body, "top_p", 0.0, 1.0)
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str):
        _str_list(stop, "stop")
    so = body.get("stream_options")
    if so is not None and not isinstance(so, dict):
        raise _bad("stream_options", "must be an object")
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise _bad("tools", "must be a list")
        for i, t in enumerate(tools):
            fn = t.get("function") if isinstance(t, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise _bad(f"tools.{i}.function.name", "is required and must be a string")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise _bad("user", "must be a string")
    rf = body.get("response_format")
    js = rf.get("json_schema") if isinstance(rf, dict) else None
    if isinstance(js, dict) and js.get("schema") is not None:
        why = json_schema_problem(js["schema"])
        if why is not None:
            raise _bad("response_format.json_schema.schema", why)


def json_schema_problem(schema: Any) -> str | None:
    """Why a response schema cannot check an answer, before anything is sent (None: it can).

    The answer is validated against it once it is paid for; a schema the validator refuses or
    loops on would otherwise turn a billed answer into a 500.
    """
    import jsonschema

    from .safety.validation.jsonout import NO_REMOTE_REFS

    if not isinstance(schema, dict):
        return "must be a JSON schema object"
    try:
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        cls(schema, registry=NO_REMOTE_REFS).is_valid(None)  # a $ref cycle loops on any value
    except jsonschema.exceptions.SchemaError as exc:
        return f"invalid JSON schema: {exc.message[:200]}"
    except RecursionError:
        return "unusable JSON schema (a $ref that refers to itself without end)"
    except Exception as exc:  # the validator's own failure (an unresolvable $ref, say)
        return f"unusable JSON schema ({type(exc).__name__})"
    return None

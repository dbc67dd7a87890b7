"""Plausible values for a JSON schema, so simulated tool calls carry arguments a tool accepts.

Deterministic on purpose (first enum member, minimums, name-based strings): a test
can predict the arguments of a simulated call from the tool's schema alone.
"""

from __future__ import annotations

import re
from typing import Any

_MAX_DEPTH = 8
# a client's schema may ask for any size: the example stays small (a schema demanding more
# gets a shorter answer, which the gateway's JSON check then flags), so a hostile minItems or
# minLength never makes the in-process simulator build a huge value on the event loop
_MAX_ITEMS = 8  # per array at the top two levels; one item deeper down
_MAX_STRING = 4096
_STRING_BY_NAME = (
    (frozenset({"city", "location", "place", "address"}), "Paris"),
    (frozenset({"country"}), "France"),
    (frozenset({"email"}), "user@example.com"),
    (frozenset({"url", "uri", "link", "website"}), "https://example.com"),
    (frozenset({"language", "lang", "locale"}), "en"),
    (frozenset({"unit", "units"}), "celsius"),
    (frozenset({"currency"}), "EUR"),
    (frozenset({"date"}), "2025-01-15"),
    (frozenset({"time"}), "09:30"),
    (frozenset({"id"}), "id_123"),
    (frozenset({"name", "title"}), "example"),
)
_HINTED = frozenset(
    {"query", "q", "search", "question", "text", "prompt", "input", "message", "topic"}
)
_WORD_RE = re.compile(r"[a-z]+")
_CAMEL_RE = re.compile(r"([a-z0-9])([A-Z])")
_FORMATS = {
    "date": "2025-01-15",
    "date-time": "2025-01-15T09:30:00Z",
    "time": "09:30:00",
    "email": "user@example.com",
    "uri": "https://example.com",
    "url": "https://example.com",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


def example_for(schema: Any, *, hint: str = "") -> Any:
    """A value valid for ``schema`` (required properties only, when the schema lists them)."""
    root = schema if isinstance(schema, dict) else {}
    return _value(root, root, "", hint, 0)


def _value(schema: dict[str, Any], root: dict[str, Any], name: str, hint: str, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str):
        target = _resolve(root, ref)
        return _value(target, root, name, hint, depth + 1) if target is not None else {}
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    if "default" in schema:
        return schema["default"]
    examples = schema.get("examples")
    if isinstance(examples, list) and examples:
        return examples[0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list):
            for opt in options:
                if isinstance(opt, dict) and opt.get("type") != "null":
                    return _value(opt, root, name, hint, depth + 1)
    kind = _kind(schema)
    if kind == "object":
        return _object(schema, root, hint, depth)
    if kind == "array":
        items = schema.get("items")
        item_schema = items if isinstance(items, dict) else {}
        count = schema.get("minItems")
        n = count if isinstance(count, int) and count > 0 else 1
        top = schema.get("maxItems")
        if isinstance(top, int):
            n = min(n, top)
        n = min(n, _MAX_ITEMS if depth < 2 else 1)
        return [_value(item_schema, root, name, hint, depth + 1) for _ in range(n)]
    if kind == "integer":
        return int(_number(schema, 1))
    if kind == "number":
        return _number(schema, 1.5)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string(schema, name, hint)


def _kind(schema: dict[str, Any]) -> str:
    t = schema.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), "null")
    if isinstance(t, str):
        return t
    if "properties" in schema:
        return "object"
    if "items" in schema:
        return "array"
    return "string"


def _object(schema: dict[str, Any], root: dict[str, Any], hint: str, depth: int) -> dict[str, Any]:
    props = schema.get("properties")
    if not isinstance(props, dict):
        return {}
    required = schema.get("required")
    names = [n for n in required if n in props] if isinstance(required, list) else list(props)
    out: dict[str, Any] = {}
    for prop in names:
        sub = props[prop]
        out[prop] = _value(sub if isinstance(sub, dict) else {}, root, prop, hint, depth + 1)
    return out


def _number(schema: dict[str, Any], default: float) -> float:
    value = default
    low = schema.get("minimum")
    if isinstance(low, int | float):
        value = max(value, low)
    xlow = schema.get("exclusiveMinimum")
    if isinstance(xlow, int | float) and not isinstance(xlow, bool) and value <= xlow:
        value = xlow + 1
    high = schema.get("maximum")
    if isinstance(high, int | float):
        value = min(value, high)
    xhigh = schema.get("exclusiveMaximum")
    if isinstance(xhigh, int | float) and not isinstance(xhigh, bool) and value >= xhigh:
        value = xhigh - 1
    return value


def _string(schema: dict[str, Any], name: str, hint: str) -> str:
    fmt = schema.get("format")
    known = isinstance(fmt, str) and fmt in _FORMATS
    value = _FORMATS[str(fmt)] if known else _by_name(name, hint)
    low = schema.get("minLength")
    if isinstance(low, int) and len(value) < low:
        value = value + "x" * (min(low, _MAX_STRING) - len(value))
    high = schema.get("maxLength")
    if isinstance(high, int) and len(value) > high:
        value = value[:high]
    return value


def _by_name(name: str, hint: str) -> str:
    words = set(_WORD_RE.findall(_CAMEL_RE.sub(r"\1_\2", name).lower()))
    if words & _HINTED:
        return hint[:60] or "example"
    for keys, value in _STRING_BY_NAME:
        if words & keys:
            return value
    return "example"


def _resolve(root: dict[str, Any], ref: str) -> dict[str, Any] | None:
    if not ref.startswith("#/"):
        return None
    node: Any = root
    for part in ref[2:].split("/"):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node if isinstance(node, dict) else None

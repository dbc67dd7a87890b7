"""Strict checks of Responses API JSON against the official ``openai`` SDK's own types.

The SDK parses leniently (unknown fields are kept as extras, and ``construct`` skips required
ones); these helpers validate with ``model_validate`` (a missing required field fails) and then
walk the parsed objects for any field the SDK's type does not declare. ``events`` reads an SSE
body into its events and checks each ``event:`` line names its data's ``type``; ``replay``
feeds them to the SDK's own stream accumulator (what ``client.responses.stream`` runs).
"""

from __future__ import annotations

from typing import Any

import orjson
from openai._types import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import BaseModel, TypeAdapter

from bastion.providers.sse import SSEDecoder

_EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)


def extras(obj: object, path: str = "$") -> list[str]:
    """Every field of ``obj`` (a parsed SDK object, at any depth) its type does not declare."""
    out: list[str] = []
    if isinstance(obj, BaseModel):
        out += [f"{path}.{k}" for k in obj.model_extra or {}]
        for name in type(obj).model_fields:
            out += extras(getattr(obj, name), f"{path}.{name}")
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            out += extras(v, f"{path}[{i}]")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out += extras(v, f"{path}.{k}")
    return out


def strict_response(data: dict[str, Any]) -> Response:
    """``data`` as the SDK's ``Response``; fails on a missing required or an undeclared field."""
    parsed = Response.model_validate(data)
    assert extras(parsed) == [], extras(parsed)
    return parsed


def strict_event(data: dict[str, Any], allowed: frozenset[str] = frozenset()) -> Any:
    """One stream event as the SDK's typed event (``allowed``: extras to tolerate, by path)."""
    parsed = _EVENT.validate_python(data)
    assert type(parsed).__name__ != "dict" and parsed.type == data["type"]
    unknown = [e for e in extras(parsed) if e not in allowed]
    assert unknown == [], (data["type"], unknown)
    return parsed


def events(body: bytes) -> list[dict[str, Any]]:
    """An SSE body's events, each data object checked against its ``event:`` line."""
    out = []
    for ev in SSEDecoder().feed(body):
        data = orjson.loads(ev.data)
        assert ev.event == data["type"], (ev.event, data.get("type"))
        out.append(data)
    return out


def replay(parsed: list[Any]) -> Any:
    """The SDK's own accumulated snapshot after ``parsed`` events (before a terminal one)."""
    state = ResponseStreamState(input_tools=omit, text_format=omit)
    for ev in parsed:
        if ev.type in ("response.completed", "response.incomplete", "response.failed"):
            break
        state.handle_event(ev)
    return state._ResponseStreamState__current_snapshot  # type: ignore[attr-defined]

"""What Bedrock's Converse refuses in a request body, found the way AWS finds it.

The body is checked against the request shape of botocore's service model (``bedrock-runtime``'s
``Converse``/``ConverseStream`` input: unknown members, required members, unions holding exactly
one member, enums, patterns, lengths, ranges, base64 blobs) and then against the conversation
rules Converse adds on top (starts with a user turn, roles alternate, no ``system`` role, content
not empty, text not blank, ``toolConfig`` present when tool blocks are). ``validate`` gives the
first problem in AWS's words, which the simulator's Bedrock wire (``bedrock_wire.py``) answers
with a 400 ``ValidationException``. botocore is imported on first use only.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["validate"]


@functools.cache
def _shapes() -> tuple[Any, Any]:
    """The Converse and ConverseStream input shapes from botocore's service model (read once)."""
    from botocore.loaders import Loader
    from botocore.model import ServiceModel

    service = ServiceModel(Loader().load_service_model("bedrock-runtime", "service-2"))
    return (
        service.operation_model("Converse").input_shape,
        service.operation_model("ConverseStream").input_shape,
    )


def validate(body: dict[str, Any], *, stream: bool) -> str | None:
    """The first problem Bedrock would name in a Converse body, or None."""
    shape = _shapes()[1 if stream else 0]
    problem = _check(body, shape, "", top=True)
    if problem is not None:
        return problem
    return _conversation_rules(body)


def _check(value: Any, shape: Any, where: str, *, top: bool = False) -> str | None:
    kind = shape.type_name
    at = where or "body"
    if getattr(shape, "is_document_type", False):
        return None  # a Document: any JSON value
    if kind == "structure":
        if not isinstance(value, dict):
            return f"Value at '{at}' must be an object"
        members = {
            k: v for k, v in shape.members.items() if not (top and v.serialization.get("location"))
        }
        for key in value:
            if key not in members:
                return f"Malformed input request: extraneous key [{key}] is not permitted at '{at}'"
        for key in shape.required_members:
            if key in members and key not in value:
                return f"Value null at '{_join(where, key)}' failed to satisfy constraint: Member must not be null"
        if shape.metadata.get("union") and len(value) != 1:
            return f"Value at '{at}' must set exactly one member of the union"
        for key, item in value.items():
            problem = _check(item, members[key], _join(where, key))
            if problem is not None:
                return problem
        return None
    if kind == "list":
        if not isinstance(value, list):
            return f"Value at '{at}' must be a list"
        problem = _bounds(len(value), shape.metadata, at, "length")
        if problem is not None:
            return problem
        for i, item in enumerate(value):
            problem = _check(item, shape.member, f"{at}.{i + 1}.member")
            if problem is not None:
                return problem
        return None
    if kind == "map":
        return None if isinstance(value, dict) else f"Value at '{at}' must be an object"
    if kind == "string":
        if not isinstance(value, str):
            return f"Value at '{at}' must be a string"
        pattern = shape.metadata.get("pattern")
        if pattern and not _matches(pattern, value):
            return (
                f"Value '{value}' at '{at}' failed to satisfy constraint: Member must satisfy "
                f"regular expression pattern: {pattern}"
            )
        if shape.enum and value not in shape.enum:
            return (
                f"Value '{value}' at '{at}' failed to satisfy constraint: Member must satisfy "
                f"enum value set: [{', '.join(shape.enum)}]"
            )
        return _bounds(len(value), shape.metadata, at, "length")
    if kind in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            return f"Value at '{at}' must be an integer"
        return _bounds(value, shape.metadata, at, "value")
    if kind in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"Value at '{at}' must be a number"
        return _bounds(value, shape.metadata, at, "value")
    if kind == "boolean":
        return None if isinstance(value, bool) else f"Value at '{at}' must be a boolean"
    if kind == "blob":
        try:
            raw = base64.b64decode(value, validate=True) if isinstance(value, str) else None
        except (binascii.Error, ValueError):
            raw = None
        if raw is None:
            return f"Value at '{at}' must be base64-encoded bytes"
        return _bounds(len(raw), shape.metadata, at, "length")
    return None


def _matches(pattern: str, value: str) -> bool:
    """The service model's (Java) pattern, as AWS applies it: the whole value must match."""
    try:
        return re.fullmatch(pattern, value) is not None
    except re.error:
        return True  # a pattern Python cannot read is not ours to enforce


def _bounds(n: float, meta: Mapping[str, Any], at: str, what: str) -> str | None:
    low, high = meta.get("min"), meta.get("max")
    if low is not None and n < low:
        return f"Value at '{at}' failed to satisfy constraint: Member must have {what} greater than or equal to {low}"
    if high is not None and n > high:
        return f"Value at '{at}' failed to satisfy constraint: Member must have {what} less than or equal to {high}"
    return None


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _conversation_rules(body: dict[str, Any]) -> str | None:
    messages = body.get("messages") or []
    if not messages:
        return "A conversation must start with a user message. Try again with a conversation that starts with a user message."
    if messages[0].get("role") != "user":
        return "A conversation must start with a user message. Try again with a conversation that starts with a user message."
    tools = False
    for i, msg in enumerate(messages):
        if i and msg.get("role") == messages[i - 1].get("role"):
            return (
                "A conversation must alternate between user and assistant roles. Make sure the "
                "conversation alternates between user and assistant roles and try again."
            )
        if msg.get("role") == "system":
            return f"Value 'system' at 'messages.{i + 1}.member.role' is not permitted in a message"
        content = msg.get("content") or []
        if not content:
            return f"The content field in the Message object at messages.{i} is empty. Add a ContentBlock object to the content field and try again."
        for j, block in enumerate(content):
            if "text" in block and not str(block["text"]).strip():
                return f"The text field in the ContentBlock object at messages.{i}.content.{j} is blank. Add text to the text field, and try again."
            tools = tools or "toolUse" in block or "toolResult" in block
    if tools and "toolConfig" not in body:
        return (
            "The toolConfig field must be defined when using toolUse and toolResult content blocks."
        )
    return None

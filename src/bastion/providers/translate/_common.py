"""Helpers both format modules share, so both directions agree byte for byte."""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

import orjson

from .model import ImagePart

_RAW = "_raw"
_TOOL_ID_BAD = re.compile(r"[^A-Za-z0-9_-]")
_DATA_URL = re.compile(r"^data:([^;,]+)?((?:;[^;,]*)*),(.*)$", re.DOTALL)

_MAX_COUNT = 2**53
ANTHROPIC_MSG_PREFIX = "msg_"
OPENAI_MSG_PREFIX = "chatcmpl-"


def parse_arguments(raw: object) -> dict[str, Any]:
    """OpenAI's JSON-string arguments as an object, never raising (bad JSON is kept raw)."""
    if isinstance(raw, dict):
        return raw
    if not isinstance(raw, str):
        return {} if raw is None else {_RAW: str(raw)}
    if not raw.strip():
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {_RAW: raw}
    return value if isinstance(value, dict) else {_RAW: raw}


def dump_arguments(arguments: dict[str, Any]) -> str:
    """Inverse of ``parse_arguments``: raw strings go back exactly as they came."""
    if len(arguments) == 1 and isinstance(arguments.get(_RAW), str):
        return str(arguments[_RAW])
    return dumps(arguments)


def dumps(value: Any) -> str:
    """Compact JSON text, as providers send it (stdlib fallback for ints beyond 64 bits)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def loads_object(data: bytes | str) -> dict[str, Any] | None:
    """Parse a JSON object, or None for anything else (never raises)."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def image_from_url(url: str) -> ImagePart:
    """Split a ``data:`` URL into media type and base64 payload; other URLs stay URLs."""
    m = _DATA_URL.match(url)
    if m and ";base64" in (m.group(2) or ""):
        return ImagePart(media_type=m.group(1) or "image/png", data=m.group(3))
    return ImagePart(url=url)


def image_to_url(image: ImagePart) -> str:
    """Render an image as OpenAI's ``image_url.url`` (a data URL when inline)."""
    if image.data is not None:
        return f"data:{image.media_type or 'image/png'};base64,{image.data}"
    return image.url or ""


def anthropic_tool_id(tool_id: str, fallback: str) -> str:
    """Anthropic accepts only ``[A-Za-z0-9_-]`` in tool ids; map others so pairs still match.

    An id it accepts goes as is. Another keeps its allowed characters and gains a digest of
    the whole id, so two ids that differ only in refused characters (``call/1``, ``call?1``)
    stay two ids and each result still answers its own call (the map is a pure function, the
    same for a call and its result)."""
    if not tool_id:
        return fallback
    if not _TOOL_ID_BAD.search(tool_id):
        return tool_id
    digest = hashlib.sha256(tool_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{_TOOL_ID_BAD.sub('_', tool_id)}_{digest}"


def message_id(source_id: str, prefix: str) -> str:
    """The target's message id from the source's, reversibly (``msg_x`` ↔ ``chatcmpl-x``)."""
    for known in (ANTHROPIC_MSG_PREFIX, OPENAI_MSG_PREFIX):
        if source_id.startswith(known):
            return prefix + source_id[len(known) :]
    return prefix + source_id


def as_int(value: object) -> int:
    """A token count from a provider body; absent or malformed counts are 0, never negative."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return 0
    return int(min(max(0, value), _MAX_COUNT))


def opt_float(value: object) -> float | None:
    """An optional numeric parameter; non-numbers, NaN and infinities count as absent."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def opt_int(value: object) -> int | None:
    """An optional integer parameter (``max_tokens``); see ``opt_float``."""
    number = opt_float(value)
    return None if number is None else int(number)


def as_str(value: object) -> str:
    """A string field that may be missing or null."""
    return value if isinstance(value, str) else ""


def as_list(value: object) -> list[Any]:
    """A list field that may be missing or null."""
    return value if isinstance(value, list) else []


def as_dict(value: object) -> dict[str, Any]:
    """An object field that may be missing or null."""
    return value if isinstance(value, dict) else {}

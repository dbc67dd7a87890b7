"""The state host's wire: ``CounterStore`` calls and answers as typed, length-prefixed JSON.

A frame is a 4-byte big-endian length and an orjson document. A request is
``[id, method, args]``, an answer ``[id, 0, value]`` or ``[id, 1, kind, message]`` (``kind``
names the exception to raise: ``value`` for ``ValueError``, ``type`` for ``TypeError``, else
``StateUnavailable``). Only the methods in ``METHODS`` are served.

Values are encoded explicitly, never pickled: a decoder builds only the dataclasses and enums
named in ``_TYPES``/``_ENUMS``, field by field, so a peer can make nothing else. JSON alone
would lose what the store's answers depend on, so these are tagged (one-key objects):
tuples (``T``), bytes (``b``, base64), floats JSON cannot hold (``f``: inf, -inf, nan),
ints orjson cannot hold (``i``: past 64 bits, as digits), strs it cannot (``s``: a lone
surrogate, as code points), dataclasses (``D``: name and fields in order), enums (``E``) and
dicts (``M``); lists, other strings and ints, finite floats, booleans and None are themselves.
"""

from __future__ import annotations

import base64
import math
import struct
from dataclasses import fields, is_dataclass
from enum import StrEnum
from typing import Any, Final

import orjson

from bastion.state.base import (
    BreakerDecision,
    BreakerPolicy,
    BreakerState,
    Cap,
    IdemBegin,
    IdemOutcome,
    IncrResult,
    ReserveResult,
    TakeResult,
    Usage,
)
from bastion.state.plan import (
    AdmitResult,
    AllowBreaker,
    Charge,
    Incr,
    RecordBreaker,
    Reserve,
    Settle,
    Take,
)

__all__ = [
    "HEADER", "MAX_FRAME", "METHODS", "FrameTooLarge", "WireError", "decode", "encode", "frame",
    "unframe",
]  # fmt: skip

HEADER: Final = struct.Struct(">I")
MAX_FRAME: Final = 64 * 1024 * 1024  # an idempotent response is stored whole: allow large ones

# the CounterStore methods a worker may call; close() is the host's own, on its SIGTERM
METHODS: Final = frozenset(
    {
        "reserve", "settle", "release", "usage", "take", "charge", "incr", "incr_if_below",
        "get", "set_flag", "get_flags", "flag_meta", "breaker_allow", "breaker_record",
        "breaker_peek", "idem_begin", "idem_complete", "idem_abandon", "admit", "finish", "ping",
    }
)  # fmt: skip

_TYPES: Final[dict[str, type]] = {
    cls.__name__: cls
    for cls in (
        Cap, BreakerPolicy, Usage, ReserveResult, TakeResult, IncrResult, BreakerDecision,
        IdemBegin, AdmitResult, Take, Incr, AllowBreaker, Reserve, Settle, Charge, RecordBreaker,
    )
}  # fmt: skip
_ENUMS: Final[dict[str, type[StrEnum]]] = {e.__name__: e for e in (BreakerState, IdemOutcome)}
_FLOATS: Final = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**64 - 1


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


class WireError(ValueError):
    """A frame or value the codec does not know: the peer is broken or not a state host."""


class FrameTooLarge(WireError):
    """A message over ``MAX_FRAME``: the state host cannot take it (not a caller's bug)."""


def encode(value: Any) -> Any:
    """``value`` as a JSON-able tree (see the module docstring)."""
    if isinstance(value, StrEnum):  # before str: an enum member is a str too
        name = type(value).__name__
        if _ENUMS.get(name) is not type(value):
            raise WireError(f"enum {name} is not on the wire")
        return {"E": [name, value.value]}
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):  # orjson takes UTF-8 text only: a lone surrogate is tagged
        return value if value.isascii() or _utf8(value) else {"s": [ord(c) for c in value]}
    if isinstance(value, int):  # orjson takes 64-bit ints only: a wider one is tagged
        return value if _INT_MIN <= value <= _INT_MAX else {"i": str(value)}
    if isinstance(value, float):
        return value if math.isfinite(value) else {"f": str(value)}
    if is_dataclass(value) and not isinstance(value, type):
        name = type(value).__name__
        if _TYPES.get(name) is not type(value):
            raise WireError(f"type {name} is not on the wire")
        return {"D": [name, [encode(getattr(value, f.name)) for f in fields(value)]]}
    if isinstance(value, tuple):
        return {"T": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return {"b": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, dict):
        return {"M": [[encode(k), encode(v)] for k, v in value.items()]}
    raise WireError(f"{type(value).__name__} is not on the wire")


def decode(tree: Any) -> Any:
    """The value ``encode`` made ``tree`` from; anything else raises ``WireError``."""
    if tree is None or isinstance(tree, bool | str | int | float):
        return tree
    if isinstance(tree, list):
        return [decode(v) for v in tree]
    if not isinstance(tree, dict) or len(tree) != 1:
        raise WireError("malformed value")
    tag, body = next(iter(tree.items()))
    try:
        if tag == "T":
            return tuple(decode(v) for v in body)
        if tag == "f":
            return _FLOATS[body]
        if tag == "i" and isinstance(body, str):
            return int(body)
        if tag == "s" and isinstance(body, list):
            return "".join(map(chr, body))
        if tag == "b":
            return base64.b64decode(body, validate=True)
        if tag == "M":
            return {decode(k): decode(v) for k, v in body}
        if tag == "E":
            name, raw = body
            return _ENUMS[name](raw)
        if tag == "D":
            name, values = body
            cls = _TYPES[name]
            if len(values) != len(fields(cls)):
                raise WireError(f"{name}: {len(values)} fields")
            return cls(*(decode(v) for v in values))
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, WireError):
            raise
        raise WireError(f"malformed {tag!r} value") from exc
    raise WireError(f"unknown tag {tag!r}")


def frame(message: list[Any]) -> bytes:
    """One message (already encoded) as a length-prefixed frame."""
    body = orjson.dumps(message)
    if len(body) > MAX_FRAME:
        raise FrameTooLarge(f"frame of {len(body)} bytes is over {MAX_FRAME}")
    return HEADER.pack(len(body)) + body


def unframe(body: bytes) -> list[Any]:
    """A frame's body as a message list."""
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise WireError("frame is not JSON") from exc
    if not isinstance(message, list) or len(message) < 3:
        raise WireError("frame is not a message")
    return message

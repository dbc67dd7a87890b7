"""One byte string per argument value, so an idempotency key names exactly one action.

Serialising arguments to JSON and hashing that is not enough: JSON has no spelling for
``inf`` (``1e400`` and ``-1e400`` both come out as ``null``, so two different transfers share
a key and the second is answered with the first one's result), none for a lone surrogate or
an integer past 64 bits (the serialiser raises instead), and none for bytes. ``canonical`` is a
tagged, length-prefixed encoding instead: total over the values arguments are made of, and
injective on them, so two values get the same bytes only when they are the same value.

"The same value" is deliberately strict, because a collision replays the wrong action's result
silently while a split costs at most one extra run of a model that spelt a number twice:

- the type counts: ``True``, ``1`` and ``1.0`` are three values; a list and a tuple with the
  same items are one (JSON has only arrays); ``str`` and ``bytes`` never meet;
- floats are compared by their bits, so ``0.0`` and ``-0.0`` differ, and every NaN is one
  value (a NaN is never equal to itself, but an action keyed on it should still run once);
- integers are exact at any size; strings are compared code point by code point, lone
  surrogates included; mapping keys are values too (``{1: x}`` is not ``{"1": x}``) and are
  ordered by their encoding, so insertion order never matters.

``json_problems`` is the executor's separate, narrower question: is this a value a tool can
be handed and a result can be forwarded with — finite numbers, valid Unicode, string keys,
bounded nesting — and if not, what should the model fix.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator, Mapping
from typing import Any, Final

__all__ = ["MAX_DEPTH", "UnsupportedValue", "canonical", "json_problems"]

MAX_DEPTH: Final = 64
_MAX_PROBLEMS: Final = 20
_NAN: Final = b"N"
_DOUBLE: Final = struct.Struct(">d")


class UnsupportedValue(ValueError):
    """A value with no canonical form: a type JSON cannot carry, or nesting past ``MAX_DEPTH``."""


def canonical(value: Any) -> bytes:
    """The value's bytes: equal exactly when the values are the same (see the module docstring)."""
    out: list[bytes] = []
    _encode(value, out, 0)
    return b"".join(out)


def _sized(tag: bytes, data: bytes) -> bytes:
    return tag + str(len(data)).encode() + b":" + data


def _encode(value: Any, out: list[bytes], depth: int) -> None:
    # Every encoding is prefix-free (fixed width, terminated or length-prefixed), which is what
    # makes the concatenations below decodable, hence injective.
    if depth > MAX_DEPTH:
        raise UnsupportedValue(f"nested deeper than {MAX_DEPTH} levels")
    if value is None:
        out.append(b"n")
    elif value is True or value is False:
        out.append(b"t" if value else b"f")
    elif isinstance(value, int) and not isinstance(value, bool):
        # hex, not decimal: str() of a huge int raises past Python's digit limit
        out.append(b"i" + (b"-" if value < 0 else b"") + format(abs(value), "x").encode() + b";")
    elif isinstance(value, float):
        out.append(_NAN if math.isnan(value) else b"d" + _DOUBLE.pack(value))
    elif isinstance(value, str):
        out.append(_sized(b"s", value.encode("utf-8", "surrogatepass")))
    elif isinstance(value, bytes | bytearray | memoryview):
        out.append(_sized(b"b", bytes(value)))
    elif isinstance(value, list | tuple):
        out.append(b"[")
        for item in value:
            _encode(item, out, depth + 1)
        out.append(b"]")
    elif isinstance(value, Mapping):
        pairs: list[bytes] = []
        for key, item in value.items():
            pair: list[bytes] = []
            _encode(key, pair, depth + 1)
            _encode(item, pair, depth + 1)
            pairs.append(b"".join(pair))
        # keys are prefix-free, so sorting whole pairs orders by key first
        out.append(b"{" + b"".join(sorted(pairs)) + b"}")
    else:
        raise UnsupportedValue(f"a {type(value).__name__} is not a JSON value")


def json_problems(value: Any) -> list[str]:
    """What keeps ``value`` from being plain JSON a tool can trust, as ``$.path: reason`` lines."""
    problems: list[str] = []
    for path, reason in _walk(value):
        problems.append(f"{path}: {reason}")
        if len(problems) >= _MAX_PROBLEMS:
            break
    return problems


def _text_problem(text: str) -> str | None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "string is not valid Unicode (it contains a lone surrogate)"
    return None


def _walk(value: Any) -> Iterator[tuple[str, str]]:
    # Iterative, so a hostile nesting depth (or a cycle) ends at MAX_DEPTH, not in RecursionError.
    stack: list[tuple[str, Any, int]] = [("$", value, 0)]
    while stack:
        path, item, depth = stack.pop()
        if item is None or isinstance(item, bool | int):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                yield path, "number is out of range (it reads as infinity or NaN)"
        elif isinstance(item, str):
            reason = _text_problem(item)
            if reason:
                yield path, reason
        elif depth >= MAX_DEPTH and isinstance(item, list | tuple | Mapping):
            yield path, f"nested deeper than {MAX_DEPTH} levels"
        elif isinstance(item, list | tuple):
            stack.extend((f"{path}[{i}]", v, depth + 1) for i, v in reversed(list(enumerate(item))))
        elif isinstance(item, Mapping):
            children: list[tuple[str, Any, int]] = []
            for key, v in item.items():
                if not isinstance(key, str):
                    yield path, f"object key of type {type(key).__name__} is not a string"
                    continue
                reason = _text_problem(key)
                if reason:
                    yield path, f"object key: {reason}"
                    continue
                children.append((f"{path}.{key}", v, depth + 1))
            stack.extend(reversed(children))
        else:
            yield path, f"a {type(item).__name__} is not a JSON value"

"""Check a model's structured output against a JSON schema before code acts on it.

Models wrap JSON in prose and code fences, so the JSON is extracted first; duplicate keys and
NaN are refused because parsers disagree on them (``{"ok": false, "ok": true}`` reads either
way). One repair round trip is allowed: the errors go back to a caller-supplied function (a
model call, usually) and its answer is validated like the first.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import jsonschema
from jsonschema.exceptions import SchemaError
from referencing import Registry

# an empty registry: a ``$ref`` is resolved inside the schema only. jsonschema's default still
# fetches any http(s) ``$ref`` with urllib (deprecated, no timeout, on the event loop), and the
# schema is the client's: that would let a request make the gateway call any address it names
NO_REMOTE_REFS: Final[Registry[Any]] = Registry()

__all__ = [
    "JsonSchemaValidator",
    "JsonVerdict",
    "Repair",
    "extract_json",
    "strict_loads",
    "validate_json_output",
    "validate_or_repair",
]

Repair = Callable[[str, list[str]], Awaitable[str]]

_FENCE: Final = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\r?\n(.*?)```", re.DOTALL)
_MAX_ERRORS: Final = 20
_MAX_EMBEDDED: Final = 64


class _Refused(ValueError):
    """JSON that parses but must not be trusted (duplicate keys, NaN/Infinity)."""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Refused(f"duplicate key {key!r}")
        out[key] = value
    return out


def _constant(name: str) -> Any:
    raise _Refused(f"{name} is not valid JSON")


_DECODER: Final = json.JSONDecoder(object_pairs_hook=_pairs, parse_constant=_constant)


def strict_loads(text: str) -> Any:
    """Parse one JSON value, refusing duplicate keys, NaN/Infinity and trailing text."""
    value, end = _DECODER.raw_decode(text, len(text) - len(text.lstrip()))
    if text[end:].strip():
        raise ValueError("trailing text after the JSON value")
    return value


def _candidates(text: str) -> Iterator[tuple[Any, str]]:
    """JSON values in ``text`` in order of intent: whole text, fenced blocks, then embedded."""
    stripped = text.strip()
    whole = [stripped] if stripped else []
    fenced = [body.strip() for lang, body in _FENCE.findall(text) if lang.lower() in ("json", "")]
    for candidate in whole + fenced:
        try:
            yield strict_loads(candidate), candidate
        except _Refused:
            raise
        except ValueError:
            continue
    for tries, match in enumerate(re.finditer(r"[\[{]", text)):
        if tries >= _MAX_EMBEDDED:
            return
        try:
            value, end = _DECODER.raw_decode(text, match.start())
        except _Refused:
            raise
        except ValueError:
            continue
        yield value, text[match.start() : end]


def extract_json(text: str) -> tuple[Any, str]:
    """The first JSON value in ``text`` and its exact text: whole, fenced, or embedded.

    Raises ``ValueError`` with the reason when there is none, or when the JSON is unsafe.
    """
    for found in _candidates(text):
        return found
    raise ValueError("no JSON value found in the output")


@dataclass(frozen=True, slots=True)
class JsonVerdict:
    """The parsed value when ``ok``; otherwise the errors, phrased for a repair prompt."""

    ok: bool
    value: Any
    errors: tuple[str, ...] = ()
    json_text: str | None = None
    repaired: bool = False


class JsonSchemaValidator:
    """One schema, checked and compiled once (with format checks), reused for every output."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        schema = dict(schema)
        cls = jsonschema.validators.validator_for(schema)
        try:
            cls.check_schema(schema)
        except SchemaError as exc:
            raise ValueError(f"invalid JSON schema: {exc.message}") from exc
        self.schema = schema
        self._validator = cls(schema, format_checker=cls.FORMAT_CHECKER, registry=NO_REMOTE_REFS)

    def errors(self, value: Any) -> list[str]:
        """Every violation as ``$.path: message``, in path order, at most 20."""
        found = sorted(self._validator.iter_errors(value), key=lambda e: list(map(str, e.path)))
        return [f"{e.json_path}: {e.message}" for e in found[:_MAX_ERRORS]]

    def check(self, text: str) -> JsonVerdict:
        """The first JSON value in ``text`` that fits the schema, else the first one's errors."""
        first: JsonVerdict | None = None
        try:
            for value, raw in _candidates(text):
                errors = self.errors(value)
                if not errors:
                    return JsonVerdict(True, value, (), raw)
                first = first or JsonVerdict(False, value, tuple(errors), raw)
        except ValueError as exc:
            return JsonVerdict(False, None, (str(exc),))
        return first or JsonVerdict(False, None, ("no JSON value found in the output",))


def _validator(schema: Mapping[str, Any] | JsonSchemaValidator) -> JsonSchemaValidator:
    return schema if isinstance(schema, JsonSchemaValidator) else JsonSchemaValidator(schema)


def validate_json_output(text: str, schema: Mapping[str, Any] | JsonSchemaValidator) -> JsonVerdict:
    """Extract and validate; pass a ``JsonSchemaValidator`` to skip recompiling the schema."""
    return _validator(schema).check(text)


async def validate_or_repair(
    text: str, schema: Mapping[str, Any] | JsonSchemaValidator, repair: Repair
) -> JsonVerdict:
    """Validate; on failure call ``repair(text, errors)`` once and validate its answer.

    A repair that raises counts as a failed repair: the first verdict comes back with the
    repair's error appended, so the caller still decides with full information.
    """
    validator = _validator(schema)
    first = validator.check(text)
    if first.ok:
        return first
    try:
        fixed = await repair(text, list(first.errors))
    except Exception as exc:
        reason = f"repair failed: {type(exc).__name__}: {exc}"
        return JsonVerdict(False, first.value, (*first.errors, reason), first.json_text)
    second = validator.check(fixed)
    return JsonVerdict(second.ok, second.value, second.errors, second.json_text, repaired=True)

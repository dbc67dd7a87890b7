"""Structured output in the gateway: answers checked against the request's JSON schema.

An OpenAI request with ``response_format: json_schema`` gets its answer validated; an
invalid one gets one repair attempt (the model sees its answer and the errors, both
calls' usage is billed). The outcome is one finding on the call record: passed, repaired, or
flagged, with the schema rules that failed as reasons (``type:/properties/age/type``: the
keyword and where in the app's schema, never the model's value).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Literal

import jsonschema
from referencing.exceptions import Unresolvable

from ..call import Call
from ..engine import Engine, OnEnd, Reply
from ..errors import AIUnavailable, BudgetExceeded
from ..findings import Finding, rule_id
from .validation.jsonout import NO_REMOTE_REFS, JsonVerdict, validate_json_output

# the structured-output check's revision, carried by every JSON-schema finding
VERSION = "json-schema-2026.12.04"
_SEGMENT = re.compile(r"[^A-Za-z0-9_.\-]")
_MAX_REASONS = 5


def schema_reasons(verdict: JsonVerdict, schema: Mapping[str, Any]) -> tuple[str, ...]:
    """Which schema rules the answer broke, as ``keyword:/schema/path`` (no answer text)."""
    if verdict.ok:
        return ()
    if verdict.json_text is None:  # nothing parsed: the message names the failure, not the text
        return tuple(rule_id(e) for e in verdict.errors[:1])
    try:
        validator = jsonschema.validators.validator_for(schema)(schema, registry=NO_REMOTE_REFS)
        errors = list(validator.iter_errors(verdict.value))
    except (jsonschema.exceptions.SchemaError, TypeError, ValueError, RecursionError):
        return ("schema_unusable",)
    out: dict[str, None] = {}
    for e in errors:
        path = "/".join(_SEGMENT.sub("_", str(p))[:40] for p in e.schema_path)
        out[f"{_SEGMENT.sub('_', str(e.validator))}:/{path}"[:96]] = None
        if len(out) >= _MAX_REASONS:
            break
    return tuple(out) or ("invalid",)


def _verdict(text: str, schema: Mapping[str, Any]) -> JsonVerdict | None:
    """The answer checked, or None when the client's schema cannot check anything.

    Admission (``schema.json_schema_problem``) refuses the schemas it can see are unusable; a
    ``$ref`` that dangles or loops only inside some value is found here, after the answer.
    """
    try:
        return validate_json_output(text, schema)
    except (jsonschema.exceptions.SchemaError, Unresolvable, ValueError, RecursionError):
        return None


def _finding(
    kind: str, action: Literal["passed", "flagged", "repaired"], reasons: tuple[str, ...]
) -> Finding:
    return Finding("json_schema", kind, action, "response", VERSION, reasons=reasons)


async def check_structured_output(
    engine: Engine,
    call: Call,
    reply: Reply,
    passthrough: dict[str, str],
    on_end: OnEnd,
    *,
    repair: bool,
) -> Reply:
    """Validate a whole answer against its schema; repair once when asked to."""
    schema = call.dialect.response_schema(call.body)
    if schema is None or reply.body is None:
        return reply
    text = call.dialect.answer_text(reply.body)
    verdict = _verdict(text, schema)
    if verdict is None:  # the answer is paid for: it goes out, flagged, never as a 500
        call.add_finding(_finding("output_unchecked", "flagged", ("schema_unusable",)))
        return reply
    if verdict.ok:
        call.add_finding(_finding("output_valid", "passed", ()))
        return reply
    reasons = schema_reasons(verdict, schema)
    if not repair:
        call.add_finding(_finding("output_invalid", "flagged", reasons))
        return reply
    first = replace(call.usage)
    messages: list[Any] = [
        *call.body["messages"],
        {"role": "assistant", "content": text},
        {
            "role": "user",
            "content": "Your answer did not match the required JSON schema: "
            + "; ".join(verdict.errors[:5])
            + ". Reply with the corrected JSON only.",
        },
    ]
    original_body, original_text = call.body, call.output_text
    call.body = {**call.body, "messages": messages}
    call.output_text = []
    call.repairing = True  # the repair is an attempt of its own: reserved, priced, settled
    try:
        repaired = await engine.run(call, passthrough, on_end)
    except (BudgetExceeded, AIUnavailable) as exc:
        # the first answer was paid for: the caller gets it, flagged, not a refusal
        call.body, call.output_text = original_body, original_text
        skipped = "budget" if isinstance(exc, BudgetExceeded) else "unavailable"
        call.add_finding(
            _finding("output_invalid", "flagged", (*reasons, f"repair_skipped:{skipped}"))
        )
        return reply
    except BaseException:
        call.add_finding(_finding("output_invalid", "flagged", (*reasons, "repair_failed")))
        raise
    finally:
        call.repairing = False
    u = call.usage
    u.input_tokens += first.input_tokens
    u.output_tokens += first.output_tokens
    u.cache_read_tokens += first.cache_read_tokens
    u.cache_write_tokens += first.cache_write_tokens
    second = _verdict(call.dialect.answer_text(repaired.body), schema) if repaired.body else None
    if second is not None and second.ok:
        call.add_finding(_finding("output_invalid", "repaired", reasons))
    else:
        after = schema_reasons(second, schema) if second is not None else ("no_answer",)
        call.add_finding(_finding("output_invalid", "flagged", (*after, "repair_failed")))
    return repaired

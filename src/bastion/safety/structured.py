"""Structured output in the gateway: answers checked against the request's JSON schema.

An OpenAI request with ``response_format: json_schema`` gets its answer validated; an
invalid one gets one repair attempt (the model sees its answer and the errors, both
calls' usage is billed), and what still fails is flagged on the call record.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..call import Call
from ..engine import Engine, OnEnd, Reply
from ..errors import AIUnavailable, BudgetExceeded
from ..providers.base import Format
from .setup import answer_text, json_schema_of
from .validation.jsonout import validate_json_output


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
    schema = json_schema_of(call.body) if call.client_format is Format.OPENAI else None
    if schema is None or reply.body is None:
        return reply
    text = answer_text(reply.body)
    verdict = validate_json_output(text, schema)
    if verdict.ok:
        call.flags["output_valid"] = True
        return reply
    call.flags["output_invalid"] = list(verdict.errors[:5])
    if not repair:
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
        call.flags["repair_skipped"] = (
            "budget" if isinstance(exc, BudgetExceeded) else "unavailable"
        )
        return reply
    finally:
        call.repairing = False
    u = call.usage
    u.input_tokens += first.input_tokens
    u.output_tokens += first.output_tokens
    u.cache_read_tokens += first.cache_read_tokens
    u.cache_write_tokens += first.cache_write_tokens
    if repaired.body is not None and validate_json_output(answer_text(repaired.body), schema).ok:
        call.flags["output_repaired"] = True
        del call.flags["output_invalid"]
    return repaired

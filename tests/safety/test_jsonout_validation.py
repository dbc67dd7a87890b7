"""Structured model output is schema-checked, extracted from prose, and repaired at most once."""

from __future__ import annotations

from typing import Any

import pytest

from bastion.safety.validation import (
    JsonSchemaValidator,
    extract_json,
    validate_json_output,
    validate_or_repair,
)

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "action": {"enum": ["refund", "escalate", "close"]},
        "amount": {"type": "number", "minimum": 0, "maximum": 500},
        "email": {"type": "string", "format": "email"},
    },
    "required": ["action", "amount"],
    "additionalProperties": False,
}


def test_valid_output_passes_with_its_value() -> None:
    verdict = validate_json_output('{"action": "refund", "amount": 12.5}', SCHEMA)
    assert verdict.ok
    assert verdict.value == {"action": "refund", "amount": 12.5}


def test_json_is_extracted_from_a_fenced_block_in_prose() -> None:
    text = 'Sure! Here is the decision:\n```json\n{"action": "close", "amount": 0}\n```\nThanks.'
    verdict = validate_json_output(text, SCHEMA)
    assert verdict.ok
    assert verdict.json_text == '{"action": "close", "amount": 0}'


def test_json_embedded_in_prose_is_found_after_other_brackets() -> None:
    text = 'Per policy [1], I decide {"action": "escalate", "amount": 3} as shown.'
    assert validate_json_output(text, SCHEMA).value == {"action": "escalate", "amount": 3}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('{"action": "delete_account", "amount": 1}', "$.action"),
        ('{"action": "refund", "amount": 10000}', "$.amount"),
        ('{"action": "refund"}', "'amount' is a required property"),
        ('{"action": "refund", "amount": 1, "admin": true}', "Additional properties"),
        ('{"action": "refund", "amount": 1, "email": "not-an-email"}', "$.email"),
        ("no json here", "no JSON value"),
    ],
)
def test_invalid_output_is_refused_with_located_errors(text: str, fragment: str) -> None:
    verdict = validate_json_output(text, SCHEMA)
    assert not verdict.ok
    assert any(fragment in e for e in verdict.errors), verdict.errors


@pytest.mark.parametrize(
    "text",
    [
        '{"action": "close", "amount": 0, "action": "refund"}',
        '{"action": "refund", "amount": NaN}',
        '{"action": "refund", "amount": Infinity}',
    ],
)
def test_ambiguous_json_is_refused_rather_than_guessed(text: str) -> None:
    verdict = validate_json_output(text, SCHEMA)
    assert not verdict.ok
    with pytest.raises(ValueError):
        extract_json(text)


def test_bad_schema_is_a_startup_error() -> None:
    with pytest.raises(ValueError, match="invalid JSON schema"):
        JsonSchemaValidator({"type": "nonsense"})


async def test_repair_is_called_once_with_errors_and_its_answer_is_validated() -> None:
    seen: list[tuple[str, list[str]]] = []

    async def repair(text: str, errors: list[str]) -> str:
        seen.append((text, errors))
        return '{"action": "refund", "amount": 20}'

    verdict = await validate_or_repair('{"action": "refund", "amount": -1}', SCHEMA, repair)
    assert verdict.ok and verdict.repaired
    assert verdict.value == {"action": "refund", "amount": 20}
    assert len(seen) == 1
    assert any("$.amount" in e for e in seen[0][1])


async def test_repair_is_not_called_for_valid_output() -> None:
    async def repair(text: str, errors: list[str]) -> str:
        raise AssertionError("must not be called")

    verdict = await validate_or_repair('{"action": "close", "amount": 0}', SCHEMA, repair)
    assert verdict.ok and not verdict.repaired


async def test_a_failed_repair_is_not_retried_and_stays_invalid() -> None:
    calls = 0

    async def repair(text: str, errors: list[str]) -> str:
        nonlocal calls
        calls += 1
        return '{"action": "nuke", "amount": 1}'

    verdict = await validate_or_repair("not json", SCHEMA, repair)
    assert not verdict.ok and verdict.repaired
    assert calls == 1


async def test_a_repair_that_raises_reports_both_failures() -> None:
    async def repair(text: str, errors: list[str]) -> str:
        raise RuntimeError("model unavailable")

    verdict = await validate_or_repair("{}", SCHEMA, repair)
    assert not verdict.ok and not verdict.repaired
    assert any("repair failed" in e for e in verdict.errors)
    assert any("required property" in e for e in verdict.errors)

"""A client's JSON schema may ask the simulator for any size: its example stays bounded, so a
hostile ``minItems`` / ``minLength`` cannot freeze the in-process simulator (the default on a
fresh machine) while it builds the value on the event loop."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.providers.sim.schema_example import example_for


def _size(v: Any) -> int:
    if isinstance(v, list):
        return 1 + sum(_size(x) for x in v)
    if isinstance(v, dict):
        return 1 + sum(_size(x) for x in v.values())
    if isinstance(v, str):
        return 1 + len(v) // 64
    return 1


def _nested(levels: int, items: int, length: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "minLength": length}
    for _ in range(levels):
        schema = {"type": "array", "items": schema, "minItems": items}
    return schema


@settings(max_examples=60, deadline=None)
@given(
    levels=st.integers(0, 12),
    items=st.integers(0, 10**9),
    length=st.integers(0, 10**9),
)
def test_an_example_stays_small_whatever_the_schema_asks(
    levels: int, items: int, length: int
) -> None:
    value = example_for(_nested(levels, items, length))
    assert _size(value) <= 8 * 8 * 80  # two wide levels, one item below, strings ≤ 4 KB


def test_a_modest_schema_is_still_satisfied() -> None:
    value = example_for(_nested(2, 3, 5))
    assert len(value) == 3 and all(len(v) == 3 for v in value)
    assert all(len(s) >= 5 for v in value for s in v)

"""Tool ids sent to Anthropic: ids it refuses are mapped so that distinct ids stay distinct and a
result always answers its own call (two ids differing only in refused characters used to
collide, ``call/1`` and ``call?1`` both becoming ``call_1``)."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from bastion.providers.translate._common import anthropic_tool_id

ACCEPTED = re.compile(r"[A-Za-z0-9_-]+")
ids = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=30)


def test_ids_differing_only_in_refused_characters_stay_distinct() -> None:
    a, b = anthropic_tool_id("call/1", "x"), anthropic_tool_id("call?1", "x")
    assert a != b and ACCEPTED.fullmatch(a) and ACCEPTED.fullmatch(b)
    assert anthropic_tool_id("call_1", "x") == "call_1"  # an accepted id goes as is
    assert anthropic_tool_id("", "toolu_missing") == "toolu_missing"


@given(st.lists(ids, min_size=2, max_size=6, unique=True))
def test_the_map_is_injective_stable_and_accepted(raw: list[str]) -> None:
    mapped = [anthropic_tool_id(r, "fallback") for r in raw]
    assert len(set(mapped)) == len(raw)  # distinct calls keep distinct ids
    assert mapped == [anthropic_tool_id(r, "fallback") for r in raw]  # call and result agree
    assert all(ACCEPTED.fullmatch(m) for m in mapped)

"""The prompt registry: immutable versions and movable labels, on both backends."""

from __future__ import annotations

import pytest

from bastion.errors import Conflict, NotFound
from bastion.store import PromptVersion, RecordStore


def _p(version: int, text: str = "You are the drafter.") -> PromptVersion:
    return PromptVersion(name="drafter", version=version, instructions=text, created_by="t")


async def test_versions_are_immutable(store: RecordStore) -> None:
    assert await store.create_prompt_version(_p(1)) is True
    assert await store.create_prompt_version(_p(1)) is False  # same text: idempotent
    with pytest.raises(Conflict):
        await store.create_prompt_version(_p(1, "Different instructions"))
    got = await store.get_prompt_version("drafter", 1)
    assert got is not None and got.instructions == "You are the drafter." and got.created_by == "t"
    assert await store.get_prompt_version("drafter", 2) is None


async def test_labels_point_at_existing_versions_and_move(store: RecordStore) -> None:
    await store.create_prompt_version(_p(1))
    await store.create_prompt_version(_p(2, "v2 instructions"))
    assert await store.latest_prompt_version("drafter") == 2
    assert await store.latest_prompt_version("nope") is None
    await store.set_prompt_label("drafter", "production", 1)
    assert await store.prompt_label("drafter", "production") == 1
    await store.set_prompt_label("drafter", "production", 2)
    assert await store.prompt_label("drafter", "production") == 2
    with pytest.raises(NotFound):
        await store.set_prompt_label("drafter", "production", 9)
    assert [(p.name, p.version) for p in await store.list_prompts()] == [
        ("drafter", 1),
        ("drafter", 2),
    ]

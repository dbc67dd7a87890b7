"""The model objects of /v1/models and /v1/models/{id} validate strictly against each official
SDK's own type (a strict client, or a typed one that calls ``model_validate``, would reject a
missing required field that the SDKs' lenient parsing lets through)."""

from __future__ import annotations

import anthropic.types
import openai.types
from hypothesis import given
from hypothesis import strategies as st

from bastion.dialects import dialect_for
from bastion.providers.base import Format

names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=40)


@given(st.lists(names, min_size=0, max_size=5, unique=True))
def test_anthropic_model_objects_are_valid_model_info(models: list[str]) -> None:
    d = dialect_for(Format.ANTHROPIC)
    for n in models:
        info = anthropic.types.ModelInfo.model_validate(d.model_object(n), strict=False)
        assert info.id == n and info.lifecycle == "active"
    listed = d.model_list(models)
    assert [anthropic.types.ModelInfo.model_validate(m).id for m in listed["data"]] == models
    assert listed["first_id"] == (models[0] if models else None)


@given(st.lists(names, min_size=0, max_size=5, unique=True))
def test_openai_model_objects_are_valid_models(models: list[str]) -> None:
    d = dialect_for(Format.OPENAI)
    for n in models:
        assert openai.types.Model.model_validate(d.model_object(n)).id == n
    listed = d.model_list(models)
    assert [openai.types.Model.model_validate(m).id for m in listed["data"]] == models

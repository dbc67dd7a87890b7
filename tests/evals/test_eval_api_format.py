"""An eval case's and a red-team target's ``api`` is the one ``Format`` spelling, and only a
format an app speaks (one with a dialect): the suite YAML values stay ``anthropic``/``openai``,
cached answers keep their keys, and a provider-only format is refused up front."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.dialects import NoDialect, dialect_for
from bastion.errors import ConfigError
from bastion.evals.cache import cache_key
from bastion.evals.redteam.wire import Wire
from bastion.evals.render import render_case
from bastion.evals.suite import parse_suite
from bastion.providers.base import Format

CASE = {"id": "c1", "user_content": "hi", "assert": [{"contains": "x"}]}


def test_suite_api_values_read_as_formats_and_render_each_shape() -> None:
    suite = parse_suite(
        {
            "defaults": {"system": "Be brief."},
            "cases": [CASE, {**CASE, "id": "c2", "api": "openai"}],
        }
    )
    first, second = suite.cases
    assert first.api is Format.ANTHROPIC and second.api is Format.OPENAI
    a = render_case(suite, first, model="m", simulated=False).body
    o = render_case(suite, second, model="m", simulated=False).body
    # the system text is top-level in Messages and the first message in Chat Completions
    assert isinstance(a["system"], str) and a["messages"][-1]["role"] == "user"
    assert "system" not in o and o["messages"][0] == {"role": "system", "content": a["system"]}
    assert o["messages"][1:] == a["messages"]


@pytest.mark.parametrize("api", ["gemini", "bedrock", "Anthropic", "claude"])
def test_a_format_no_app_speaks_is_refused_naming_the_key(api: str) -> None:
    with pytest.raises(ConfigError, match="api"):
        parse_suite({"cases": [{**CASE, "api": api}]})


def test_the_red_team_wire_takes_only_client_formats() -> None:
    assert (
        Wire("openai").format is Format.OPENAI and Wire(Format.ANTHROPIC).format is Format.ANTHROPIC
    )
    with pytest.raises(NoDialect):
        Wire("gemini")


@given(body=st.dictionaries(st.text(max_size=5), st.integers(-(2**31), 2**31)), fmt=st.sampled_from(list(Format)))
def test_cache_keys_are_the_same_for_a_format_and_its_yaml_value(
    body: dict[str, int], fmt: Format
) -> None:
    # answers cached before the spelling changed keep their keys
    assert cache_key(fmt, body, "m", "0") == cache_key(fmt.value, body, "m", "0")


def test_every_client_format_is_accepted() -> None:
    for fmt in Format:
        try:
            dialect_for(fmt)
        except NoDialect:
            continue
        assert parse_suite({"cases": [{**CASE, "api": fmt.value}]}).cases[0].api is fmt

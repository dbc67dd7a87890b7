"""Eval tooling: a response cache keyed by request, model and seed; the HTML report; custom scorers; multi-turn cases."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.conftest import sim_models, write_config

from bastion.errors import ConfigError
from bastion.evals import (
    Assertion,
    CaseResult,
    EpochResult,
    RunResult,
    Score,
    gate,
    open_gateway,
    parse_suite,
    run_suite,
)
from bastion.evals.cache import ResponseCache, cache_key
from bastion.evals.gate import bless
from bastion.evals.render import render_case
from bastion.evals.report_html import render_html
from bastion.evals.scorers import Output, score

FACTS = ["refunds take 14 days", "a receipt is required"]


def _suite(profiles: dict[str, Any] | None = None, **over: Any) -> Any:
    case = {
        "id": "refunds",
        "system": "Answer briefly. Cite documents in square brackets.",
        "messages": [{"role": "user", "content": "What is the refund policy?"}],
        "facts": FACTS,
        "assert": [{"contains": "14 days"}],
        **over,
    }
    return parse_suite(
        {
            "name": "tools",
            "defaults": {"model": "claude-haiku-5-5", "max_tokens": 120},
            "sim": {"profiles": profiles or {}},
            "cases": [case],
        }
    )


async def _run(tmp: Path, suite: Any, **kw: Any) -> tuple[RunResult, int]:
    async with open_gateway(write_config(tmp), suite) as gw:
        sim = gw.simulator
        assert sim is not None
        before = sim.request_count()
        run = await run_suite(suite, gw, **kw)
        return run, sim.request_count() - before


async def test_a_cached_rerun_makes_no_calls_and_a_new_seed_or_model_does(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "cache")
    first, calls = await _run(tmp_path, _suite(), epochs=3, seed=5, cache=cache)
    assert calls == 3 and cache.misses == 3 and cache.hits == 0
    again, calls = await _run(tmp_path, _suite(), epochs=3, seed=5, cache=cache)
    assert calls == 0 and cache.hits == 3
    assert [e.output for e in again.cases[0].epochs] == [e.output for e in first.cases[0].epochs]
    assert any("3 hit(s)" in n for n in again.notes)
    _, calls = await _run(tmp_path, _suite(), epochs=3, seed=6, cache=cache)
    assert calls == 3
    _, calls = await _run(tmp_path, _suite(), epochs=3, seed=5, cache=cache, model="gpt-4.1")
    assert calls == 3
    # a changed gateway config (routes, guards) can change the answer: no replay across it
    extra = sim_models({"other": {"deployments": [{"provider": "sim", "model": "gpt-4.1"}]}})
    async with open_gateway(write_config(tmp_path, models=extra), _suite()) as gw:
        assert gw.simulator is not None
        await run_suite(_suite(), gw, epochs=3, seed=5, cache=cache)
        assert gw.simulator.request_count() == 3


async def test_a_failed_call_is_never_cached(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "cache")
    suite = _suite(model="no-such-model")
    run, _ = await _run(tmp_path, suite, cache=cache)
    assert run.cases[0].epochs[0].error
    assert not list((tmp_path / "cache").rglob("*.json"))


@settings(max_examples=60, deadline=None)
@given(
    body=st.dictionaries(st.text(min_size=1, max_size=5), st.integers(-(2**53), 2**53), max_size=5),
    seed=st.text(max_size=6),
)
def test_property_cache_keys_ignore_key_order_and_separate_seed_and_model(
    body: dict[str, int], seed: str
) -> None:
    reordered = dict(reversed(list(body.items())))
    assert cache_key("openai", body, "m", seed) == cache_key("openai", reordered, "m", seed)
    assert cache_key("openai", body, "m", seed) != cache_key("openai", body, "m2", seed)
    assert cache_key("openai", body, "m", seed) != cache_key("openai", body, "m", seed + "x")


async def test_the_html_report_is_self_contained_escaped_and_diffs_the_baseline(
    tmp_path: Path,
) -> None:
    base, _ = await _run(tmp_path, _suite(), epochs=2, seed=1)
    bless(base, tmp_path / "b")
    hostile = "<script>alert(1)</script> [[sim:reply=<img src=x onerror=alert(1)>]]"
    cur, _ = await _run(
        tmp_path,
        _suite(messages=[{"role": "user", "content": hostile}], sim_reply="<b>14 days</b> now"),
        epochs=2,
        seed=1,
    )
    verdict = gate(cur, root=tmp_path / "b").to_dict()
    page = render_html(cur, baseline=base, gate=verdict)
    assert page.startswith("<!doctype html>")
    assert "<script" not in page and not re.search(r"(?:src|href)=\"?https?:", page)
    assert "&lt;b&gt;14 days&lt;/b&gt; now" in page
    assert 'class="del"' in page and 'class="add"' in page  # the answer changed: a line diff
    assert "vs baseline" in page and "gate:" in page


def _score(kind: dict[str, Any], text: str, **out: Any) -> Any:
    suite = parse_suite(
        {"name": "t", "cases": [{"id": "c", "user_content": "x", "assert": [kind]}]}
    )
    req = render_case(suite, suite.cases[0], model="m", simulated=False)
    return score(Assertion.model_validate(kind), Output(text=text, **out), req)


def test_length_and_citation_assertions() -> None:
    assert _score({"max_length": 5}, "12345").passed
    assert not _score({"max_length": 5}, "123456").passed
    assert _score({"max_words": 3}, "one two three").passed
    assert "4 words > 3" in _score({"max_words": 3}, "one two three four").detail
    assert _score({"citations": True}, "Refunds take 14 days [kb-1].").passed
    assert not _score({"citations": True}, "Refunds take 14 days.").passed
    assert _score({"citations": False}, "Refunds take 14 days.").passed


def test_python_entry_point_scorers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_scorers.py").write_text(
        "def polite(text, ctx):\n    return 'please' in text.lower()\n"
        "def share(text, ctx):\n    return len(text) / 100\n"
        "def why(text, ctx):\n    return (ctx['stop_reason'] == 'end_turn', 'stop ' + str(ctx['stop_reason']))\n"
        "def broken(text, ctx):\n    raise RuntimeError('boom')\n"
        "def odd(text, ctx):\n    return 'yes'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _score({"python": "my_scorers:polite"}, "Please wait").passed
    assert not _score({"python": "my_scorers:polite"}, "Wait").passed
    s = _score({"python": "my_scorers:share"}, "x" * 70)
    assert s.passed and s.value == pytest.approx(0.7)
    s = _score({"python": "my_scorers:why"}, "x", stop_reason="max_tokens")
    assert not s.passed and s.detail == "stop max_tokens"
    assert "scorer error: RuntimeError: boom" in _score({"python": "my_scorers:broken"}, "x").detail
    assert "not bool or 0..1" in _score({"python": "my_scorers:odd"}, "x").detail
    assert "cannot import" in _score({"python": "nope_module:f"}, "x").detail
    assert "has no 'missing'" in _score({"python": "my_scorers:missing"}, "x").detail
    with pytest.raises(ConfigError, match="python"):
        parse_suite(
            {"cases": [{"id": "c", "user_content": "x", "assert": [{"python": "not an entry"}]}]}
        )


async def test_a_multi_turn_case_sends_the_whole_conversation_and_scores_the_last_answer(
    tmp_path: Path,
) -> None:
    perfect = {"claude-haiku-5-5": {"fact_recall": 1.0, "instruction_follow": 1.0}}
    suite = _suite(perfect, turns=["And for gift cards?", "Thanks, summarise please."])
    async with open_gateway(write_config(tmp_path), suite) as gw:
        sim = gw.simulator
        assert sim is not None
        run = await run_suite(suite, gw, seed=3)
        sent = sim.requests[-3:]
    assert len(sent) == 3
    roles = [[m["role"] for m in r.body["messages"]] for r in sent]
    assert roles == [
        ["user"],
        ["user", "assistant", "user"],
        ["user", "assistant", "user", "assistant", "user"],
    ]
    last = sent[-1].body["messages"]
    assert last[-1]["content"].endswith("Thanks, summarise please.")
    assert "[[sim:facts=" in last[-1]["content"]  # the eval directive rides on the final turn only
    assert "[[sim:facts=" not in sent[0].body["messages"][0]["content"]
    assert last[1]["content"] == sent[1].body["messages"][1]["content"]
    assert run.cases[0].passed and "14 days" in run.cases[0].epochs[0].output
    with pytest.raises(ConfigError, match="turn"):
        _suite(turns=[" "])


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=80), case_id=st.from_regex(r"[A-Za-z0-9_.:\-]{1,20}", fullmatch=True))
def test_property_no_answer_text_reaches_the_report_unescaped(text: str, case_id: str) -> None:
    hostile = f"<i>{text}</i><script>x</script>"
    ep = EpochResult(0, False, 0.0, [Score("s", "contains", False, 0.0, hostile)], output=hostile)
    run = RunResult("s", "m", "v", 1, [CaseResult(case_id, True, False, [ep], ["s"])])
    page = render_html(run, baseline=run)
    assert "<script" not in page and "<i>" not in page

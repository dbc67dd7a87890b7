"""The feature judge grades what an answer checkably contains; a truncated answer never scores high."""

from __future__ import annotations

import asyncio
import statistics
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.conftest import write_config
from typer.testing import CliRunner

from bastion.evals import JudgeRequest, open_gateway, parse_suite, run_suite
from bastion.evals.cli import eval_app
from bastion.evals.judge import TRUNCATED_CAP, FeatureJudge
from bastion.evals.suite import RubricSpec


def _req(
    text: str,
    *,
    facts: tuple[str, ...] = ("refunds take 14 days", "receipt required"),
    stop: str | None = "end_turn",
    epoch: int = 0,
    seed: str = "0",
    **rubric: Any,
) -> JudgeRequest:
    spec = RubricSpec.model_validate({"rubric": "states the policy", **rubric})
    return JudgeRequest("c", epoch, spec, None, "q", text, stop_reason=stop, facts=facts, seed=seed)


def _grade(judge: FeatureJudge, req: JudgeRequest) -> float:
    v = asyncio.run(judge.grade(req)).score
    assert v is not None
    return v


def test_the_score_is_the_share_of_checkable_features_met() -> None:
    j = FeatureJudge()
    full = "Refunds take 14 days [kb-1]. Receipt required [kb-1]."
    assert _grade(j, _req(full, citations=True)) == 1.0
    assert _grade(j, _req("Refunds take 14 days [kb-1].", citations=True)) == 0.75
    assert _grade(j, _req("Refunds take 14 days. Receipt required.", citations=True)) == 0.5
    assert _grade(j, _req(full, max_words=4)) == 0.5
    assert _grade(j, _req(full, min_words=4)) == 1.0
    # rubric keywords, when given, are the facts graded (the case's facts otherwise)
    assert _grade(j, _req(full, keywords=["14 days", "30 days"])) == 0.5


def test_a_truncated_answer_is_capped_low_even_when_it_has_every_fact() -> None:
    j = FeatureJudge()
    text = "Refunds take 14 days. Receipt required. And"
    assert _grade(j, _req(text)) == 1.0
    for stop in ("max_tokens", "length"):
        verdict = asyncio.run(j.grade(_req(text, stop=stop)))
        assert verdict.score == TRUNCATED_CAP and "truncated" in verdict.reply


async def test_a_scripted_judge_cannot_score_a_truncated_answer_0_9(tmp_path: Path) -> None:
    """The issue's case: the judge's reply says 0.9 for an answer cut at max_tokens."""
    rubric = {"rubric": "complete answer", "threshold": 0.7, "sim_reply": "SCORE: 0.9"}
    suite = parse_suite(
        {
            "name": "trunc",
            "judge": "sim-judge",
            "defaults": {"model": "claude-sonnet-5"},
            "cases": [
                {
                    "id": "cut",
                    "messages": [{"role": "user", "content": "Explain the refund policy."}],
                    "sim_reply": "Refunds take 14 days and need the original receipt always.",
                    "max_tokens": 3,
                    "assert": [{"rubric": rubric}],
                },
                {
                    "id": "whole",
                    "messages": [{"role": "user", "content": "Explain the refund policy."}],
                    "sim_reply": "Refunds take 14 days.",
                    "max_tokens": 50,
                    "assert": [{"rubric": rubric}],
                },
            ],
        }
    )
    async with open_gateway(write_config(tmp_path), suite) as gw:
        run = await run_suite(suite, gw)
    cut, whole = run.cases
    assert cut.epochs[0].output.count(" ") <= 3
    assert cut.mean_score == TRUNCATED_CAP and not cut.passed
    assert "truncated" in cut.epochs[0].scores[0].detail
    assert whole.mean_score == 0.9 and whole.passed


def test_noise_is_seeded_reproducible_and_of_the_configured_size() -> None:
    j = FeatureJudge(noise=0.05)
    text = "Refunds take 14 days. Receipt required."
    draws = [_grade(j, _req(text, max_words=100, epoch=e, min_words=30)) for e in range(400)]
    again = [_grade(j, _req(text, max_words=100, epoch=e, min_words=30)) for e in range(400)]
    assert draws == again
    assert abs(statistics.fmean(draws) - 2 / 3) < 0.01
    assert 0.04 < statistics.stdev(draws) < 0.06
    other_seed = [
        _grade(j, _req(text, max_words=100, epoch=e, min_words=30, seed="9")) for e in range(5)
    ]
    assert other_seed != draws[:5]
    assert len({_grade(FeatureJudge(), _req(text, epoch=e)) for e in range(20)}) == 1


@settings(max_examples=80, deadline=None)
@given(
    present=st.lists(st.booleans(), min_size=1, max_size=5),
    cite=st.booleans(),
    truncated=st.booleans(),
    noise=st.floats(0.0, 0.3),
    epoch=st.integers(0, 1000),
)
def test_property_scores_stay_in_range_truncation_caps_and_facts_only_help(
    present: list[bool], cite: bool, truncated: bool, noise: float, epoch: int
) -> None:
    facts = tuple(f"fact number {i}" for i in range(len(present)))
    text = " ".join(f"Fact number {i}." for i, p in enumerate(present) if p)
    stop = "max_tokens" if truncated else "end_turn"
    v = _grade(FeatureJudge(noise=noise), _req(text, facts=facts, stop=stop, epoch=epoch))
    assert 0.0 <= v <= 1.0
    if truncated:
        assert v <= TRUNCATED_CAP
    exact = FeatureJudge()
    before = _grade(exact, _req(text, facts=facts, citations=cite))
    more = text + " " + " ".join(f"Fact number {i}." for i in range(len(present)))
    assert _grade(exact, _req(more, facts=facts, citations=cite)) >= before


def test_the_run_table_says_a_judge_model_is_not_configured(tmp_path: Path) -> None:
    suite = tmp_path / "nojudge.yaml"
    suite.write_text(
        yaml.safe_dump(
            {
                "name": "nojudge",
                "defaults": {"model": "claude-sonnet-5", "max_tokens": 50},
                "cases": [
                    {
                        "id": "graded",
                        "messages": [{"role": "user", "content": "hi"}],
                        "sim_reply": "Hello.",
                        "assert": [{"rubric": {"rubric": "is polite"}, "name": "polite"}],
                    }
                ],
            }
        )
    )
    res = CliRunner().invoke(
        eval_app, ["run", str(suite), "-c", str(write_config(tmp_path))], env={"COLUMNS": "240"}
    )
    assert res.exit_code == 1
    assert "polite: score 0.000 (no score: no judge model configured)" in res.output

"""The CI gate: a broken case is caught, judge noise does not flip the verdict, a real drop over 5 epochs is."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from tests.conftest import write_config

from bastion.evals import (
    JudgeRequest,
    JudgeVerdict,
    RunResult,
    bless,
    compare,
    gate,
    open_gateway,
    parse_suite,
    run_suite,
)

EPOCHS = 5


class NoisyJudge:
    """A judge whose score is ``base`` plus uniform noise of +-``noise``, reproducible per seed."""

    def __init__(self, base: float, seed: int, noise: float = 0.1) -> None:
        self.base, self.seed, self.noise = base, seed, noise

    async def grade(self, request: JudgeRequest) -> JudgeVerdict:
        rng = random.Random(f"{self.seed}:{request.case_id}:{request.epoch}")
        value = self.base + rng.uniform(-self.noise, self.noise)
        return JudgeVerdict(min(1.0, max(0.0, value)), f"SCORE: {value:.3f}", "noisy")


def _suite(reply: str = "Refunds take 30 days.", threshold: float = 0.5) -> Any:
    case = {
        "messages": [{"role": "user", "content": "How long do refunds take?"}],
        "sim_reply": reply,
        "assert": [
            {"contains": "30 days"},
            {"rubric": {"rubric": "States the refund window.", "threshold": threshold}},
        ],
    }
    return parse_suite(
        {
            "name": "gatecheck",
            "prompt_version": "v1",
            "defaults": {"model": "claude-sonnet-5", "max_tokens": 64},
            "cases": [{"id": f"refund-{i}", **case} for i in range(3)],
        }
    )


async def _run(tmp: Path, suite: Any, judge: Any, epochs: int = EPOCHS) -> RunResult:
    async with open_gateway(write_config(tmp)) as gw:
        return await run_suite(suite, gw, epochs=epochs, judge=judge, concurrency=16)


async def test_a_deliberately_broken_case_is_caught(tmp_path: Path) -> None:
    root = tmp_path / "baselines"
    base = await _run(tmp_path, _suite(), NoisyJudge(0.9, 1, noise=0.0), epochs=1)
    assert base.passed == 3
    bless(base, root)
    broken = await _run(tmp_path, _suite(reply="Refunds take a while."), NoisyJudge(0.9, 1, 0.0), 1)
    report = gate(broken, root=root)
    assert not report.ok
    assert {r.kind for r in report.regressions} == {"pass_to_fail"}
    assert {r.case_id for r in report.regressions} == {"refund-0", "refund-1", "refund-2"}
    assert "contains:30 days" in report.regressions[0].detail
    same = await _run(tmp_path, _suite(), NoisyJudge(0.9, 2, noise=0.0), epochs=1)
    assert gate(same, root=root).ok


async def test_judge_noise_of_a_tenth_does_not_flip_the_verdict(tmp_path: Path) -> None:
    naive_flips = 0
    for seed in range(12):
        base = await _run(tmp_path, _suite(), NoisyJudge(0.8, seed))
        cur = await _run(tmp_path, _suite(), NoisyJudge(0.8, 1000 + seed))
        report = compare(base, cur, margin=0.05, alpha=0.05)
        assert report.ok, (seed, report.regressions)
        # a margin-only rule (no paired test) would have blocked this merge
        naive_flips += any(
            c.mean_score - b.mean_score < -0.05 for b, c in zip(base.cases, cur.cases, strict=True)
        )
    assert naive_flips >= 1


async def test_a_real_score_drop_over_five_epochs_is_caught(tmp_path: Path) -> None:
    base = await _run(tmp_path, _suite(threshold=0.4), NoisyJudge(0.8, 3))
    cur = await _run(tmp_path, _suite(threshold=0.4), NoisyJudge(0.5, 4))
    assert cur.passed == 3  # still above the rubric threshold: only the drop can catch it
    report = compare(base, cur, margin=0.05, alpha=0.05)
    assert not report.ok
    kinds = {r.kind for r in report.regressions}
    assert "score_drop" in kinds
    drops = [r for r in report.regressions if r.kind == "score_drop"]
    assert {r.case_id for r in drops} == {"refund-0", "refund-1", "refund-2"}
    assert all(r.p_value is not None and r.p_value <= 1 / 32 + 1e-9 for r in drops)


async def test_a_drop_within_the_margin_is_tolerated(tmp_path: Path) -> None:
    base = await _run(tmp_path, _suite(), NoisyJudge(0.8, 5, noise=0.0))
    cur = await _run(tmp_path, _suite(), NoisyJudge(0.77, 6, noise=0.0))
    assert compare(base, cur, margin=0.05).ok


async def test_without_a_baseline_only_must_pass_cases_gate(tmp_path: Path) -> None:
    broken = await _run(tmp_path, _suite(reply="no idea"), NoisyJudge(0.9, 1, 0.0), 1)
    report = gate(broken, root=tmp_path / "none")
    assert not report.ok and report.regressions[0].kind == "must_pass_failed"
    ok = await _run(tmp_path, _suite(), NoisyJudge(0.9, 1, 0.0), 1)
    assert gate(ok, root=tmp_path / "none").ok
    assert not gate(ok, root=tmp_path / "none", require_baseline=True).ok


async def test_a_new_prompt_version_is_compared_with_the_latest_baseline(tmp_path: Path) -> None:
    root = tmp_path / "baselines"
    bless(await _run(tmp_path, _suite(), NoisyJudge(0.9, 1, 0.0), 1), root)
    cur = await _run(tmp_path, _suite(reply="unsure"), NoisyJudge(0.9, 1, 0.0), 1)
    cur.prompt_version = "v2"
    report = gate(cur, root=root)
    assert not report.ok
    assert "compared with the newest" in report.notes[0]

"""Baselines carry their design; the gate refuses designs it cannot compare and corrects unequal epochs."""

from __future__ import annotations

import itertools
import random
import statistics
import xml.etree.ElementTree as ET
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.evals import CaseResult, EpochResult, RunResult, Score, compare, read_result
from bastion.evals.gate import benjamini_hochberg, bless, gate
from bastion.evals.power import estimate_power
from bastion.evals.results import write_junit
from bastion.evals.stats import permutation_test, sign_flip_test, wilcoxon_signed_rank

CASES = 4


def _run(
    scores: list[list[float]],
    *,
    judge: str | None = "j",
    threshold: float = 0.5,
    seed: int = 0,
) -> RunResult:
    """A run of rubric-graded cases: ``scores[case][epoch]``; an epoch passes at ``threshold``."""
    cases = []
    for i, row in enumerate(scores):
        epochs = [
            EpochResult(n, v >= threshold, v, [Score("r", "rubric", v >= threshold, v)])
            for n, v in enumerate(row)
        ]
        passed = statistics.fmean(row) >= threshold
        cases.append(CaseResult(f"c{i}", False, passed, epochs, [] if passed else ["r"]))
    return RunResult("s", "m", "v1", len(scores[0]), cases, judge=judge, seed=seed, simulated=True)


def _noisy(rng: random.Random, mean: float, epochs: int, sd: float = 0.1) -> list[list[float]]:
    return [[min(1.0, max(0.0, rng.gauss(mean, sd))) for _ in range(epochs)] for _ in range(CASES)]


def test_a_run_stores_its_design_and_it_survives_the_baseline_file(tmp_path: Path) -> None:
    run = _run([[0.9] * 5] * CASES, seed=7)
    path = bless(run, tmp_path)
    back = read_result(path)
    assert (
        back.design
        == run.design
        == {
            "epochs": 5,
            "seeds": ["7-0", "7-1", "7-2", "7-3", "7-4"],
            "model": "m",
            "judge": "j",
            "simulated": True,
        }
    )


def test_a_one_epoch_baseline_is_refused_at_a_five_epoch_minimum(tmp_path: Path) -> None:
    base = _run([[0.9]] * CASES)
    cur = _run([[0.9] * 10] * CASES)
    report = compare(base, cur, min_epochs=5)
    assert not report.ok
    assert [r.kind for r in report.regressions] == ["design_mismatch"]
    assert (
        "the baseline ran 1 epoch(s), below the suite's minimum of 5"
        in report.regressions[0].detail
    )
    bless(base, tmp_path)
    assert not gate(cur, root=tmp_path, min_epochs=5).ok
    assert compare(_run([[0.9] * 5] * CASES), cur, min_epochs=5).ok


def test_scores_from_another_judge_are_refused() -> None:
    base = _run([[0.9] * 5] * CASES, judge="judge-a")
    report = compare(base, _run([[0.9] * 5] * CASES, judge="judge-b"), min_epochs=5)
    assert [r.kind for r in report.regressions] == ["design_mismatch"]
    assert "judge-a" in report.regressions[0].detail
    assert compare(base, _run([[0.9] * 5] * CASES, judge="judge-a"), min_epochs=5).ok


def _naive_alarm(base: RunResult, cur: RunResult, margin: float, alpha: float) -> bool:
    """The old rule: every current epoch against the baseline's mean (one noisy draw at 1 epoch)."""
    for b, c in zip(base.cases, cur.cases, strict=True):
        if c.mean_score - b.mean_score >= -margin:
            continue
        ref = statistics.fmean(b.scores)
        if wilcoxon_signed_rank([x - ref + margin for x in c.scores], "less") < alpha:
            return True
    return False


def test_mixing_epoch_counts_no_longer_raises_false_alarms_above_alpha() -> None:
    """1-epoch vs 10-epoch under the old rule alarms on pure noise; the corrected test stays under alpha."""
    rng = random.Random(17)
    trials, naive, corrected = 300, 0, 0
    for _ in range(trials):
        base = _run(_noisy(rng, 0.8, 1))
        cur = _run(_noisy(rng, 0.8, 10))
        naive += _naive_alarm(base, cur, 0.05, 0.05)
        corrected += not compare(base, cur, min_epochs=1).ok
    assert naive / trials > 0.05  # what the issue measured (8%)
    assert corrected / trials <= 0.05
    # above the minimum, 5 vs 10 epochs compare unpaired: no excess alarms, real drops still caught
    alarms = sum(
        not compare(_run(_noisy(rng, 0.8, 5)), _run(_noisy(rng, 0.8, 10)), min_epochs=5).ok
        for _ in range(600)
    )
    assert alarms / 600 <= 0.05
    caught = compare(_run(_noisy(rng, 0.8, 5)), _run(_noisy(rng, 0.55, 10)), min_epochs=5)
    assert {r.kind for r in caught.regressions} >= {"score_drop"}
    assert any("compared unpaired" in n for n in caught.notes)


def test_one_unlucky_epoch_is_noise_but_a_collapse_of_the_pass_rate_is_not() -> None:
    base = _run([[0.9] * 5] * CASES, threshold=0.85)
    one_bad = _run([[0.9, 0.9, 0.9, 0.9, 0.6]] + [[0.9] * 5] * (CASES - 1), threshold=0.85)
    report = compare(base, one_bad, min_epochs=5, margin=0.2)
    assert report.ok, report.to_dict()
    assert any("within noise" in n for n in report.notes)
    collapsed = _run([[0.6] * 5] + [[0.9] * 5] * (CASES - 1), threshold=0.85)
    bad = compare(base, collapsed, min_epochs=5, margin=0.5)
    assert [(r.kind, r.case_id) for r in bad.regressions] == [("pass_to_fail", "c0")]
    assert bad.regressions[0].p_value is not None and bad.regressions[0].p_value < 0.01


def test_junit_carries_a_failed_gate_as_a_failing_test_case(tmp_path: Path) -> None:
    run = _run([[0.9] * 5] * CASES)
    verdict = {
        "ok": False,
        "baseline": "b.json",
        "regressions": [{"case": "*", "kind": "suite_score_drop", "detail": "dropped 0.3"}],
        "notes": ["n1"],
    }
    root = ET.parse(write_junit(run, tmp_path / "j.xml", verdict)).getroot()
    suite = root.find("testsuite")
    assert suite is not None and suite.get("failures") == "1" and suite.get("tests") == "5"
    fail = suite.find("testcase[@name='gate']/failure")
    assert fail is not None and "suite_score_drop" in (fail.text or "")
    ok = ET.parse(write_junit(run, tmp_path / "k.xml", {**verdict, "ok": True})).getroot()
    assert ok.find("testsuite").get("failures") == "0"  # type: ignore[union-attr]
    assert ok.find("testsuite/testcase[@name='gate']/failure") is None


def _brute(a: list[float], b: list[float]) -> float:
    pooled, m = a + b, len(b)
    obs = statistics.fmean(b) - statistics.fmean(a)
    stats = []
    for idx in itertools.combinations(range(len(pooled)), m):
        sb = [pooled[i] for i in idx]
        sa = [pooled[i] for i in range(len(pooled)) if i not in idx]
        stats.append(statistics.fmean(sb) - statistics.fmean(sa))
    return sum(s <= obs + 1e-12 for s in stats) / len(stats)


_vals = st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=5)


@settings(max_examples=80, deadline=None)
@given(a=_vals, b=_vals, shift=st.floats(0.01, 0.5))
def test_property_permutation_test_is_exact_and_monotone(
    a: list[float], b: list[float], shift: float
) -> None:
    p = permutation_test(a, b, "less")
    assert 0.0 < p <= 1.0
    assert abs(p - _brute(a, b)) < 1e-9
    assert permutation_test(a, [x - shift for x in b], "less") <= p + 1e-12
    two = permutation_test(a, b, "two-sided")
    assert two >= min(p, permutation_test(a, b, "greater")) - 1e-12


@settings(max_examples=100, deadline=None)
@given(ps=st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=12))
def test_property_benjamini_hochberg_rejects_the_smallest_p_values_first(ps: list[float]) -> None:
    keep = benjamini_hochberg(ps, 0.05)
    rejected = [p for p, k in zip(ps, keep, strict=True) if k]
    kept = [p for p, k in zip(ps, keep, strict=True) if not k]
    if rejected and kept:
        assert max(rejected) <= min(kept)
    assert all(p <= 0.05 for p in rejected)
    assert benjamini_hochberg([p * 0 + 0.05 / len(ps) for p in ps], 0.05) == [True] * len(ps)


def test_many_cases_do_not_multiply_false_alarms() -> None:
    """Per-case tests at alpha each would alarm on noise in a large suite; decided together they do not."""
    rng = random.Random(5)
    alarms = naive = 0
    for _ in range(300):
        base = [[min(1.0, max(0.0, rng.gauss(0.8, 0.1))) for _ in range(5)] for _ in range(12)]
        cur = [[min(1.0, max(0.0, rng.gauss(0.8, 0.1))) for _ in range(5)] for _ in range(12)]
        alarms += not compare(_run(base), _run(cur), min_epochs=5).ok
        naive += any(
            statistics.fmean(c) - statistics.fmean(b) < -0.05
            and wilcoxon_signed_rank([y - x + 0.05 for x, y in zip(b, c, strict=True)]) < 0.05
            for b, c in zip(base, cur, strict=True)
        )
    assert naive / 300 > 0.05  # each case tested alone at alpha
    assert alarms / 300 <= 0.05


def test_the_power_estimate_separates_no_change_from_a_large_drop() -> None:
    none = estimate_power(cases=4, epochs=5, noise=0.1, drop=0.0, trials=40)
    large = estimate_power(cases=4, epochs=5, noise=0.05, drop=0.3, trials=40)
    assert none.rate <= 0.05 and large.rate >= 0.9


@settings(max_examples=80, deadline=None)
@given(d=st.lists(st.floats(-1.0, 1.0, allow_nan=False), min_size=1, max_size=10))
def test_property_sign_flip_test_is_exact_and_symmetric(d: list[float]) -> None:
    nz = [x for x in d if abs(x) > 1e-12]
    p = sign_flip_test(d, "less")
    if nz:
        flips = list(itertools.product((1, -1), repeat=len(nz)))
        obs = sum(nz)
        tol = 1e-9 * (1 + sum(abs(x) for x in nz))
        brute = sum(sum(s * x for s, x in zip(f, nz, strict=True)) <= obs + tol for f in flips)
        assert p == brute / len(flips)
    assert abs(sign_flip_test(d, "greater") - sign_flip_test([-x for x in d], "less")) < 1e-12


def test_a_rare_large_drop_counts_in_full_in_the_suite_test() -> None:
    """A model that sometimes omits a fact: most pairs unchanged, a few collapse."""
    diffs = [0.05] * 22 + [-0.7] * 8  # shifted by the margin: the mean is 0.15 past it
    assert sign_flip_test(diffs) < 0.05 < wilcoxon_signed_rank(diffs)  # ranks miss it

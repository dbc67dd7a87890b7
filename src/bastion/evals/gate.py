"""The CI gate: compare a run with its blessed baseline case by case and block on a regression.

A regression is (1) a case that passed in the baseline and fails now, (2) a must-pass
case that fails, or (3) a score drop larger than ``margin`` that a one-sided test
supports: per case over its epochs, and over the whole suite (every case x epoch pair,
by a paired randomization test on the mean, so rare large drops count in full).
Tests run on the differences shifted by the margin (H1: the drop exceeds the margin),
so noise of the judge's size cannot reach significance while a consistent drop can.
With several epochs on both sides a pass-to-fail must itself be significant (the
per-epoch pass rate fell, by an exact permutation test), so one unlucky sample of a
noisy model does not block a merge. All these tests are decided together at a false
discovery rate of ``alpha`` (Benjamini-Hochberg): with nothing changed, the chance of
any false alarm stays at ``alpha`` however many cases the suite has. Baselines are
JSON files keyed by suite, model and prompt version; when the prompt version has no
baseline yet, the newest one for the same suite and model is used, and said so.

A baseline stores its design (epochs, seeds, judge). A design the gate cannot compare
is refused, not guessed at: fewer epochs than the suite's minimum on either side, or a
different judge. Different epoch counts above the minimum are corrected: epochs are
then compared unpaired (permutation test), never each against one noisy baseline mean.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .results import UNRECORDED, CaseResult, RunResult, read_result, write_json
from .stats import permutation_test, sign_flip_test, sign_test, wilcoxon_signed_rank

__all__ = [
    "GateReport",
    "Regression",
    "baseline_path",
    "benjamini_hochberg",
    "bless",
    "compare",
    "find_baseline",
    "gate",
]

DEFAULT_BASELINES = Path("evals/baselines")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")


@dataclass(frozen=True, slots=True)
class Regression:
    case_id: str
    kind: Literal[
        "pass_to_fail",
        "must_pass_failed",
        "score_drop",
        "suite_score_drop",
        "no_baseline",
        "design_mismatch",
    ]
    detail: str
    delta: float | None = None
    p_value: float | None = None


@dataclass(slots=True)
class GateReport:
    """The verdict: ``ok`` unless there is a regression; notes explain what was compared."""

    baseline: Path | None
    regressions: list[Regression] = field(default_factory=list)
    improvements: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.regressions

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "baseline": str(self.baseline) if self.baseline else None,
            "regressions": [
                {
                    "case": r.case_id,
                    "kind": r.kind,
                    "detail": r.detail,
                    "delta": r.delta,
                    "p_value": r.p_value,
                }
                for r in self.regressions
            ],
            "improvements": self.improvements,
            "notes": self.notes,
        }


def _safe(part: str) -> str:
    return _UNSAFE.sub("-", part).strip("-") or "none"


def baseline_path(
    suite: str, model: str, prompt_version: str, root: str | Path = DEFAULT_BASELINES
) -> Path:
    """``<root>/<suite>__<model>__<prompt_version>.json``."""
    return Path(root) / f"{_safe(suite)}__{_safe(model)}__{_safe(prompt_version)}.json"


def bless(result: RunResult, root: str | Path = DEFAULT_BASELINES) -> Path:
    """Store ``result`` as the baseline for its suite, model and prompt version."""
    result.notes = [
        *result.notes,
        f"blessed at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}",
    ]
    return write_json(
        result, baseline_path(result.suite, result.model, result.prompt_version, root)
    )


def find_baseline(
    suite: str, model: str, prompt_version: str, root: str | Path = DEFAULT_BASELINES
) -> tuple[Path | None, bool]:
    """The exact baseline, else the newest for the same suite and model; ``(path, exact)``."""
    exact = baseline_path(suite, model, prompt_version, root)
    if exact.exists():
        return exact, True
    prefix = f"{_safe(suite)}__{_safe(model)}__"
    others = [p for p in Path(root).glob(prefix + "*.json") if p.is_file()]
    if not others:
        return None, False
    return max(others, key=lambda p: p.stat().st_mtime), False


def _p(diffs: Sequence[float], test: str) -> float:
    return sign_test(diffs, "less") if test == "sign" else wilcoxon_signed_rank(diffs, "less")


def _drop_p(base: Sequence[float], cur: Sequence[float], margin: float, test: str) -> float:
    """P-value that ``cur`` is lower than ``base`` by more than ``margin``: paired when epochs pair."""
    if len(base) == len(cur):
        return _p([c - b + margin for b, c in zip(base, cur, strict=True)], test)
    return permutation_test(base, [c + margin for c in cur], "less")


def design_problems(baseline: RunResult, current: RunResult, min_epochs: int) -> list[str]:
    """Why these two runs cannot be compared at all (empty when they can)."""
    problems = []
    for name, run in (("the baseline", baseline), ("this run", current)):
        if run.epochs < min_epochs:
            problems.append(
                f"{name} ran {run.epochs} epoch(s), below the suite's minimum of {min_epochs}: "
                f"run and bless with --epochs {min_epochs} or more"
            )
    unrecorded = UNRECORDED in (baseline.judge, current.judge)
    if (
        _graded(baseline)
        and _graded(current)
        and not unrecorded
        and baseline.judge != current.judge
    ):
        problems.append(
            f"the baseline was graded by {baseline.judge or 'no judge'}, this run by "
            f"{current.judge or 'no judge'}: scores from different judges are not comparable "
            "(re-bless with this judge)"
        )
    return problems


def _graded(run: RunResult) -> bool:
    return any(s.kind == "rubric" for c in run.cases for e in c.epochs for s in e.scores)


def _pass_drop_p(b: CaseResult, c: CaseResult) -> float | None:
    """P-value that the per-epoch pass rate fell; None when one side has a single epoch (no test)."""
    if len(b.epochs) < 2 or len(c.epochs) < 2:
        return None
    return permutation_test(
        [float(e.passed) for e in b.epochs], [float(e.passed) for e in c.epochs], "less"
    )


def _case_drop(b: CaseResult, c: CaseResult, margin: float, test: str) -> tuple[float, Regression]:
    """The case's score-drop test: its p-value (1 when the drop is within the margin) and finding."""
    delta = c.mean_score - b.mean_score
    p = 1.0 if delta >= -margin else _drop_p(b.scores, c.scores, margin, test)
    finding = Regression(
        c.id,
        "score_drop",
        f"mean score {b.mean_score:.3f} -> {c.mean_score:.3f} "
        f"(drop {-delta:.3f} > margin {margin:g}, p={p:.4f})",
        delta,
        p,
    )
    return p, finding


def _suite_drop(
    common: Sequence[tuple[CaseResult, CaseResult]], margin: float, test: str
) -> tuple[float, Regression]:
    """The suite-wide test: every case x epoch pair when epochs pair, else case means."""
    deltas = [c.mean_score - b.mean_score for b, c in common]
    mean_delta = statistics.fmean(deltas)
    paired = all(len(b.scores) == len(c.scores) for b, c in common)
    if mean_delta >= -margin:
        p = 1.0
    elif paired:
        diffs = [y - x + margin for b, c in common for x, y in zip(b.scores, c.scores, strict=True)]
        p = sign_flip_test(diffs, "less")
    else:
        p = _p([d + margin for d in deltas], test)
    unit = "case x epoch pairs" if paired else "case means"
    finding = Regression(
        "*",
        "suite_score_drop",
        f"suite mean score dropped {-mean_delta:.3f} over {len(common)} cases ({unit}, p={p:.4g})",
        mean_delta,
        p,
    )
    return p, finding


def benjamini_hochberg(p_values: Sequence[float], alpha: float) -> list[bool]:
    """Which hypotheses to reject with the false discovery rate held at ``alpha``.

    When nothing changed (every null true) this also holds the chance of any false
    alarm at ``alpha``, however many cases a suite has.
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    cut = 0
    for rank, i in enumerate(order, 1):
        if p_values[i] <= rank / m * alpha:
            cut = rank
    keep = set(order[:cut])
    return [i in keep for i in range(m)]


def compare(
    baseline: RunResult,
    current: RunResult,
    *,
    margin: float = 0.05,
    alpha: float = 0.05,
    test: Literal["wilcoxon", "sign"] = "wilcoxon",
    baseline_file: Path | None = None,
    min_epochs: int = 1,
) -> GateReport:
    """Case-by-case comparison (see the module docstring for what counts as a regression)."""
    report = GateReport(baseline_file)
    problems = design_problems(baseline, current, min_epochs)
    if problems:
        report.regressions.extend(Regression("*", "design_mismatch", p) for p in problems)
        return report
    if baseline.judge == UNRECORDED:
        report.notes.append("the baseline predates design records: its judge is not known")
    if baseline.epochs != current.epochs:
        report.notes.append(
            f"baseline ran {baseline.epochs} epoch(s), this run {current.epochs}: "
            "epochs are compared unpaired (permutation test)"
        )
    if baseline.simulated and current.simulated and baseline.seed == current.seed:
        report.notes.append(
            f"same seeds as the baseline (seed {current.seed}): simulated answers to "
            "unchanged requests repeat exactly"
        )
    common: list[tuple[CaseResult, CaseResult]] = []
    # statistical findings, decided together below: (p, finding, fallback if not significant)
    family: list[tuple[float, Regression, Regression | str | None]] = []
    flagged: set[str] = set()
    for c in current.cases:
        b = baseline.case(c.id)
        if b is None:
            report.notes.append(f"{c.id}: new case (no baseline)")
            if c.must_pass and not c.passed:
                report.regressions.append(Regression(c.id, "must_pass_failed", _why(c)))
            continue
        common.append((b, c))
        if not b.passed and c.passed:
            report.improvements.append(c.id)
        if b.passed and not c.passed:
            p = _pass_drop_p(b, c)
            if p is None:  # one epoch on a side: no test possible, the flip is the evidence
                report.regressions.append(Regression(c.id, "pass_to_fail", _why(c)))
                flagged.add(c.id)
            else:
                rate = f"pass rate {b.pass_rate:.0%} -> {c.pass_rate:.0%}"
                fallback: Regression | str = (
                    Regression(c.id, "must_pass_failed", f"{_why(c)} ({rate})")
                    if c.must_pass
                    else f"{c.id}: passed in the baseline, fails now, but its {rate} is within "
                    f"noise (p={p:.3f})"
                )
                finding = Regression(
                    c.id, "pass_to_fail", f"{_why(c)} ({rate}, p={p:.4f})", None, p
                )
                family.append((p, finding, fallback))
                flagged.add(c.id)
        elif c.must_pass and not c.passed:
            report.regressions.append(
                Regression(c.id, "must_pass_failed", _why(c) + " (failed in the baseline too)")
            )
            flagged.add(c.id)
        p, finding = _case_drop(b, c, margin, test)
        family.append((p, finding, None))
    for b in baseline.cases:
        if current.case(b.id) is None:
            report.notes.append(f"{b.id}: in the baseline but not run")
    if len(common) >= 2:
        p, finding = _suite_drop(common, margin, test)
        family.append((p, finding, None))
    if family:
        decisions = benjamini_hochberg([p for p, _, _ in family], alpha)
        for (_, finding, fb), significant in zip(family, decisions, strict=True):
            duplicate = finding.kind == "score_drop" and finding.case_id in flagged
            if significant and not duplicate:
                report.regressions.append(finding)
            elif not significant and isinstance(fb, Regression):
                report.regressions.append(fb)
            elif not significant and isinstance(fb, str):
                report.notes.append(fb)
        report.notes.append(
            f"{len(family)} statistical test(s) decided together at a false discovery rate "
            f"of {alpha:g} (Benjamini-Hochberg)"
        )
    return report


def _why(c: CaseResult) -> str:
    detail = ", ".join(c.failed_assertions) or "failed"
    err = next((e.error for e in c.epochs if e.error), None)
    return f"failed: {detail}" + (f" ({err})" if err else "")


def gate(
    current: RunResult,
    *,
    root: str | Path = DEFAULT_BASELINES,
    margin: float = 0.05,
    alpha: float = 0.05,
    test: Literal["wilcoxon", "sign"] = "wilcoxon",
    require_baseline: bool = False,
    min_epochs: int = 1,
) -> GateReport:
    """Find the baseline for ``current`` and compare; without one, every must-pass case must pass."""
    path, exact = find_baseline(current.suite, current.model, current.prompt_version, root)
    if path is None:
        report = GateReport(None)
        report.notes.append(
            f"no baseline for suite {current.suite!r} model {current.model!r}: "
            "only must-pass cases are enforced (run `bastion eval bless`)"
        )
        if require_baseline:
            report.regressions.append(Regression("*", "no_baseline", "no baseline"))
        for c in current.cases:
            if c.must_pass and not c.passed:
                report.regressions.append(Regression(c.id, "must_pass_failed", _why(c)))
        return report
    report = compare(
        read_result(path),
        current,
        margin=margin,
        alpha=alpha,
        test=test,
        baseline_file=path,
        min_epochs=min_epochs,
    )
    if not exact:
        report.notes.insert(
            0,
            f"no baseline for prompt version {current.prompt_version!r}; "
            f"compared with the newest for this suite and model ({path.name})",
        )
    return report

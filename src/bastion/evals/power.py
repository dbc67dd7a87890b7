"""How often the gate catches a score drop of a given size: its power, by simulation.

The gate's answer depends on the suite's design (cases, epochs), the grader's noise and
the margin and alpha it is run at, so the power is estimated the way the gate is used:
synthetic baselines and runs whose per-epoch scores are the case's true score plus
Gaussian noise, compared with ``gate.compare``. ``python -m bastion.evals.power``
prints the table quoted in docs/evals.md.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Sequence
from dataclasses import dataclass

from .gate import compare
from .results import CaseResult, EpochResult, RunResult, Score

__all__ = ["PowerPoint", "estimate_power", "main"]


@dataclass(frozen=True, slots=True)
class PowerPoint:
    cases: int
    epochs: int
    noise: float
    drop: float
    rate: float  # share of trials in which the gate failed
    trials: int


def _run(rng: random.Random, means: Sequence[float], epochs: int, noise: float) -> RunResult:
    cases = []
    for i, mu in enumerate(means):
        vals = [min(1.0, max(0.0, rng.gauss(mu, noise))) for _ in range(epochs)]
        # thresholds well below the scores: only the score-drop tests can fire
        eps = [EpochResult(n, True, v, [Score("r", "rubric", True, v)]) for n, v in enumerate(vals)]
        cases.append(CaseResult(f"c{i}", False, True, eps))
    return RunResult("power", "m", "v", epochs, cases, judge="j")


def estimate_power(
    *,
    cases: int,
    epochs: int,
    noise: float,
    drop: float,
    trials: int = 400,
    margin: float = 0.05,
    alpha: float = 0.05,
    seed: int = 0,
) -> PowerPoint:
    """The share of ``trials`` in which a run ``drop`` below its baseline fails the gate."""
    rng = random.Random(seed)
    failed = 0
    for _ in range(trials):
        means = [rng.uniform(0.7, 0.9) for _ in range(cases)]
        base = _run(rng, means, epochs, noise)
        cur = _run(rng, [m - drop for m in means], epochs, noise)
        failed += not compare(base, cur, margin=margin, alpha=alpha, min_epochs=1).ok
    return PowerPoint(cases, epochs, noise, drop, failed / trials, trials)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--trials", type=int, default=400)
    ap.add_argument("--cases", type=int, nargs="+", default=[6, 12])
    ap.add_argument("--epochs", type=int, nargs="+", default=[5, 10])
    ap.add_argument("--noise", type=float, nargs="+", default=[0.05, 0.1])
    ap.add_argument("--drops", type=float, nargs="+", default=[0.0, 0.05, 0.1, 0.15, 0.2, 0.3])
    args = ap.parse_args(argv)
    print(
        "| cases | epochs | judge noise (sd) | "
        + " | ".join(f"drop {d:g}" for d in args.drops)
        + " |"
    )
    print("|---|---|---|" + "---|" * len(args.drops))
    for c in args.cases:
        for e in args.epochs:
            for n in args.noise:
                cells = [
                    estimate_power(cases=c, epochs=e, noise=n, drop=d, trials=args.trials).rate
                    for d in args.drops
                ]
                print(f"| {c} | {e} | {n:g} | " + " | ".join(f"{r:.0%}" for r in cells) + " |")


if __name__ == "__main__":
    main()

"""The demo's eval incident: a weaker model slipped in behind the same alias, caught by the CI gate.

A six-case knowledge-base suite runs at the gate's CI settings (five epochs per case) through
the in-process gateway, as ``bastion eval run --gate`` does. The baseline is blessed with the
alias ``assistant`` served by a strong simulated model; then the alias is pointed at a cheaper
one whose quality profile recalls fewer facts, and the gate compares. A control run (the
strong model again, fresh samples) must pass, so the verdict is the model's doing, not noise.
The simulator draws every answer from the run's seed, so the demo is the same every time.
"""

from __future__ import annotations

import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .evals import GateReport, RunResult, bless, gate, open_gateway, parse_suite, run_suite
from .evals.suite import Suite

__all__ = ["ALIAS", "STRONG", "WEAK", "EvalVerdict", "demo_suite", "eval_regression"]

ALIAS = "assistant"
STRONG = "claude-sonnet-4-5"
WEAK = "claude-haiku-4-5"
BLESS_SEED, CONTROL_SEED, CANDIDATE_SEED = 1, 2, 3
_INSTRUCTIONS = "Answer the question from the documents. Cite documents by id in square brackets."


def demo_suite() -> Suite:
    """Six refund-policy questions graded on facts stated and documents cited."""
    cases = [
        {
            "id": f"refund-policy-{i}",
            "template": "kb",
            "user_content": f"Question {i}: what does the refund policy say for plan {i}?",
            "docs": [{"id": f"policy-{i}", "text": f"Plan {i}: refunds within {10 + i} days."}],
            "facts": [f"refunds within {10 + i} days", f"plan {i} covers every order"],
            "assert": [
                {
                    "rubric": {
                        "rubric": "States the policy's facts and cites the document.",
                        "citations": True,
                        "threshold": 0.7,
                    }
                }
            ],
        }
        for i in range(6)
    ]
    return parse_suite(
        {
            "name": "demo-kb",
            "judge": "judge",
            "templates": {"kb": {"instructions": _INSTRUCTIONS}},
            "sim": {"judge_noise": 0.05},
            "defaults": {"model": ALIAS, "max_tokens": 200, "must_pass": False},
            "cases": cases,
        }
    )


def _models(model: str) -> dict[str, Any]:
    """The eval gateway's routes: ``assistant`` behind ``model``, and a simulated judge."""
    return {
        "providers": {"sim": {"kind": "sim"}},
        "models": {
            ALIAS: {"deployments": [{"provider": "sim", "model": model}]},
            "judge": {"deployments": [{"provider": "sim", "model": "claude-opus-4-1"}]},
        },
    }


async def _run(config: Path, suite: Suite, model: str, seed: int) -> RunResult:
    async with open_gateway(config, suite, overrides=_models(model)) as gw:
        return await run_suite(suite, gw, epochs=suite.gate.min_epochs, seed=seed)


def _gate(run: RunResult, suite: Suite, root: Path) -> GateReport:
    g = suite.gate
    return gate(
        run, root=root, margin=g.margin, alpha=g.alpha, test=g.test, min_epochs=g.min_epochs
    )


def _served(run: RunResult) -> str:
    models = {e.served_model for c in run.cases for e in c.epochs if e.served_model}
    return ", ".join(sorted(models)) or "?"


@dataclass(frozen=True, slots=True)
class EvalVerdict:
    """What the gate said about the control and the candidate, and the runs behind it."""

    baseline_file: Path
    control: GateReport
    candidate: GateReport
    baseline_score: float
    control_score: float
    candidate_score: float
    baseline_model: str
    candidate_model: str
    calls: int


async def eval_regression(config: Path, baselines: Path | None = None) -> EvalVerdict:
    """Bless on the strong model, gate a control run and the weaker model behind the same alias.

    ``config`` is the demo's config file; its routes are replaced for the suite's alias, and
    each run gets its own throwaway stores (as ``bastion eval run`` does).
    """
    suite = demo_suite()
    with tempfile.TemporaryDirectory(prefix="bastion-demo-evals-") as tmp:
        root = baselines or Path(tmp)
        blessed = await _run(config, suite, STRONG, BLESS_SEED)
        path = bless(blessed, root)
        control = await _run(config, suite, STRONG, CONTROL_SEED)
        candidate = await _run(config, suite, WEAK, CANDIDATE_SEED)
        runs = (blessed, control, candidate)
        return EvalVerdict(
            baseline_file=path,
            control=_gate(control, suite, root),
            candidate=_gate(candidate, suite, root),
            baseline_score=statistics.fmean(c.mean_score for c in blessed.cases),
            control_score=statistics.fmean(c.mean_score for c in control.cases),
            candidate_score=statistics.fmean(c.mean_score for c in candidate.cases),
            baseline_model=_served(blessed),
            candidate_model=_served(candidate),
            calls=sum(len(c.epochs) for r in runs for c in r.cases),
        )

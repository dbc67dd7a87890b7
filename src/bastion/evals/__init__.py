"""Evals: suites run through the gateway, a CI gate on regressions, the cheapest passing model.

Public surface only; the CLI lives in ``bastion.evals.cli`` (``eval_app``).
"""

from __future__ import annotations

from .cache import ResponseCache
from .gate import GateReport, Regression, baseline_path, bless, compare, find_baseline, gate
from .judge import FeatureJudge, GatewayJudge, Judge, JudgeRequest, JudgeVerdict, parse_score
from .report_html import render_html, write_html
from .results import (
    CaseResult,
    EpochResult,
    RunResult,
    Score,
    read_result,
    write_json,
    write_junit,
)
from .runner import EVAL_PRINCIPAL, open_gateway, run_suite
from .select import Candidate, Selection, apply_choice, select_model, set_feature_model
from .stats import permutation_test, sign_test, wilcoxon_signed_rank
from .suite import Assertion, Case, Suite, load_suite, parse_suite

__all__ = [
    "EVAL_PRINCIPAL",
    "Assertion",
    "Candidate",
    "Case",
    "CaseResult",
    "EpochResult",
    "FeatureJudge",
    "GateReport",
    "GatewayJudge",
    "Judge",
    "JudgeRequest",
    "JudgeVerdict",
    "Regression",
    "ResponseCache",
    "RunResult",
    "Score",
    "Selection",
    "Suite",
    "apply_choice",
    "baseline_path",
    "bless",
    "compare",
    "find_baseline",
    "gate",
    "load_suite",
    "open_gateway",
    "parse_score",
    "parse_suite",
    "permutation_test",
    "read_result",
    "render_html",
    "run_suite",
    "select_model",
    "set_feature_model",
    "sign_test",
    "wilcoxon_signed_rank",
    "write_html",
    "write_json",
    "write_junit",
]

"""Eval results as plain data: one JSON shape for run output and blessed baselines, plus JUnit XML for CI.

Results live in files, not the record store: there is no ``eval_runs`` table in this
build, and a baseline has to be reviewable in a pull request anyway.
"""

from __future__ import annotations

import statistics
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

__all__ = [
    "UNRECORDED",
    "CaseResult",
    "EpochResult",
    "RunResult",
    "Score",
    "read_result",
    "write_json",
    "write_junit",
]

FORMAT_VERSION = 1
UNRECORDED = "(unrecorded)"  # the judge of a result written before runs recorded their design


@dataclass(frozen=True, slots=True)
class Score:
    """One assertion on one answer: pass/fail, a 0..1 value, why, and which checker decided."""

    name: str
    kind: str
    passed: bool
    value: float
    detail: str = ""
    via: str = "builtin"


@dataclass(slots=True)
class EpochResult:
    """One run of one case; ``score`` is the mean rubric score, else the share of checks passed."""

    epoch: int
    passed: bool
    score: float
    scores: list[Score]
    output: str = ""
    tool_calls: list[str] = field(default_factory=list)
    latency_ms: float | None = None
    cost_usd: float = 0.0
    judge_cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    served_model: str | None = None
    error: str | None = None


@dataclass(slots=True)
class CaseResult:
    """A case over all epochs; ``passed`` aggregates per assertion (pass rate, or mean rubric score)."""

    id: str
    must_pass: bool
    passed: bool
    epochs: list[EpochResult]
    failed_assertions: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)

    @property
    def scores(self) -> list[float]:
        return [e.score for e in self.epochs]

    @property
    def mean_score(self) -> float:
        return statistics.fmean(self.scores) if self.epochs else 0.0

    @property
    def pass_rate(self) -> float:
        return sum(e.passed for e in self.epochs) / len(self.epochs) if self.epochs else 0.0

    @property
    def mean_cost_usd(self) -> float:
        return statistics.fmean(e.cost_usd for e in self.epochs) if self.epochs else 0.0

    @property
    def mean_latency_ms(self) -> float:
        vals = [e.latency_ms for e in self.epochs if e.latency_ms is not None]
        return statistics.fmean(vals) if vals else 0.0


@dataclass(slots=True)
class RunResult:
    """A whole run: what ran (suite, model, prompt version, epochs) and every case's result."""

    suite: str
    model: str
    prompt_version: str
    epochs: int
    cases: list[CaseResult]
    started_at: float = 0.0
    duration_s: float = 0.0
    config: str | None = None
    feature: str | None = None
    notes: list[str] = field(default_factory=list)
    seed: int = 0
    judge: str | None = None
    simulated: bool = False

    @property
    def design(self) -> dict[str, Any]:
        """What a comparison with this run must match: epochs, seeds, model, judge, simulated."""
        return {
            "epochs": self.epochs,
            "seeds": [f"{self.seed}-{n}" for n in range(self.epochs)],
            "model": self.model,
            "judge": self.judge,
            "simulated": self.simulated,
        }

    @property
    def passed(self) -> int:
        return sum(c.passed for c in self.cases)

    @property
    def failed(self) -> list[CaseResult]:
        return [c for c in self.cases if not c.passed]

    @property
    def must_pass_failures(self) -> list[str]:
        return [c.id for c in self.cases if c.must_pass and not c.passed]

    @property
    def mean_score(self) -> float:
        return statistics.fmean(c.mean_score for c in self.cases) if self.cases else 0.0

    @property
    def cost_usd(self) -> float:
        return sum(e.cost_usd for c in self.cases for e in c.epochs)

    @property
    def judge_cost_usd(self) -> float:
        return sum(e.judge_cost_usd for c in self.cases for e in c.epochs)

    @property
    def cost_per_case_usd(self) -> float:
        """Mean cost of one case's call, measured from usage at the served model's price."""
        return statistics.fmean(c.mean_cost_usd for c in self.cases) if self.cases else 0.0

    def case(self, case_id: str) -> CaseResult | None:
        return next((c for c in self.cases if c.id == case_id), None)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["format"] = FORMAT_VERSION
        out["design"] = self.design
        out["summary"] = {
            "cases": len(self.cases),
            "passed": self.passed,
            "failed": [c.id for c in self.failed],
            "must_pass_failures": self.must_pass_failures,
            "mean_score": round(self.mean_score, 6),
            "cost_usd": round(self.cost_usd, 8),
            "cost_per_case_usd": round(self.cost_per_case_usd, 8),
            "judge_cost_usd": round(self.judge_cost_usd, 8),
        }
        for c, raw in zip(self.cases, out["cases"], strict=True):
            raw["mean_score"] = round(c.mean_score, 6)
            raw["pass_rate"] = round(c.pass_rate, 6)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        cases = []
        for c in data.get("cases", []):
            epochs = [
                EpochResult(
                    **{
                        **{k: v for k, v in e.items() if k in EpochResult.__dataclass_fields__},
                        "scores": [Score(**s) for s in e.get("scores", [])],
                    }
                )
                for e in c.get("epochs", [])
            ]
            cases.append(
                CaseResult(
                    id=c["id"],
                    must_pass=bool(c.get("must_pass", True)),
                    passed=bool(c["passed"]),
                    epochs=epochs,
                    failed_assertions=list(c.get("failed_assertions", [])),
                    tags=list(c.get("tags", [])),
                )
            )
        return cls(
            suite=data["suite"],
            model=data["model"],
            prompt_version=data["prompt_version"],
            epochs=int(data["epochs"]),
            cases=cases,
            started_at=float(data.get("started_at", 0.0)),
            duration_s=float(data.get("duration_s", 0.0)),
            config=data.get("config"),
            feature=data.get("feature"),
            notes=list(data.get("notes", [])),
            seed=int(data.get("seed", 0)),
            judge=data.get("judge", UNRECORDED),
            simulated=bool(data.get("simulated", False)),
        )


def write_json(result: RunResult, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2) + b"\n")
    return p


def read_result(path: str | Path) -> RunResult:
    data = orjson.loads(Path(path).read_bytes())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not an eval result")
    return RunResult.from_dict(data)


def write_junit(result: RunResult, path: str | Path, gate: Mapping[str, Any] | None = None) -> Path:
    """One ``testcase`` per case (time = mean latency), plus the gate's verdict as its own case.

    ``gate`` is ``GateReport.to_dict()``; a failed gate is a failing ``testcase`` named
    ``gate``, so CI systems that read only JUnit still see the merge blocked.
    """
    gate_failed = gate is not None and not gate.get("ok", True)
    suite = ET.Element(
        "testsuite",
        name=result.suite,
        tests=str(len(result.cases) + (gate is not None)),
        failures=str(len(result.failed) + gate_failed),
        errors="0",
        time=f"{result.duration_s:.3f}",
    )
    props = ET.SubElement(suite, "properties")
    for k, v in (
        ("model", result.model),
        ("prompt_version", result.prompt_version),
        ("epochs", str(result.epochs)),
        ("mean_score", f"{result.mean_score:.4f}"),
        ("cost_usd", f"{result.cost_usd:.8f}"),
    ):
        ET.SubElement(props, "property", name=k, value=v)
    for c in result.cases:
        tc = ET.SubElement(
            suite,
            "testcase",
            classname=f"{result.suite}.{result.model}",
            name=c.id,
            time=f"{c.mean_latency_ms / 1000.0:.3f}",
        )
        if not c.passed:
            lines = []
            for e in c.epochs:
                bad = [f"{s.name}: {s.detail}" for s in e.scores if not s.passed]
                if e.error:
                    bad.insert(0, f"error: {e.error}")
                if bad:
                    lines.append(f"epoch {e.epoch}: " + "; ".join(bad))
            fail = ET.SubElement(
                tc,
                "failure",
                message=", ".join(c.failed_assertions) or "failed",
                type="must_pass" if c.must_pass else "soft",
            )
            fail.text = "\n".join(lines)
        out = ET.SubElement(tc, "system-out")
        out.text = f"mean_score={c.mean_score:.4f} pass_rate={c.pass_rate:.2f} cost_usd={c.mean_cost_usd:.8f}"
    if gate is not None:
        tc = ET.SubElement(suite, "testcase", classname=f"{result.suite}.gate", name="gate")
        regs = list(gate.get("regressions") or [])
        if gate_failed:
            fail = ET.SubElement(
                tc,
                "failure",
                message=f"gate: {len(regs)} regression(s) against {gate.get('baseline') or 'no baseline'}",
                type="regression",
            )
            fail.text = "\n".join(f"{r['case']} ({r['kind']}): {r['detail']}" for r in regs)
        notes = ET.SubElement(tc, "system-out")
        notes.text = "\n".join(str(n) for n in gate.get("notes") or [])
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    root = ET.Element("testsuites")
    root.append(suite)
    ET.ElementTree(root).write(p, encoding="utf-8", xml_declaration=True)
    return p

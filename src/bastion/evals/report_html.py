"""A self-contained HTML report of one run: every case, why it failed, and its diff against the baseline.

One file with inline CSS and no scripts or external links, so it can be attached to a
CI run or opened from disk. Every value taken from a run is HTML-escaped: answers are
model output and may carry markup aimed at whoever opens the report.
"""

from __future__ import annotations

import difflib
import html
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .results import CaseResult, RunResult

__all__ = ["render_html", "write_html"]

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem;color:#1d1d1f}
h1{font-size:1.3rem}table{border-collapse:collapse;width:100%;margin:1rem 0}
th,td{border:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f4f4f6}.pass{color:#137333}.fail{color:#b3261e;font-weight:600}
.soft{color:#a15c00}pre{white-space:pre-wrap;background:#f7f7f9;padding:.5rem;margin:.3rem 0}
.add{background:#e6ffec}.del{background:#ffebe9}details{margin:.4rem 0}
.verdict{padding:.5rem;border-radius:4px}.ok{background:#e6f4ea}.bad{background:#fce8e6}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _status(c: CaseResult) -> str:
    if c.passed:
        return '<span class="pass">PASS</span>'
    return (
        '<span class="fail">FAIL</span>' if c.must_pass else '<span class="soft">FAIL (soft)</span>'
    )


def _diff(before: str, after: str) -> str:
    """A line diff of two answers, marked up (escaped) for HTML."""
    if before == after:
        return "<pre>(identical to the baseline)</pre>"
    rows = []
    for line in difflib.unified_diff(
        before.splitlines(), after.splitlines(), "baseline", "this run", lineterm="", n=2
    ):
        cls = "add" if line.startswith("+") else "del" if line.startswith("-") else ""
        rows.append(f'<span class="{cls}">{_e(line)}</span>' if cls else _e(line))
    return "<pre>" + "\n".join(rows) + "</pre>"


def _reasons(c: CaseResult) -> str:
    bad = []
    for e in c.epochs:
        for s in e.scores:
            if not s.passed:
                bad.append(f"epoch {e.epoch}: {s.name}: {s.detail or 'failed'}")
        if e.error:
            bad.append(f"epoch {e.epoch}: error: {e.error}")
    return "<br>".join(_e(b) for b in bad[:6]) + ("<br>…" if len(bad) > 6 else "")


def _case_block(c: CaseResult, base: CaseResult | None) -> str:
    out = c.epochs[0].output if c.epochs else ""
    parts = [f"<details><summary>{_e(c.id)} · {_status(c)}</summary>"]
    parts.append(f"<p>this run, epoch 0:</p><pre>{_e(out)}</pre>")
    if base is not None:
        before = base.epochs[0].output if base.epochs else ""
        parts.append(
            f"<p>baseline mean score {base.mean_score:.3f} → {c.mean_score:.3f}; "
            "answer diff (epoch 0):</p>" + _diff(before, out)
        )
    else:
        parts.append("<p>no baseline for this case</p>")
    parts.append("</details>")
    return "".join(parts)


def render_html(
    result: RunResult,
    *,
    baseline: RunResult | None = None,
    gate: Mapping[str, Any] | None = None,
) -> str:
    """The whole report as one HTML string."""
    design = result.design
    head = (
        f"<h1>{_e(result.suite)} · {_e(result.model)} · {_e(result.prompt_version)}</h1>"
        f"<p>{result.passed}/{len(result.cases)} passed · mean score {result.mean_score:.3f} · "
        f"{result.epochs} epoch(s) · seed {_e(result.seed)} · judge {_e(design['judge'] or 'none')}"
        f" · {'simulated' if result.simulated else 'real providers'} · "
        f"cost ${result.cost_usd:.6f}</p>"
    )
    if gate is not None:
        ok = bool(gate.get("ok"))
        regs = "".join(
            f"<li>{_e(r['case'])} ({_e(r['kind'])}): {_e(r['detail'])}</li>"
            for r in gate.get("regressions") or []
        )
        notes = "".join(f"<li>{_e(n)}</li>" for n in gate.get("notes") or [])
        head += (
            f'<div class="verdict {"ok" if ok else "bad"}"><b>gate: {"pass" if ok else "FAIL"}</b>'
            f" (baseline: {_e(gate.get('baseline') or 'none')})<ul>{regs}</ul>"
            f"<ul>{notes}</ul></div>"
        )
    rows = []
    for c in result.cases:
        b = baseline.case(c.id) if baseline else None
        delta = f"{c.mean_score - b.mean_score:+.3f}" if b else "-"
        rows.append(
            f"<tr><td>{_e(c.id)}</td><td>{_status(c)}</td><td>{c.mean_score:.3f}</td>"
            f"<td>{delta}</td><td>{c.pass_rate:.0%}</td><td>{_reasons(c)}</td></tr>"
        )
    table = (
        "<table><tr><th>case</th><th>result</th><th>score</th><th>vs baseline</th>"
        "<th>pass rate</th><th>why it failed</th></tr>" + "".join(rows) + "</table>"
    )
    blocks = "".join(
        _case_block(c, baseline.case(c.id) if baseline else None) for c in result.cases
    )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>eval {_e(result.suite)}</title><style>{_CSS}</style></head><body>"
        f"{head}{table}<h2>Answers</h2>{blocks}</body></html>\n"
    )


def write_html(
    result: RunResult,
    path: str | Path,
    *,
    baseline: RunResult | None = None,
    gate: Mapping[str, Any] | None = None,
) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(render_html(result, baseline=baseline, gate=gate), encoding="utf-8")
    return p

"""Observability track: per-call logs, the eval suite gating CI, cost and quality dashboards."""

from __future__ import annotations

import re
from pathlib import Path

from ..store.models import PromptVersion
from ._base import NOT_BUILT, CheckContext, Item, ItemResult, ask, drill_model, optional

__all__ = ["OBSERVABILITY_ITEMS"]

TRACK = "Observability"
_CI_FILES = (
    ".github/workflows/*.yml",
    ".github/workflows/*.yaml",
    ".gitlab-ci.yml",
    ".circleci/config.yml",
    "azure-pipelines.yml",
    "Jenkinsfile",
    ".ci/*",
    "scripts/*",
    "Makefile",
    "tox.ini",
    "noxfile.py",
)
_CLI_GATE = re.compile(r"bastion\s+eval\s+run\b[^\n]*--gate")
_PY_GATE = re.compile(r"bastion\.evals|from bastion import evals")


async def call_logs(ctx: CheckContext, r: ItemResult) -> None:
    obs = ctx.config.observability
    r.add(
        "PASS",
        f"every call recorded to {ctx.config.store.url.split('://')[0]} (bodies up to {obs.body_max_chars} chars), spill file for outages",
    )
    model = drill_model(ctx.config)
    if not ctx.drills or model is None:
        return
    async with ctx.drill() as gw:
        # a version header is recorded only when it resolves in the registry: publish one
        await gw.store.create_prompt_version(
            PromptVersion(name="check", version=1, instructions="You answer account questions.")
        )
        await ask(
            gw, model, text="what is my balance?", headers={"x-bastion-prompt-version": "check@1"}
        )
        await gw.recorder.flush()
        rows = await gw.store.recent_calls(1)
    if not rows:
        r.add("FAIL", "drill: a call left no call record")
        return
    c = rows[0]
    missing = [
        name
        for name, ok in (
            ("input", bool(c.input_text)),
            ("output", bool(c.output_text)),
            ("tokens", c.input_tokens > 0 and c.output_tokens > 0),
            ("latency", c.latency_ms > 0),
            ("model", bool(c.served_model)),
            ("prompt version", c.prompt_version == "check@1"),
            ("trace id", bool(c.trace_id)),
        )
        if not ok
    ]
    if missing:
        r.add("FAIL", f"drill: the call record lacks {', '.join(missing)}")
    else:
        r.add(
            "PASS",
            f"drill: record has input, output, {c.input_tokens}+{c.output_tokens} tokens, {c.latency_ms:.1f} ms, model {c.served_model}, prompt {c.prompt_version}, trace {c.trace_id[:8]}…",
        )


def _files(root: Path, patterns: tuple[str, ...]) -> list[Path]:
    out: list[Path] = []
    for pat in patterns:
        out += [p for p in root.glob(pat) if p.is_file()]
    return out


async def eval_ci(ctx: CheckContext, r: ItemResult) -> None:
    root = ctx.project_dir
    suites = [p for p in _files(root, ("evals/*.yaml", "evals/*.yml", "evals/*.jsonl"))]
    if not suites:
        r.add("FAIL", f"no eval suites under {root / 'evals'}")
        return
    r.add("PASS", f"suites: {', '.join(p.name for p in suites)}")
    baselines = _files(root, ("evals/baselines/*.json",))
    if baselines:
        r.add("PASS", f"{len(baselines)} blessed baseline(s) in evals/baselines")
    else:
        r.add(
            "WARN",
            "no blessed baselines (`bastion eval bless SUITE`): the gate enforces must-pass cases only",
        )
    wired = []
    for f in _files(root, _CI_FILES):
        try:
            if _CLI_GATE.search(f.read_text(errors="replace")):
                wired.append(str(f.relative_to(root)))
        except OSError:
            continue
    for f in root.glob("tests/**/test_*.py"):
        try:
            text = f.read_text(errors="replace")
        except OSError:
            continue
        if _PY_GATE.search(text) and "gate(" in text:
            wired.append(str(f.relative_to(root)))
    if wired:
        r.add("PASS", f"CI runs the gate: {', '.join(sorted(wired)[:3])}")
    else:
        r.add(
            "FAIL",
            "nothing in CI runs `bastion eval run SUITE --gate` (or a pytest calling bastion.evals.gate)",
        )


async def dashboards(ctx: CheckContext, r: ItemResult) -> None:
    mod = optional("bastion.server.dashboard")
    if mod is None or not hasattr(mod, "Dashboard"):
        r.add("WARN", f"dashboards (bastion.server.dashboard): {NOT_BUILT}")
        return
    r.add(
        "PASS",
        "dashboard at /dashboard (spend by feature vs caps, p50/p95 latency, calls, breakers)",
    )
    model = drill_model(ctx.config)
    if not ctx.drills or model is None:
        return
    try:
        async with ctx.drill() as gw:
            await ask(gw, model, feature="default")
            await gw.recorder.flush()
            summary = await mod.Dashboard(gw).summary({})
            latency = await mod.Dashboard(gw).latency({})
    except Exception as exc:
        r.add("WARN", f"dashboard drill could not run ({type(exc).__name__}: {exc})")
        return
    if summary and latency:
        r.add(
            "PASS",
            f"drill: the dashboard API answered for a fresh call (summary keys: {', '.join(sorted(summary)[:5])})",
        )
    else:
        r.add("FAIL", "drill: the dashboard API returned nothing for a fresh call")
    if optional("bastion.observability.metrics") is None:
        r.add("WARN", f"Prometheus metrics: {NOT_BUILT}")


OBSERVABILITY_ITEMS = (
    Item(TRACK, "Per-call logs (input, output, tokens, latency, model, prompt version)", call_logs),
    Item(TRACK, "Eval suite in CI, blocking on regression", eval_ci),
    Item(TRACK, "Cost + quality dashboards live", dashboards),
)

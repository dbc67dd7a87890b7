"""Observability track: per-call logs, the eval suite gating CI, cost and quality dashboards."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from ..store.models import PromptVersion
from ._base import CheckContext, Item, ItemResult, ask, feature_aliases, feature_model
from ._ci import ARTIFACT_GLOB, find_gate_artifacts, find_gate_commands, is_pytest

__all__ = ["OBSERVABILITY_ITEMS"]

TRACK = "Observability"
_PY_GATE = re.compile(r"\bbastion\.evals\b|from bastion import evals")
_GATE_CALL = re.compile(r"\bgate\(")
_MAX_TEST_FILES = 2000


async def call_logs(ctx: CheckContext, r: ItemResult) -> None:
    obs = ctx.config.observability
    if obs.body_max_chars == 0:
        r.app(
            "FAIL",
            "call records keep no input or output (observability.body_max_chars: 0)",
            features=tuple(ctx.features),
        )
    else:
        r.app(
            "PASS",
            f"every call recorded to {ctx.config.store.url.split('://')[0]} (bodies up to {obs.body_max_chars} chars, scrubbed), spill file for outages",
        )
    aliases, _ = feature_aliases(ctx.config, "default")
    if not ctx.drills or not aliases:
        return
    async with ctx.drill() as gw:
        # a version header is recorded only when it resolves in the registry: publish one
        await gw.store.create_prompt_version(
            PromptVersion(name="check", version=1, instructions="You answer account questions.")
        )
        model = feature_model(ctx.config, "default", aliases[0])
        await ask(
            gw, model, text="what is my balance?", headers={"x-bastion-prompt-version": "check@1"}
        )
        await gw.recorder.flush()
        rows = await gw.store.recent_calls(1)
    if not rows:
        r.app("FAIL", "drill: a call left no call record")
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
        r.app("FAIL", f"drill: the call record lacks {', '.join(missing)}")
    else:
        r.add(
            "PASS",
            f"drill: record has input, output, {c.input_tokens}+{c.output_tokens} tokens, {c.latency_ms:.1f} ms, model {c.served_model}, prompt {c.prompt_version}, trace {c.trace_id[:8]}…",
        )


async def eval_ci(ctx: CheckContext, r: ItemResult) -> None:
    root = ctx.project_dir
    suites = sorted(
        p.name for pat in ("evals/*.yaml", "evals/*.yml", "evals/*.jsonl") for p in root.glob(pat)
    )
    if not suites:
        r.app("FAIL", f"no eval suites under {root / 'evals'}", features=tuple(ctx.features))
        return
    r.app("PASS", f"suites: {', '.join(suites[:5])}")
    if not list(root.glob("evals/baselines/*.json")):
        r.app(
            "WARN",
            "no blessed baselines (`bastion eval bless SUITE`): the gate enforces must-pass cases only",
        )
    uses = find_gate_commands(root)
    blocking = [u for u in uses if u.blocking]
    for u in uses:
        if not u.blocking:
            r.add("INFO", f"{u.where}: `{u.command}` does not block: {u.why}")
    if blocking:
        r.app(
            "PASS",
            "CI blocks on the gate: "
            + "; ".join(f"{u.where}: `{u.command}`" for u in blocking[:3]),
        )
        return
    gate_tests = _gate_tests(root)
    pytest_runs = [u for u in find_gate_commands(root, is_pytest) if u.blocking]
    if gate_tests and pytest_runs:
        r.app(
            "PASS",
            f"CI runs pytest ({pytest_runs[0].where}: `{pytest_runs[0].command}`), and "
            f"{', '.join(gate_tests[:2])} gates suites through bastion.evals.gate",
        )
        return
    artifacts = find_gate_artifacts(root)
    if artifacts:
        last = max(artifacts, key=lambda a: a.started_at)
        when = (
            datetime.fromtimestamp(last.started_at, UTC).isoformat(timespec="minutes")
            if last.started_at
            else "unknown time"
        )
        if last.ok:
            r.app(
                "PASS",
                f"gate verdict artifact {last.path}: suite {last.suite} passed the gate ({when})",
            )
        else:
            r.app(
                "FAIL",
                f"gate verdict artifact {last.path}: suite {last.suite} FAILED the gate ({when})",
                features=tuple(ctx.features),
            )
        return
    r.app(
        "FAIL",
        "nothing in CI runs `bastion eval run SUITE --gate` so that a regression fails the build, "
        f"and no gate verdict ({ARTIFACT_GLOB} from `--gate --out`) was found",
        features=tuple(ctx.features),
    )


def _gate_tests(root: Path) -> list[str]:
    """Test files that call ``bastion.evals.gate`` (a pytest-driven gate)."""
    found = []
    for p in sorted((root / "tests").rglob("test_*.py"))[:_MAX_TEST_FILES]:
        try:
            text = p.read_text(errors="replace")
        except OSError:
            continue
        if _PY_GATE.search(text) and _GATE_CALL.search(text):
            found.append(str(p.relative_to(root)))
    return found


async def dashboards(ctx: CheckContext, r: ItemResult) -> None:
    obs = ctx.config.observability
    unscored = [n for n in ctx.features if obs.quality_rates.get(n, obs.quality_rate) <= 0]
    if unscored:
        r.app(
            "WARN",
            f"no online quality scores for {', '.join(unscored)} (observability.quality_rate 0): the quality panels stay empty",
            features=tuple(unscored),
        )
    else:
        r.app(
            "PASS",
            f"dashboard at /dashboard: spend by feature vs caps, latency, breakers; quality sampled at {obs.quality_rate:.0%} (+ every flagged answer)",
        )
    aliases, _ = feature_aliases(ctx.config, "default")
    if not ctx.drills or not aliases:
        return
    from ..server.dashboard import Dashboard

    async with ctx.drill() as gw:
        await ask(gw, feature_model(ctx.config, "default", aliases[0]), feature="default")
        await gw.recorder.flush()
        summary = await Dashboard(gw).summary({})
        latency = await Dashboard(gw).latency({})
    if summary and latency:
        r.add(
            "PASS",
            f"drill: the dashboard API answered for a fresh call (summary keys: {', '.join(sorted(summary)[:5])})",
        )
    else:
        r.app("FAIL", "drill: the dashboard API returned nothing for a fresh call")


OBSERVABILITY_ITEMS = (
    Item(
        "observability.call_logs",
        TRACK,
        "Per-call logs (input, output, tokens, latency, model, prompt version)",
        call_logs,
    ),
    Item("observability.eval_ci", TRACK, "Eval suite in CI, blocking on regression", eval_ci),
    Item("observability.dashboards", TRACK, "Cost + quality dashboards live", dashboards),
)

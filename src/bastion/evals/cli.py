"""``bastion eval run|bless|select``: the eval runner, the CI gate and model selection on the command line."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..errors import BastionError, ConfigError
from .cache import ResponseCache
from .gate import DEFAULT_BASELINES, GateReport, bless, find_baseline, gate
from .redteam.cli import redteam_cmd
from .report_html import write_html
from .results import RunResult, read_result, write_json, write_junit
from .runner import open_gateway, run_suite
from .select import Selection, SimulatedEvidence, apply_choice, select_model
from .suite import Suite, load_suite

__all__ = ["eval_app"]

eval_app = typer.Typer(
    no_args_is_help=True,
    help="Eval suites: run them, bless baselines, gate CI on regressions, pick the cheapest model.",
)
eval_app.command("redteam")(redteam_cmd)  # attack a feature through its configured gateway

T = TypeVar("T")
SuiteArg = Annotated[Path, typer.Argument(help="suite file (.yaml or .jsonl)")]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="gateway config", envvar="BASTION_CONFIG")
]
EpochsOpt = Annotated[int, typer.Option(min=1, help="repeat every case N times")]
ConcOpt = Annotated[int, typer.Option(min=1, help="calls in flight at once")]
ModelOpt = Annotated[str | None, typer.Option(help="run every case on this model")]
FeatureOpt = Annotated[str | None, typer.Option(help="run every case as this feature")]
BaseOpt = Annotated[Path, typer.Option(help="where baselines live")]
SeedOpt = Annotated[int, typer.Option(help="run seed: epoch N uses seed '<seed>-N'")]
CacheOpt = Annotated[
    Path | None, typer.Option(help="response cache directory (keyed by request, model and seed)")
]
SharedOpt = Annotated[
    bool,
    typer.Option(
        "--shared-state",
        help="use the config's store and counters (eval spend counts against real caps)",
    ),
]


def _err(console: Console, msg: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {msg}")
    return typer.Exit(2)


def _load(path: Path, console: Console) -> Suite:
    try:
        return load_suite(path)
    except ConfigError as exc:
        raise _err(console, exc.message) from None


def _run_async(coro: Coroutine[Any, Any, T], console: Console) -> T:
    try:
        return asyncio.run(coro)
    except (BastionError, ValueError) as exc:
        raise _err(console, getattr(exc, "message", str(exc))) from None


@contextlib.contextmanager
def _progress(console: Console, total: int, label: str) -> Iterator[Any]:
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    with bar:
        task = bar.add_task(label, total=total, failed=0)
        failed = [0]

        def tick(_case: str, _epoch: int, passed: bool) -> None:
            failed[0] += 0 if passed else 1
            bar.update(task, advance=1, failed=failed[0])

        yield tick


async def _execute(
    suite: Suite,
    config: Path | None,
    *,
    epochs: int,
    concurrency: int,
    model: str | None,
    feature: str | None,
    shared: bool,
    console: Console,
    seed: int = 0,
    cache: Path | None = None,
) -> RunResult:
    with _progress(console, len(suite.cases) * epochs, suite.name) as tick:
        async with open_gateway(config, suite, isolated=not shared) as gw:
            return await run_suite(
                suite,
                gw,
                epochs=epochs,
                concurrency=concurrency,
                model=model,
                feature=feature,
                progress=tick,
                config_label=str(config) if config else None,
                seed=seed,
                cache=ResponseCache(cache) if cache else None,
            )


def _at_least(suite: Suite, epochs: int, console: Console) -> int:
    """Gating and blessing run at least the suite's minimum epochs (``gate.min_epochs``)."""
    if epochs < suite.gate.min_epochs:
        console.print(
            f"[dim]note:[/dim] epochs raised from {epochs} to the suite's minimum "
            f"{suite.gate.min_epochs} (gate.min_epochs)"
        )
    return max(epochs, suite.gate.min_epochs)


def _why_failed(c: Any) -> str:
    """The failed assertions with the first reason each gave (e.g. no judge model configured)."""
    out = []
    for label in c.failed_assertions:
        bad = (s for e in c.epochs for s in e.scores if s.name == label and not s.passed)
        detail = next((s.detail for s in bad if s.detail), "")
        out.append(f"{label}: {detail}" if detail else label)
    return "; ".join(out)


def _table(result: RunResult) -> Table:
    t = Table(
        title=f"{result.suite} · {result.model} · {result.prompt_version} · {result.epochs} epoch(s)"
    )
    t.add_column("case", no_wrap=True)
    t.add_column("result", no_wrap=True)
    for col in ("score", "pass rate", "latency ms", "cost $"):
        t.add_column(col, justify="right", no_wrap=True)
    t.add_column("failed", overflow="fold", min_width=12)
    for c in result.cases:
        status = (
            "[green]PASS[/green]"
            if c.passed
            else ("[red]FAIL[/red]" if c.must_pass else "[yellow]FAIL (soft)[/yellow]")
        )
        t.add_row(
            c.id,
            status,
            f"{c.mean_score:.3f}",
            f"{c.pass_rate:.0%}",
            f"{c.mean_latency_ms:.0f}",
            f"{c.mean_cost_usd:.6f}",
            _why_failed(c),
        )
    return t


def _print_gate(console: Console, report: GateReport) -> None:
    for n in report.notes:
        console.print(f"[dim]note:[/dim] {n}")
    for i in report.improvements:
        console.print(f"[green]improved:[/green] {i}")
    for r in report.regressions:
        console.print(f"[red]REGRESSION[/red] {r.case_id} ({r.kind}): {r.detail}")
    verdict = "[green]gate: pass[/green]" if report.ok else "[red]gate: FAIL[/red]"
    console.print(f"{verdict} (baseline: {report.baseline or 'none'})")


@eval_app.command("run")
def run_cmd(
    suite_path: SuiteArg,
    config: ConfigOpt = None,
    epochs: EpochsOpt = 1,
    concurrency: ConcOpt = 8,
    out: Annotated[Path | None, typer.Option(help="write results JSON here")] = None,
    junit: Annotated[Path | None, typer.Option(help="write JUnit XML here")] = None,
    gate_: Annotated[
        bool, typer.Option("--gate", help="compare with the blessed baseline; exit 1 on regression")
    ] = False,
    model: ModelOpt = None,
    feature: FeatureOpt = None,
    baselines: BaseOpt = DEFAULT_BASELINES,
    margin: Annotated[
        float | None, typer.Option(help="score drop tolerated (default: suite's)")
    ] = None,
    alpha: Annotated[
        float | None, typer.Option(help="significance level (default: suite's)")
    ] = None,
    require_baseline: Annotated[
        bool, typer.Option(help="with --gate: no baseline is a failure")
    ] = False,
    shared_state: SharedOpt = False,
    seed: SeedOpt = 0,
    cache: CacheOpt = None,
    html: Annotated[Path | None, typer.Option(help="write a self-contained HTML report")] = None,
) -> None:
    """Run a suite through the in-process gateway; exit 1 if a must-pass case fails or (--gate) on regression."""
    console = Console(stderr=True)
    suite = _load(suite_path, console)
    if gate_:
        epochs = _at_least(suite, epochs, console)
    result = _run_async(
        _execute(
            suite,
            config,
            epochs=epochs,
            concurrency=concurrency,
            model=model,
            feature=feature,
            shared=shared_state,
            console=console,
            seed=seed,
            cache=cache,
        ),
        console,
    )
    Console().print(_table(result))
    console.print(
        f"{result.passed}/{len(result.cases)} passed · mean score {result.mean_score:.3f} · "
        f"cost ${result.cost_usd:.6f} (+ judge ${result.judge_cost_usd:.6f}) · {result.duration_s:.1f}s"
    )
    if out:
        write_json(result, out)
    failed = bool(result.must_pass_failures)
    report: GateReport | None = None
    if gate_:
        test: Literal["wilcoxon", "sign"] = suite.gate.test
        report = gate(
            result,
            root=baselines,
            margin=suite.gate.margin if margin is None else margin,
            alpha=suite.gate.alpha if alpha is None else alpha,
            test=test,
            require_baseline=require_baseline,
            min_epochs=suite.gate.min_epochs,
        )
        _print_gate(console, report)
        if out:
            data = orjson.loads(out.read_bytes())
            data["gate"] = report.to_dict()
            out.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
        failed = failed or not report.ok
    if junit:
        write_junit(result, junit, report.to_dict() if report else None)
    if html:
        path, _ = find_baseline(result.suite, result.model, result.prompt_version, baselines)
        base = read_result(path) if path else None
        write_html(result, html, baseline=base, gate=report.to_dict() if report else None)
    if failed:
        raise typer.Exit(1)


@eval_app.command("bless")
def bless_cmd(
    suite_path: SuiteArg,
    config: ConfigOpt = None,
    epochs: EpochsOpt = 1,
    concurrency: ConcOpt = 8,
    model: ModelOpt = None,
    feature: FeatureOpt = None,
    baselines: BaseOpt = DEFAULT_BASELINES,
    from_: Annotated[
        Path | None,
        typer.Option("--from", help="bless an existing results JSON instead of running"),
    ] = None,
    force: Annotated[bool, typer.Option(help="bless even with failing must-pass cases")] = False,
    shared_state: SharedOpt = False,
    seed: SeedOpt = 0,
    cache: CacheOpt = None,
) -> None:
    """Store this run as the baseline for the suite, model and prompt version (commit the file)."""
    console = Console(stderr=True)
    suite = _load(suite_path, console)
    if from_ is not None:
        result = read_result(from_)
        if result.epochs < suite.gate.min_epochs and not force:
            console.print(
                f"[red]not blessed:[/red] {from_} ran {result.epochs} epoch(s); the suite's gate "
                f"needs {suite.gate.min_epochs} (re-run with --epochs, or --force)"
            )
            raise typer.Exit(1)
    else:
        epochs = _at_least(suite, epochs, console)
        result = _run_async(
            _execute(
                suite,
                config,
                epochs=epochs,
                concurrency=concurrency,
                model=model,
                feature=feature,
                shared=shared_state,
                console=console,
                seed=seed,
                cache=cache,
            ),
            console,
        )
        Console().print(_table(result))
    if result.must_pass_failures and not force:
        console.print(
            f"[red]not blessed:[/red] must-pass cases fail: {', '.join(result.must_pass_failures)} "
            "(fix them, or --force)"
        )
        raise typer.Exit(1)
    path = bless(result, baselines)
    console.print(f"blessed {path}")


def _selection_table(sel: Selection) -> Table:
    t = Table(title=f"cheapest model for feature {sel.feature!r} · suite {sel.suite}")
    for col in ("model", "qualifies", "mean score", "cost/case $", "passed", "why"):
        t.add_column(col)
    for c in sorted(sel.candidates, key=lambda c: c.cost_per_case):
        mark = (
            "[bold green]✔ chosen[/bold green]"
            if c.model == sel.choice
            else ("yes" if c.qualifies else "[red]no[/red]")
        )
        t.add_row(
            c.model,
            mark,
            f"{c.mean_score:.3f}",
            f"{c.cost_per_case:.8f}",
            f"{c.run.passed}/{len(c.run.cases)}",
            c.reason,
        )
    return t


@eval_app.command("select")
def select_cmd(
    suite_path: SuiteArg,
    feature: Annotated[str, typer.Option(help="the feature to pick a model for")],
    candidates: Annotated[str, typer.Option(help="comma-separated model aliases")],
    config: ConfigOpt = None,
    epochs: EpochsOpt = 1,
    concurrency: ConcOpt = 8,
    margin: Annotated[
        float | None, typer.Option(help="score distance to the best tolerated")
    ] = None,
    apply: Annotated[
        Path | None, typer.Option("--apply", help="pin the choice in this YAML config")
    ] = None,
    allow_simulated: Annotated[
        bool,
        typer.Option(help="with --apply: pin a choice even though its evidence is simulated"),
    ] = False,
    shared_state: SharedOpt = False,
) -> None:
    """Run the suite on each candidate; choose the cheapest that passes; --apply pins it with evidence."""
    console = Console(stderr=True)
    suite = _load(suite_path, console)
    models = [m.strip() for m in candidates.split(",") if m.strip()]
    cfg = config or apply

    async def go() -> Selection:
        with _progress(console, len(suite.cases) * epochs * len(models), "select") as tick:
            return await select_model(
                suite,
                cfg,
                feature,
                models,
                epochs=epochs,
                concurrency=concurrency,
                margin=margin,
                progress=tick,
                isolated=not shared_state,
            )

    sel = _run_async(go(), console)
    Console().print(_selection_table(sel))
    if sel.choice is None:
        console.print("[red]no candidate passes the suite[/red]")
        raise typer.Exit(1)
    console.print(f"choice: [bold]{sel.choice}[/bold]")
    if sel.simulated:
        console.print(
            "[yellow]evidence is simulated:[/yellow] some candidates were answered by the "
            "built-in simulator, so scores say nothing about the real models"
        )
    if apply is not None:
        try:
            applied = apply_choice(sel, apply, allow_simulated=allow_simulated)
        except SimulatedEvidence as exc:
            raise _err(console, exc.message) from None
        console.print(
            f"wrote features.{feature}.model = {sel.choice} to {applied.config}; "
            f"evidence {applied.evidence}; diff {applied.diff}; backup {applied.backup}"
        )

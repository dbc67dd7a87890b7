"""``bastion check``: the readiness table (or JSON), exiting 1 when any item FAILs."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..errors import ConfigError
from ._base import ItemResult
from .audit import run_check

__all__ = ["check_command"]

_STYLE = {"PASS": "green", "INFO": "blue", "WARN": "yellow", "FAIL": "bold red"}
_STATUSES = ("PASS", "INFO", "WARN", "FAIL")
PIPE_WIDTH = 100_000  # piped output is never wrapped: one evidence line per line


def _console() -> Console:
    """A terminal gets the table at its width; a pipe or file gets lines that are never wrapped."""
    return Console() if sys.stdout.isatty() else Console(width=PIPE_WIDTH, soft_wrap=True)


def _table(results: list[ItemResult]) -> Table:
    t = Table(title="Bastion readiness (seed checklist): what the app uses", show_lines=True)
    t.add_column("track", no_wrap=True)
    t.add_column("item")
    t.add_column("status", no_wrap=True)
    t.add_column("evidence", overflow="fold")
    for r in results:
        status = f"[{_STYLE[r.status]}]{r.status}[/]"
        if r.failing_features:
            status += "\n" + escape(", ".join(r.failing_features))
        # evidence quotes config and feature names ("drill [drafts]"): text, never markup
        t.add_row(r.track, escape(r.item), status, escape("\n".join(r.evidence)))
    return t


def check_command(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="YAML config file", envvar="BASTION_CONFIG"),
    ] = None,
    json_: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    project: Annotated[
        Path, typer.Option(help="project root (where evals/ and CI files live)")
    ] = Path("."),
    only: Annotated[
        str | None,
        typer.Option(help="one track (cost, latency, ...) or items whose name contains this"),
    ] = None,
    no_drills: Annotated[
        bool, typer.Option("--no-drills", help="inspect the config only, run no drills")
    ] = False,
    url: Annotated[
        str | None,
        typer.Option(help="instead: live drills against this running gateway, through its proxies"),
    ] = None,
    key: Annotated[
        str | None, typer.Option(help="API key for --url", envvar="BASTION_API_KEY")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="model for --url (default: the first /v1/models lists)")
    ] = None,
) -> None:
    """Audit readiness: each item judged on the app's config per feature, drilled on a simulated copy."""
    if url is not None:
        from .live import live_command

        raise typer.Exit(live_command(url, key, model=model, json_=json_))
    try:
        results = asyncio.run(
            run_check(config, project_dir=project, drills=not no_drills, only=only)
        )
    except ConfigError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    counts = {s: sum(r.status == s for r in results) for s in _STATUSES}
    if json_:
        typer.echo(
            orjson.dumps(
                {
                    "ok": counts["FAIL"] == 0,
                    "counts": counts,
                    "items": [r.to_dict() for r in results],
                },
                option=orjson.OPT_INDENT_2,
            ).decode()
        )
    else:
        console = _console()
        console.print(_table(results))
        console.print(" · ".join(f"[{_STYLE[s]}]{counts[s]} {s}[/]" for s in _STATUSES))
        console.print(
            "PASS: the app's config uses it and its drill held · INFO: Bastion offers it, "
            "the app is not seen using it · WARN/FAIL: features named under the status"
        )
    if counts["FAIL"]:
        raise typer.Exit(1)

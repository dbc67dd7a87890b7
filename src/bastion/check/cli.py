"""``bastion check``: the readiness table (or JSON), exiting 1 when any item FAILs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.table import Table

from ..errors import ConfigError
from ._base import ItemResult
from .audit import run_check

__all__ = ["check_command"]

_STYLE = {"PASS": "green", "WARN": "yellow", "FAIL": "bold red"}


def _table(results: list[ItemResult]) -> Table:
    t = Table(title="Bastion readiness (seed checklist)", show_lines=True)
    t.add_column("track", no_wrap=True)
    t.add_column("item")
    t.add_column("status", no_wrap=True)
    t.add_column("evidence", overflow="fold")
    for r in results:
        t.add_row(r.track, r.item, f"[{_STYLE[r.status]}]{r.status}[/]", "\n".join(r.evidence))
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
) -> None:
    """Audit readiness: each checklist item's status and evidence (config + a drill on a simulated copy)."""
    try:
        results = asyncio.run(
            run_check(config, project_dir=project, drills=not no_drills, only=only)
        )
    except ConfigError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    counts = {s: sum(r.status == s for r in results) for s in ("PASS", "WARN", "FAIL")}
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
        console = Console()
        console.print(_table(results))
        console.print(
            f"[green]{counts['PASS']} PASS[/] · [yellow]{counts['WARN']} WARN[/] · "
            f"[bold red]{counts['FAIL']} FAIL[/]"
        )
    if counts["FAIL"]:
        raise typer.Exit(1)

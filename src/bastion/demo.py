"""``bastion demo``: the seed's incidents, played on the simulator, with what Bastion did and the proof.

One command starts a real gateway with a temporary config (``demo_stage``), plays each
incident against it (``demo_incidents``): a runaway loop, an Anthropic outage, a stream cut
mid-answer, an injected document, a card number in a prompt, the kill switch and a weaker
model behind an alias (``demo_eval``). It prints a line as each starts and ends, then a table
of what Bastion did with the evidence (record request id, trace id, metric line). Every
printed claim is checked, so the exit status is 1 when any incident did not behave as claimed:
the demo is also a test. Nothing outside a temporary folder is touched, and no network
beyond 127.0.0.1 is used.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .demo_incidents import INCIDENTS, Incident, Outcome
from .demo_stage import CONFIG_NAME, open_stage

__all__ = ["INCIDENT_TIMEOUT_S", "Played", "demo_command", "exit_code", "run_demo", "summary"]

INCIDENT_TIMEOUT_S = 30.0  # one incident's bound; the whole demo takes a few seconds
PIPE_WIDTH = 100_000  # piped output is never wrapped: one table row per line


@dataclass(frozen=True, slots=True)
class Played:
    """One incident as it was played: its outcome and how long it took."""

    incident: Incident
    outcome: Outcome
    seconds: float


def select(only: str | None) -> list[Incident]:
    """The incidents named in ``only`` (comma-separated keys), in the demo's order; all if None."""
    if not only:
        return list(INCIDENTS)
    wanted = [k.strip() for k in only.split(",") if k.strip()]
    known = {i.key for i in INCIDENTS}
    unknown = [k for k in wanted if k not in known]
    if unknown or not wanted:
        raise typer.BadParameter(
            f"unknown incident {', '.join(unknown) or only!r}; choose from {', '.join(known)}",
            param_hint="--only",
        )
    return [i for i in INCIDENTS if i.key in wanted]


async def _play(incident: Incident, stage: Any) -> Outcome:
    out = Outcome()
    try:
        async with asyncio.timeout(INCIDENT_TIMEOUT_S):
            await incident.run(stage, out)
    except TimeoutError:
        out.failures.append(f"did not finish within {INCIDENT_TIMEOUT_S:g} s")
    except Exception as exc:  # a broken incident fails itself, not the rest of the demo
        out.failures.append(f"crashed: {type(exc).__name__}: {exc}")
    return out


async def run_demo(
    incidents: Sequence[Incident] = INCIDENTS,
    *,
    edit: Callable[[dict[str, Any]], None] | None = None,
    say: Callable[[str], None] = print,
    keep: Path | None = None,
) -> list[Played]:
    """Play ``incidents`` in order on one stage; ``edit`` may change the demo config first."""
    played: list[Played] = []
    n = len(incidents)
    async with open_stage(edit, keep=keep) as stage:
        say(f"Bastion demo: gateway on {stage.url} (simulated Anthropic and OpenAI), {n} incidents")
        for i, incident in enumerate(incidents, 1):
            say(f"[{i}/{n}] {incident.title} ...")
            t0 = time.monotonic()
            out = await _play(incident, stage)
            took = time.monotonic() - t0
            verdict = "ok    " if out.ok else "FAILED"
            say(f"[{i}/{n}] {verdict} {incident.title} ({took:.1f} s)")
            for failure in out.failures:
                say(f"        claim not met: {failure}")
            played.append(Played(incident, out, took))
    return played


def exit_code(played: Sequence[Played]) -> int:
    """0 only when every incident was played and behaved as claimed."""
    return 0 if played and all(p.outcome.ok for p in played) else 1


def summary(played: Sequence[Played]) -> Table:
    """incident | what Bastion did | evidence, one row per incident."""
    t = Table(title="What Bastion did", show_lines=True)
    t.add_column("incident")
    t.add_column("what Bastion did", overflow="fold")
    t.add_column("evidence", overflow="fold")
    for p in played:
        o = p.outcome
        status = "[green]ok[/]" if o.ok else "[bold red]FAILED[/]"
        did = escape(o.did or "-")
        if not o.ok:
            did += "\n[red]not as claimed: " + escape("; ".join(o.failures)) + "[/]"
        t.add_row(f"{escape(p.incident.title)}\n{status}", did, escape("\n".join(o.evidence)))
    return t


def _console() -> Console:
    return Console() if sys.stdout.isatty() else Console(width=PIPE_WIDTH, soft_wrap=True)


def demo_command(
    only: Annotated[
        str | None,
        typer.Option(
            help="play only these incidents (comma-separated): "
            + ",".join(i.key for i in INCIDENTS)
        ),
    ] = None,
    keep: Annotated[
        Path | None,
        typer.Option(
            help="keep the demo's config, records and counters in this new folder, to look "
            "the evidence up afterwards (bastion trace ID --config DIR/bastion.yaml)"
        ),
    ] = None,
) -> None:
    """Play the seed's incidents on the simulator and show what Bastion did, with the evidence.

    Exits 1 when any incident did not behave as claimed.
    """
    chosen = select(only)
    if keep is not None and (keep / CONFIG_NAME).exists():
        raise typer.BadParameter(
            f"{keep} already holds a demo: pick a new folder", param_hint="--keep"
        )
    console = _console()
    t0 = time.monotonic()

    def say(line: str) -> None:  # each progress line as it happens, a pipe included
        console.print(escape(line))
        console.file.flush()

    played = asyncio.run(run_demo(chosen, say=say, keep=keep))
    console.print(summary(played))
    if keep is not None:
        cfg = keep.resolve() / CONFIG_NAME
        console.print(
            escape(
                f"The records stay in {keep}: `bastion trace TRACE_ID --config {cfg}`; for the "
                f"dashboard, `bastion keys create --name me --roles admin --config {cfg}` and "
                f"`bastion serve --config {cfg}`"
            )
        )
    good = sum(p.outcome.ok for p in played)
    took = time.monotonic() - t0
    if exit_code(played) == 0:
        console.print(f"[green]{good}/{len(played)} incidents behaved as claimed[/] ({took:.1f} s)")
        return
    bad = ", ".join(p.incident.key for p in played if not p.outcome.ok)
    console.print(
        f"[bold red]{len(played) - good}/{len(played)} incidents did not behave as claimed: "
        f"{bad}[/] ({took:.1f} s)"
    )
    raise typer.Exit(1)

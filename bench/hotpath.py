"""Bastion's own CPU per call on the hot path, against a bare proxy, in one run (issue 16).

Processes on 127.0.0.1, each stopped by its PID: the provider simulator, the bare
uvicorn+aiohttp proxy (``bench/bare_proxy.py``, the floor of this server stack), one
``bastion serve`` worker configured as ``sidebyside.py``'s Bastion side (records, the safety
defaults, spend caps and per-user rate limits that never refuse) and, with ``--compare REF``,
a second worker running the source tree of git revision ``REF`` (exported with ``git archive``
into the temp dir, put first on ``PYTHONPATH``) with the same config, so a change is measured
against what it replaces in the same run. Each round sends every side the same bounded burst
of OpenAI chat calls (a 32-token unary answer, and a 32-chunk stream 1 ms apart), sides in
rotating order so the noise of a shared machine hits all alike; a side's CPU per call is its
server process's user+system time over the burst (``/proc/PID/stat``) divided by its calls.
The table gives the median over rounds and the goal (<= 0.5 ms unary, <= 1.5 ms stream).

    .venv/bin/python bench/hotpath.py [--rounds 5] [--unary 600] [--stream 150]
        [--compare HEAD~1] [--profile DIR]

``--profile DIR`` records the (current) Bastion worker with ``py-spy`` for the whole run and
writes ``DIR/bastion.speedscope.json`` (py-spy must be installed in the venv).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import fmt_ms, render, run_async, start_gateway, start_sim, stopping, with_headers
from overhead import (
    BARE_PROXY,
    BASTION,
    Samples,
    Server,
    Target,
    client,
    cpu_times,
    drive,
    free_port,
    gateway_config,
    target,
)
from sidebyside import CAPS, STREAMS_PER_KEY, USER

ROOT = Path(__file__).resolve().parent.parent
GOAL_MS = {"unary": 0.5, "stream": 1.5}
MODES = ("unary", "stream")


@dataclass
class Side:
    name: str
    server: Server
    targets: dict[str, Target]
    cpu_ms: dict[str, list[float]] = field(default_factory=dict)
    p50_ms: dict[str, list[float]] = field(default_factory=dict)
    errors: int = 0


def export_tree(ref: str, dest: Path) -> Path:
    """``src/`` of git revision ``ref`` under ``dest`` (read-only use of the repository)."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / "src.tar"
    with archive.open("wb") as f:
        subprocess.run(["git", "-C", str(ROOT), "archive", ref, "src"], stdout=f, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    return dest / "src"


def launcher_for(src: Path) -> tuple[str, ...]:
    return ("env", f"PYTHONPATH={src}", *BASTION)


def bastion_config(tmp: Path, sim_port: int) -> dict[str, Any]:
    cfg = gateway_config(tmp, sim_port, [0])
    cfg.pop("store")
    cfg.pop("state")
    cfg.pop("observability")
    cfg["cost"] = CAPS
    cfg["server"] = {"max_concurrent_streams_per_key": STREAMS_PER_KEY}
    return cfg


async def burst(side: Side, mode: str, calls: int, concurrency: int) -> None:
    t = side.targets[mode]
    async with client(concurrency) as session:
        await drive(session, [t], concurrency, 10, 30.0)  # warm the pool, not measured
        u0, s0 = cpu_times(side.server.pid)
        out = await drive(session, [t], concurrency, calls, 120.0, Samples())
        u1, s1 = cpu_times(side.server.pid)
    done = len(out.latencies_ms)
    side.errors += out.errors
    if done:
        side.cpu_ms.setdefault(mode, []).append((u1 - u0 + s1 - s0) * 1000.0 / done)
        side.p50_ms.setdefault(mode, []).append(statistics.median(out.latencies_ms))


async def measure(sides: Sequence[Side], args: argparse.Namespace) -> None:
    for r in range(args.rounds):
        for mode in MODES:
            calls = args.unary if mode == "unary" else args.stream
            conc = 1 if mode == "unary" else 4
            order = list(sides[r % len(sides) :]) + list(sides[: r % len(sides)])
            for side in order:
                await burst(side, mode, calls, conc)
        line = ", ".join(
            f"{s.name} {s.cpu_ms['unary'][-1]:.3f}/{s.cpu_ms['stream'][-1]:.3f}" for s in sides
        )
        print(f"round {r + 1}/{args.rounds}: CPU ms unary/stream: {line}", file=sys.stderr)


def report(sides: Sequence[Side], args: argparse.Namespace) -> str:
    bare = sides[0]
    rows = []
    for s in sides:
        row = [s.name]
        for mode in MODES:
            cpu = statistics.median(s.cpu_ms[mode])
            own = cpu - statistics.median(bare.cpu_ms[mode])
            p50 = statistics.median(s.p50_ms[mode])
            row += [fmt_ms(cpu, 3), fmt_ms(own, 3) if s is not bare else "-", fmt_ms(p50, 2)]
        row.append(str(s.errors))
        rows.append(row)
    head = ["side"]
    for mode in MODES:
        head += [f"{mode} CPU ms", f"{mode} over bare", f"{mode} p50 ms"]
    head.append("errors")
    goals = ", ".join(f"{m} <= {g} ms" for m, g in GOAL_MS.items())
    return (
        f"CPU per call, median of {args.rounds} rounds ({args.unary} unary at concurrency 1, "
        f"{args.stream} streams of 32 chunks at concurrency 4); goals: {goals}\n"
        + render(head, rows)
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--unary", type=int, default=600, help="unary calls per side per round")
    p.add_argument("--stream", type=int, default=150, help="streams per side per round")
    p.add_argument("--compare", metavar="REF", help="also run this git revision's source")
    p.add_argument("--profile", type=Path, metavar="DIR", help="py-spy the current worker")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bastion-hotpath-") as d, stopping() as started:
        tmp = Path(d)
        sim = start_sim(tmp, started)
        sim.wait_ready()
        port = free_port()
        upstream = f"http://127.0.0.1:{sim.port}"
        bare = Server(
            "bare",
            [*BARE_PROXY, "--port", str(port), "--upstream", upstream],
            port,
            tmp / "bare.log",
        )
        started.append(bare)
        cfg = bastion_config(tmp, sim.port)
        gws = [("bastion", BASTION)]
        if args.compare:
            gws.append((f"bastion@{args.compare}", launcher_for(export_tree(args.compare, tmp))))
        sides = [Side("bare", bare, {})]
        for name, launcher in gws:
            gw, key = start_gateway(name.replace("@", "-"), cfg, tmp, started, launcher=launcher)
            sides.append(Side(name, gw, {}))
            sides[-1].targets = {
                m: with_headers(
                    target("openai", m, 0, base=f"http://127.0.0.1:{gw.port}", key=key),
                    {"x-bastion-user": USER},
                )
                for m in MODES
            }
        # the bare proxy forwards our headers: the direct request, pacing and all
        bare_base = f"http://127.0.0.1:{port}"
        sides[0].targets = {m: target("openai", m, 0, base=bare_base, key=None) for m in MODES}
        for s in sides:
            s.server.wait_ready(60.0)
        spy = None
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
            exe = shutil.which("py-spy", path=os.path.dirname(sys.executable))
            spy = subprocess.Popen(
                [
                    exe or "py-spy",
                    "record",
                    "--format",
                    "speedscope",
                    "-o",
                    str(args.profile / "bastion.speedscope.json"),
                    "--pid",
                    str(sides[1].server.pid),
                    "--rate",
                    "250",
                ]
            )
            time.sleep(1.0)
        try:
            run_async(measure(sides, args))
        finally:
            if spy is not None:
                spy.send_signal(2)
                spy.wait(timeout=60)
    print(report(sides, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

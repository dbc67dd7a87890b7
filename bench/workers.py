"""Throughput of ``bastion serve --workers 2`` against one worker, on Redis and embedded state.

Six sides, measured in interleaved rounds so the noise of a shared machine hits each alike:
the provider simulator called directly, one ``bastion serve`` worker, and two workers on one
port in each of the two ways the supervisor can share it (one listening socket inherited by
both, or a ``SO_REUSEPORT`` socket per worker, see ``src/bastion/server/workers.py``), all on
Redis state (each its own key prefix); then one worker and two workers (SO_REUSEPORT) on the
embedded SQLite state, the two through the state host (``src/bastion/state/host.py``: one
process owns the counters, the workers call it over a Unix socket; its CPU is counted in the
gateway's, as a child of the supervisor). Every gateway keeps its records in its own SQLite
file, with the default pipeline; calls are unary Anthropic Messages with a 50 ms upstream, from a
keep-alive pool of 50 connections. The figures that matter are ratios in the same run: each
side's throughput as a share of direct, and two workers over one. The simulator, the load
generator and Redis share the same cores as the gateways. Every loop is bounded by a request
count and a time limit.

    .venv/bin/python bench/workers.py [--quick] [--concurrency 50] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil
import yaml
from harness import (
    REDIS_URL,
    Result,
    fmt_ms,
    interleaved,
    meta,
    meta_line,
    redis_cleanup,
    redis_ping,
    render,
    run_async,
    start_sim,
    stopping,
    unique,
)
from overhead import BASTION, Server, create_key, free_port, gateway_config, target
from procs import tree_cpu_s

UPSTREAM_MS = 50
API, MODE = "anthropic", "unary"
GOAL = 1.7  # issue #16: 2 workers on 2 cores, unary at 50 ms upstream
EMBEDDED_2 = "2 workers, embedded (state host)"


def start_workers(
    name: str,
    cfg: dict[str, Any],
    tmp: Path,
    started: list[Server],
    workers: int,
    *extra: str,
    embedded: bool = False,
) -> tuple[Server, str]:
    """``bastion serve --workers N`` on its own Redis prefix (or state file), store and spill."""
    d = tmp / name
    d.mkdir(parents=True, exist_ok=True)
    cfg = copy.deepcopy(cfg)
    cfg["store"] = {"url": f"sqlite:///{d / 'bastion.db'}"}
    cfg["state"] = {
        "url": f"sqlite:///{d / 'state.db'}" if embedded else REDIS_URL,
        "prefix": unique(f"workers{workers}"),
        "settle_journal": str(d / "settle"),
    }
    cfg["observability"] = {"spill_path": str(d / "bastion-spill.jsonl")}
    config = d / "bastion.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    key = create_key(config)
    port = free_port()
    argv = [*BASTION, "serve", "--config", str(config), "--port", str(port)]
    gw = Server(name, [*argv, "--workers", str(workers), *extra], port, d / "gateway.log")
    started.append(gw)
    return gw, key


def wait_workers(gw: Server, workers: int, timeout: float = 120.0) -> None:
    """Until every worker accepts calls (the supervisor says so; one worker: it listens)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if gw.proc.poll() is not None:
            raise RuntimeError(f"{gw.name} exited: {gw.tail()}")
        text = gw.log.read_text(errors="replace")
        if (workers == 1 and "Bastion is listening" in text) or "workers on one port" in text:
            return
        time.sleep(0.1)
    raise TimeoutError(f"{gw.name} not ready: {gw.tail()}")


def host_pid(supervisor: int) -> int | None:
    """The state host among a supervisor's children (embedded state), if any."""
    with contextlib.suppress(psutil.NoSuchProcess):
        for proc in psutil.Process(supervisor).children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                if "bastion.state.host" in proc.cmdline():
                    return proc.pid
    return None


def table(results: dict[str, Result], direct: str, cpu_ms: dict[str, float]) -> str:
    base = results[direct].rps
    rows = [
        [
            name,
            f"{r.rps:.0f}",
            f"{100.0 * r.rps / base:.0f}%" if base else "-",
            fmt_ms(r.p(0.5), 1),
            fmt_ms(r.p(0.99), 1),
            str(r.samples.errors),
            fmt_ms(cpu_ms.get(name), 2),
            f"{r.busy_pct:.0f}%",
        ]
        for name, r in results.items()
    ]
    header = ["side", "req/s", "of direct", "p50 ms", "p99 ms", "errors", "CPU ms/call", "box busy"]
    return render(header, rows)


async def measure(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    requests = 1_500 if args.quick else 6_000
    seconds = 6.0 if args.quick else 24.0
    rounds = 2 if args.quick else 3
    with stopping() as started:
        sim = start_sim(tmp, started)
        sim.wait_ready()
        cfg = gateway_config(tmp, sim.port, [UPSTREAM_MS])
        sides: list[tuple[str, str, int, tuple[str, ...], bool]] = [
            ("direct", "direct", 0, (), False)
        ]
        sides += [
            ("1 worker", "w1", 1, (), False),
            ("2 workers, shared socket", "w2shared", 2, ("--no-reuse-port",), False),
            ("2 workers, SO_REUSEPORT", "w2reuse", 2, ("--reuse-port",), False),
            ("1 worker, embedded", "e1", 1, (), True),
            (EMBEDDED_2, "e2host", 2, ("--reuse-port",), True),
        ]
        targets = [
            (
                "direct",
                target(API, MODE, UPSTREAM_MS, base=f"http://127.0.0.1:{sim.port}", key=None),
                sim.pid,
            )
        ]
        prefixes = []
        gateways: list[int] = []
        for label, name, n, extra, embedded in sides[1:]:
            gw, key = start_workers(name, cfg, tmp, started, n, *extra, embedded=embedded)
            wait_workers(gw, n)
            prefixes.append(yaml.safe_load((tmp / name / "bastion.yaml").read_text())["state"])
            gateways.append(gw.pid)
            pid = gw.pid if n == 1 else None  # several processes: summed below instead
            targets.append(
                (
                    label,
                    target(API, MODE, UPSTREAM_MS, base=f"http://127.0.0.1:{gw.port}", key=key),
                    pid,
                )
            )
        # the gateways' process trees only: the simulator serves every side
        pids = {label: pid for (label, _, _), pid in zip(targets[1:], gateways, strict=True)}
        cpu0 = {label: tree_cpu_s(pid) for label, pid in pids.items()}
        host = host_pid(pids[EMBEDDED_2])
        host0 = tree_cpu_s(host) if host is not None else 0.0
        try:
            results = await interleaved(
                targets,
                args.concurrency,
                rounds=rounds,
                requests=requests,
                seconds=seconds,
                warmup=200,
            )
            # warm-up calls included (a few hundred of some thousands): an upper bound
            sent = 200 + rounds * args.concurrency
            cpu_ms = {
                label: 1000.0
                * (tree_cpu_s(pid) - cpu0[label])
                / (results[label].samples.done + sent)
                for label, pid in pids.items()
            }
            done = results[EMBEDDED_2].samples.done + sent
            host_ms = 1000.0 * (tree_cpu_s(host) - host0) / done if host is not None else 0.0
        finally:
            for state in prefixes:
                if state["url"] == REDIS_URL:
                    redis_cleanup(state["prefix"])
    one = results["1 worker"].rps
    ratios = {
        label: (results[label].rps / one if one else 0.0)
        for label in ("2 workers, shared socket", "2 workers, SO_REUSEPORT")
    }
    one_embedded = results["1 worker, embedded"].rps
    ratios[EMBEDDED_2] = results[EMBEDDED_2].rps / one_embedded if one_embedded else 0.0
    return {"results": results, "ratios": ratios, "cpu_ms": cpu_ms, "host_cpu_ms": host_ms}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a short sanity run")
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--json", type=Path, help="also write the figures here")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    redis_ping()
    m = meta()
    with tempfile.TemporaryDirectory(prefix="bastion-bench-workers-") as d:
        out = run_async(measure(args, Path(d)))
    results: dict[str, Result] = out["results"]
    print(meta_line("bench/workers.py", m))
    print(
        f"unary {API}, {UPSTREAM_MS} ms upstream, concurrency {args.concurrency}, "
        "Redis state (embedded: SQLite), default pipeline"
    )
    print(table(results, "direct", out["cpu_ms"]))
    print(f"{EMBEDDED_2}: of its CPU per call, the state host's: {out['host_cpu_ms']:.2f} ms")
    for label, ratio in out["ratios"].items():
        verdict = "meets" if ratio >= GOAL else "misses"
        one = "1 worker, embedded" if label == EMBEDDED_2 else "1 worker"
        print(f"{label} / {one}: {ratio:.2f}x  ({verdict} the {GOAL}x goal)")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "meta": m,
                    "rps": {k: r.rps for k, r in results.items()},
                    "errors": {k: r.samples.errors for k, r in results.items()},
                    "ratios": out["ratios"],
                    "cpu_ms_per_call": out["cpu_ms"],
                    "state_host_cpu_ms_per_call": out["host_cpu_ms"],
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

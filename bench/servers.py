"""Server stacks side by side: what bounds Bastion's hot path (issue 16).

One run, one upstream (the provider simulator, ``bastion sim``), and these pass-through paths,
each its own process on 127.0.0.1 on a free port, stopped by its PID whatever happens:

- ``direct``: the simulator itself, the baseline of every ratio;
- ``uvicorn``: ``bench/bare_proxy.py``, a minimal ASGI proxy under uvicorn (httptools, uvloop,
  access log off) with one pooled aiohttp client: the stack ``bastion serve`` runs on;
- ``granian``: the same ASGI proxy under granian (ASGI interface, 1 worker, uvloop, HTTP/1,
  websockets off), installed by this script into its own venv (``bench/.venv-granian``,
  ignored by git, pinned ``GRANIAN_PIN``; a ``.pth`` file there adds this checkout's venv after
  granian's own packages, so aiohttp and Bastion are the very ones the other sides run);
- ``raw+aiohttp``: ``bench/raw_proxy.py``, a raw asyncio Protocol + httptools server on uvloop
  (no ASGI), same aiohttp client;
- ``raw+raw``: the same server with a minimal keep-alive HTTP/1.1 client on asyncio protocols
  instead of aiohttp: the floor of Python on this box;
- ``bastion``: one ``bastion serve`` worker configured as ``sidebyside.py`` does (default
  pipeline: records, the safety defaults; spend caps and per-user rate limits that never
  refuse; 256 open streams per key), SQLite store and state in a temp dir;
- ``bastion@granian``: the same config and Bastion's own ASGI app
  (``bastion.server.app.create_app``, see ``bench/granian_apps.py``) under granian, from the
  granian venv: without ``bastion serve``'s header limits and bounded drain, which are
  uvicorn-specific.

If granian cannot be installed or started, the script says why and measures the rest.

Cells: OpenAI chat completions, unary and stream (32 chunks 1 ms apart, the simulator's
``x-sim-*`` pacing headers as ``sidebyside.py`` sets them: the proxies forward the direct
request's headers, Bastion's deployments send the same ones) x concurrency 1 and 50 x upstream
0 and 50 ms. Every cell is measured in alternating rounds over all sides
(``harness.interleaved``), so the noise of a shared machine hits each alike. Per side and cell:
requests/s and share of direct, p50/p99, p50 added over direct, CPU per call of the serving
process (``/proc/PID/stat``; granian's worker process), how busy the box was, failed calls.

    .venv/bin/python bench/servers.py [--quick] [--json FILE] [--no-granian]
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from harness import (
    Cells,
    Result,
    added,
    detail_table,
    fmt_ms,
    log,
    measure_cells,
    meta,
    meta_line,
    pct_or_dash,
    render,
    result_json,
    run_async,
    share,
    start_sim,
    write_gateway_config,
)
from harness import stopping as stopping_servers
from overhead import BARE_PROXY, BASTION, Server, Target, create_key, gateway_config
from overhead import target as sim_target
from procs import Unavailable, VenvTool, first_child_pid, run_cmd, start_process, wait_healthy
from sidebyside import CAPS, STREAMS_PER_KEY, USER

HERE = Path(__file__).resolve().parent
API = "openai"
MODES = ("unary", "stream")
CELLS = ((1, 0), (1, 50), (50, 0), (50, 50))  # (concurrency, upstream ms)
PROXIES = ("uvicorn", "granian", "raw+aiohttp", "raw+raw")
SIDES = ("direct", *PROXIES, "bastion", "bastion@granian")
GRANIAN_PIN = "2.8.7"
VENV = HERE / ".venv-granian"
PTH = "bastion-bench-main.pth"
INSTALL_TIMEOUT_S = 900.0
GRANIAN = VenvTool(
    "granian",
    VENV,
    "granian[uvloop]",
    "import granian; print(granian.__version__)",
    INSTALL_TIMEOUT_S,
)
HEALTH_TIMEOUT_S = 60.0
RAW_PROXY = (sys.executable, str(HERE / "raw_proxy.py"))
GOAL_CPU_UNARY_MS = 0.5


@dataclass(frozen=True)
class Settings:
    rounds: int
    requests: int  # per side and cell, over all rounds
    seconds: float  # per side and cell, over all rounds
    warmup: int


def settings_from(args: argparse.Namespace) -> Settings:
    base = Settings(2, 300, 1.5, 20) if args.quick else Settings(4, 3_000, 8.0, 50)
    return Settings(
        rounds=max(1, min(args.rounds or base.rounds, 10)),
        requests=min(args.requests or base.requests, 50_000),
        seconds=min(args.seconds or base.seconds, 60.0),
        warmup=base.warmup,
    )


# -- granian in its own venv -----------------------------------------------------------------


def ensure_granian(pin: str) -> str:
    """The granian version in ``bench/.venv-granian``, installing it first if need be."""
    version = GRANIAN.ensure(pin, log)
    # This checkout's packages (aiohttp, the editable Bastion) after granian's own: the same
    # client and gateway code as every other side, with no second install to drift.
    ours = sysconfig.get_paths()["purelib"]
    theirs = run_cmd(
        [
            str(GRANIAN.python),
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ],
        60,
    ).stdout.strip()
    if not theirs:
        raise Unavailable("cannot find the granian venv's site-packages")
    (Path(theirs) / PTH).write_text(f"import site; site.addsitedir({ours!r})\n")
    return version


# -- processes -------------------------------------------------------------------------------


@dataclass
class Side:
    name: str
    server: Server
    target_for: Callable[[str, int], Target]  # (mode, upstream ms) -> Target
    cpu_pid: int = 0


def proxy_targets(base: str) -> Callable[[str, int], Target]:
    """The direct request, pacing headers and all, sent to a pass-through proxy."""
    return lambda mode, ms: sim_target(API, mode, ms, base=base, key=None)


def bastion_targets(base: str, key: str) -> Callable[[str, int], Target]:
    def make(mode: str, ms: int) -> Target:
        t = sim_target(API, mode, ms, base=base, key=key)
        return Target(t.url, {**t.headers, "x-bastion-user": USER}, t.body, t.stream, t.end)

    return make


def bastion_config(tmp: Path, sim_port: int, name: str) -> Path:
    """Bastion's config (as ``sidebyside.py``'s), with its own store, state and spill file."""
    cfg = gateway_config(tmp, sim_port, sorted({ms for _, ms in CELLS}))
    cfg["cost"] = CAPS
    cfg["server"] = {"max_concurrent_streams_per_key": STREAMS_PER_KEY}
    return write_gateway_config(cfg, tmp / name)


def granian_argv(port: int, factory: str) -> list[str]:
    return [
        str(VENV / "bin" / "granian"),
        "--interface",
        "asgi",
        "--factory",
        "--loop",
        "uvloop",
        "--http",
        "1",
        "--no-ws",
        "--workers",
        "1",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--working-dir",
        str(HERE),
        f"granian_apps:{factory}",
    ]


def start_granian(
    name: str, factory: str, env: dict[str, str], tmp: Path, started: list[Server]
) -> Server:
    env = {**os.environ, **env, "PYTHONPATH": str(HERE)}
    argv = functools.partial(granian_argv, factory=factory)
    return start_process(name, argv, tmp / f"{name}.log", started, env=env)


def proxy_argv(argv: Sequence[str], upstream: str, port: int) -> list[str]:
    return [*argv, "--port", str(port), "--upstream", upstream]


def start_all(tmp: Path, sim: Server, started: list[Server], with_granian: bool) -> list[Side]:
    up = f"http://127.0.0.1:{sim.port}"
    sides: list[Side] = []
    plain: list[tuple[str, Sequence[str]]] = [
        ("uvicorn", [*BARE_PROXY]),
        ("raw+aiohttp", [*RAW_PROXY, "--client", "aiohttp"]),
        ("raw+raw", [*RAW_PROXY, "--client", "raw"]),
    ]
    for name, argv in plain:
        args = functools.partial(proxy_argv, argv, up)
        server = start_process(name, args, tmp / f"{name}.log", started)
        sides.append(Side(name, server, proxy_targets(f"http://127.0.0.1:{server.port}")))
    config = bastion_config(tmp, sim.port, "bastion")
    key = create_key(config)
    server = start_process(
        "bastion",
        lambda port: [*BASTION, "serve", "--config", str(config), "--port", str(port)],
        tmp / "bastion.log",
        started,
    )
    base = f"http://127.0.0.1:{server.port}"
    sides.append(Side("bastion", server, bastion_targets(base, key)))
    if with_granian:
        server = start_granian("granian", "proxy_app", {"BENCH_UPSTREAM": up}, tmp, started)
        sides.insert(1, Side("granian", server, proxy_targets(f"http://127.0.0.1:{server.port}")))
        gconfig = bastion_config(tmp, sim.port, "bastion-granian")
        gkey = create_key(gconfig)
        env = {"BENCH_BASTION_CONFIG": str(gconfig)}
        server = start_granian("bastion@granian", "bastion_app", env, tmp, started)
        base = f"http://127.0.0.1:{server.port}"
        sides.append(Side("bastion@granian", server, bastion_targets(base, gkey)))
    for side in sides:
        path = "/healthz" if side.name.startswith("bastion") else "/v1/models"
        wait_healthy(side.server, path, timeout=HEALTH_TIMEOUT_S, poll_s=0.02)
        granian = side.name in ("granian", "bastion@granian")
        # granian serves from one worker process (the parent only supervises)
        side.cpu_pid = first_child_pid(side.server) if granian else side.server.pid
    return sides


# -- measurement -----------------------------------------------------------------------------


async def measure(sim: Server, sides: list[Side], s: Settings) -> Cells:
    direct = f"http://127.0.0.1:{sim.port}"
    plan: list[tuple[str, Callable[[str, int], Target], int | None]] = [
        ("direct", lambda mode, ms: sim_target(API, mode, ms, base=direct, key=None), sim.pid)
    ]
    plan += [(x.name, x.target_for, x.cpu_pid) for x in sides]

    def progress(mode: str, conc: int, ms: int, res: dict[str, Result]) -> str:
        d = res["direct"].rps
        return f"{mode} c{conc} {ms} ms: " + ", ".join(
            f"{n} {r.rps:.0f} ({r.rps / d:.0%})" for n, r in res.items() if d
        )

    return await measure_cells(plan, MODES, CELLS, s, progress)


# -- report ----------------------------------------------------------------------------------


def mean(values: Sequence[float | None]) -> float | None:
    vs = [v for v in values if v is not None]
    return statistics.fmean(vs) if vs else None


def summary(cells: Cells, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per side: share of direct at c50 (0 and 50 ms), added p50 at c1, CPU per call by mode."""
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        m: dict[str, Any] = {}
        for mode in MODES:
            for conc, ms in CELLS:
                res = cells[(mode, conc, ms)]
                r, d = res[name], res["direct"]
                if conc == 50:
                    m[f"share_{mode}_{ms}ms"] = share(r, d)
                else:
                    m[f"added_p50_{mode}_{ms}ms"] = added(r, d)
            # CPU per call: the concurrency-50 cells (thousands of calls; the c1 cells' few
            # hundred calls are near /proc's 10 ms tick), both upstream latencies averaged
            m[f"cpu_{mode}_ms"] = mean(
                [cells[(mode, c, ms)][name].cpu_ms_per_req for c, ms in CELLS if c == 50]
            )
            m[f"cpu_{mode}_ms_all"] = [cells[(mode, c, ms)][name].cpu_ms_per_req for c, ms in CELLS]
        m["errors"] = sum(res[name].samples.errors for res in cells.values())
        out[name] = m
    return out


def summary_table(sm: dict[str, dict[str, Any]]) -> str:
    rows = []
    for name, m in sm.items():
        rows.append(
            [
                name,
                "",
                *(pct_or_dash(m[f"share_{mode}_{ms}ms"]) for mode in MODES for ms in (0, 50)),
                *(fmt_ms(m[f"added_p50_{mode}_{ms}ms"]) for mode in MODES for ms in (0, 50)),
                fmt_ms(m["cpu_unary_ms"], 3),
                fmt_ms(m["cpu_stream_ms"], 3),
                str(m["errors"]),
            ]
        )
    header = ["side", "", "share u0", "share u50", "share s0", "share s50"]
    header += ["+p50 u0", "+p50 u50", "+p50 s0", "+p50 s50", "CPU u", "CPU s", "errors"]
    return render(header, rows)


def verdict(sm: dict[str, dict[str, Any]]) -> list[str]:
    out = []
    proxies = [n for n in PROXIES if n in sm and sm[n]["cpu_unary_ms"] is not None]
    if proxies:
        best = min(proxies, key=lambda n: sm[n]["cpu_unary_ms"] + sm[n]["cpu_stream_ms"])
        out.append(
            f"fastest pass-through stack by CPU per call: {best} "
            f"({sm[best]['cpu_unary_ms']:.3f} ms unary, {sm[best]['cpu_stream_ms']:.3f} ms stream; "
            f"share of direct at c50 / 50 ms: {pct_or_dash(sm[best]['share_unary_50ms'])} unary, "
            f"{pct_or_dash(sm[best]['share_stream_50ms'])} stream)"
        )
    b = sm.get("bastion")
    if b is None:
        return out
    for mode in MODES:
        total = b[f"cpu_{mode}_ms"]
        if not total:
            continue
        parts = [
            f"{n} {sm[n][f'cpu_{mode}_ms']:.3f} ({sm[n][f'cpu_{mode}_ms'] / total:.0%})"
            for n in PROXIES
            if n in sm and sm[n][f"cpu_{mode}_ms"] is not None
        ]
        own = total - (sm["uvicorn"][f"cpu_{mode}_ms"] or 0.0)
        out.append(
            f"{mode}: Bastion {total:.3f} ms CPU/call; the server+client floor: "
            + ", ".join(parts)
            + f"; Bastion's own work (bastion - uvicorn) {own:.3f} ms ({own / total:.0%})"
        )
    g = sm.get("bastion@granian")
    if g is not None and g["cpu_unary_ms"] and b["cpu_unary_ms"]:
        out.append(
            f"bastion@granian / bastion, CPU per call: {g['cpu_unary_ms'] / b['cpu_unary_ms']:.2f} "
            f"unary, {g['cpu_stream_ms'] / b['cpu_stream_ms']:.2f} stream; share of direct at "
            f"c50 / 50 ms {pct_or_dash(g['share_unary_50ms'])} unary, "
            f"{pct_or_dash(g['share_stream_50ms'])} stream (bastion: "
            f"{pct_or_dash(b['share_unary_50ms'])}, {pct_or_dash(b['share_stream_50ms'])})"
        )
    floor = min((sm[n]["cpu_unary_ms"] for n in proxies), default=None)
    if floor is not None:
        left = GOAL_CPU_UNARY_MS - floor
        out.append(
            f"goal CPU <= {GOAL_CPU_UNARY_MS} ms per unary call: the fastest floor leaves "
            f"{left:.3f} ms for Bastion's own work (now {b['cpu_unary_ms'] - (sm['uvicorn']['cpu_unary_ms'] or 0):.3f} ms)"
        )
    return out


# -- main ------------------------------------------------------------------------------------


def run(args: argparse.Namespace, s: Settings) -> dict[str, Any]:
    m = meta()
    m["mode"] = "quick" if args.quick else "full"
    version: str | None = None
    why: str | None = "--no-granian" if args.no_granian else None
    if not args.no_granian:
        try:
            version = ensure_granian(args.granian_version)
            log(f"granian: version {version} in {VENV}")
        except Unavailable as exc:
            why = str(exc)
            log(f"granian: not measured: {why}")
    with (
        tempfile.TemporaryDirectory(prefix="bastion-bench-servers-") as d,
        stopping_servers() as started,
    ):
        tmp = Path(d)
        sim = start_sim(tmp, started)
        sim.wait_ready()
        try:
            sides = start_all(tmp, sim, started, version is not None)
        except (RuntimeError, TimeoutError) as exc:
            if version is None:
                raise
            why, version = f"a granian side did not start: {exc}", None
            log(f"granian: not measured: {why}")
            for server in reversed(started[1:]):
                server.stop()
            del started[1:]
            sides = start_all(tmp, sim, started, False)
        log(
            f"pids: simulator {sim.pid}, "
            + ", ".join(f"{x.name} {x.server.pid} (serving {x.cpu_pid})" for x in sides)
        )
        cells = run_async(measure(sim, sides, s))
    names = [n for n in SIDES if n in cells[next(iter(cells))]]
    sm = summary(cells, names)
    m["granian"] = version or f"not measured: {why}"
    print(meta_line("Server stacks side by side (bench/servers.py)", m))
    print(
        f"{m['mode']} run; OpenAI chat completions, 32-token replies, streams 32 chunks 1 ms apart;"
        f" granian {m['granian']}; {s.rounds} interleaved rounds, <= {s.seconds:g} s per side and cell"
    )
    print(
        "share = side rps / direct rps at concurrency 50 (u = unary, s = stream; 0 / 50 ms upstream);"
        " +p50 = side p50 - direct p50 at concurrency 1 (ms);\nCPU = ms of the serving process per"
        " call, mean of the concurrency-50 cells\n"
    )
    print(summary_table(sm))
    print()
    print(detail_table(cells, ttfb=False, cpu_digits=3))
    print()
    for line in verdict(sm):
        print(line)
    return {
        "meta": m,
        "settings": s.__dict__,
        "granian_version": version,
        "granian_not_measured_because": None if version else why,
        "summary": sm,
        "cells": [
            {
                "mode": mode,
                "concurrency": c,
                "upstream_ms": ms,
                "sides": {n: result_json(r, latencies=True) for n, r in res.items()},
            }
            for (mode, c, ms), res in cells.items()
        ],
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a sanity run: 2 rounds, 1.5 s per side")
    p.add_argument("--json", type=Path, help="write the raw numbers to this file")
    p.add_argument("--requests", type=int, help="max requests per side and cell (default 3,000)")
    p.add_argument("--seconds", type=float, help="max seconds per side and cell (default 8)")
    p.add_argument("--rounds", type=int, help="alternating rounds per cell (default 4, at most 10)")
    p.add_argument(
        "--granian-version",
        default=GRANIAN_PIN,
        help=f"the granian release to install (default {GRANIAN_PIN})",
    )
    p.add_argument("--no-granian", action="store_true", help="leave both granian sides out")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    data = run(args, settings_from(args))
    if args.json:
        args.json.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
        print(f"\nraw numbers written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Side by side in one run: direct, nginx pass-through, Bastion and LiteLLM's proxy (issue 16).

Five servers on 127.0.0.1, each on a free port, each stopped by its PID whatever happens:

- ``direct``: the provider simulator, ``bastion sim``, as its own HTTP server (the upstream of
  every other side, and the baseline every ratio is taken against);
- ``nginx``: Debian's nginx (``/usr/sbin/nginx``) as our own foreground process (``daemon
  off``, one worker, a generated config in a temp dir; never the system service), a plain
  pass-through to the simulator (keep-alive upstream pool, buffering off);
- ``bastion``: one ``bastion serve`` worker with the default pipeline (records, the safety
  defaults) plus spend caps and per-user rate limits (as ``guards.py``'s ``on``, high enough
  never to refuse; every call names a user), SQLite store and state in a temp dir; its limit
  of open streams per key is raised from 64 to 256, since at 50 streams in flight the default
  refuses a few (a slot is freed only after the client has read the stream's end);
- ``litellm``: LiteLLM's proxy, 1 worker, installed by this script into its own venv
  (``bench/.venv-litellm``, ignored by git: ``python -m venv`` + ``pip install
  'litellm[proxy]==PIN'``, or the latest release if the pin is not on the index), with a
  ``model_list`` pointing at the simulator's OpenAI-compatible endpoint (``openai/`` prefix,
  ``api_base``), no database, no callbacks, telemetry off and the local cost map. If it
  cannot be installed or started, the script says why and measures the others (exit code
  1 then only with ``--require-litellm``).

Every side gets the same OpenAI chat completions call (32-token reply; a stream is 32 chunks
1 ms apart) with the same simulator pacing: direct and nginx carry the ``x-sim-*`` headers,
Bastion's and LiteLLM's deployments send the same ones. Cells: unary and stream x
(concurrency 1, 0 ms upstream), (concurrency 1, 50 ms upstream), (concurrency 50, 50 ms
upstream), each measured in alternating rounds (direct, nginx, bastion, litellm, direct, ...;
``harness.interleaved``), so the noise of a shared machine hits every side alike. Per side
and cell: requests/s and its share of direct, p50/p99 and the p50 added over direct, the
gateway's CPU per call (``/proc/PID/stat`` of the process serving: nginx's worker, Bastion's
and LiteLLM's single process) and how busy the whole box was. Per gateway: start-up to
healthy (``Popen`` to the first 200 on its health route; ``--starts`` starts, interleaved)
and RSS of its process tree after start-up and after the run.

    .venv/bin/python bench/sidebyside.py [--quick] [--json FILE] [--require-litellm]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil
from harness import (
    Cells,
    Result,
    added,
    added_ttfb,
    detail_table,
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
    stopping,
    with_headers,
    write_gateway_config,
)
from overhead import (
    BASTION,
    Server,
    Target,
    create_key,
    gateway_config,
    target,
)
from procs import (
    Unavailable,
    first_child_pid,
    start_process,
    tree_cpu_s,
    tree_rss_mb,
    wait_healthy,
)
from sbs_gateways import (
    LITELLM_PIN,
    VENV,
    ensure_litellm,
    litellm_target,
    start_litellm,
    start_nginx,
)

API = "openai"
MODES = ("unary", "stream")
CELLS = ((1, 0), (1, 50), (50, 50))  # (concurrency, upstream ms)
SIDES = ("direct", "nginx", "bastion", "litellm")
GATEWAYS = ("nginx", "bastion", "litellm")
LITELLM_MODELS = [(mode, ms) for mode in MODES for ms in sorted({ms for _, ms in CELLS})]
USER = "bench-user"
STREAMS_PER_KEY = 256
CAPS = {  # as guards.py's `on`: never refuses, but every call reserves, checks and settles
    "caps": {"global_daily_usd": 1_000_000.0, "per_user_daily_usd": 1_000_000.0},
    "rate_limits": {
        "per_user": {"requests_per_minute": 10_000_000.0, "tokens_per_minute": 1_000_000_000.0}
    },
}
HEALTH_TIMEOUT_S = {"bastion": 60.0, "nginx": 15.0, "litellm": 180.0}
HEALTH_PATH = {"bastion": "/healthz", "nginx": "/healthz", "litellm": "/health/readiness"}
GOALS = {  # issue 16's goals for Bastion
    "share": 0.90,
    "cpu_unary_ms": 0.5,
    "cpu_stream_ms": 1.5,
    "added_p50_ms": 0.5,
    "startup_s": 1.0,
    "rss_mb": 120.0,
}

# -- settings --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    rounds: int
    requests: int  # per side and cell, over all rounds
    seconds: float  # per side and cell, over all rounds
    warmup: int
    starts: int  # timed starts per gateway (the measured instance is the last)


def settings_from(args: argparse.Namespace) -> Settings:
    base = Settings(2, 300, 2.0, 20, 1) if args.quick else Settings(5, 4_000, 12.0, 50, 3)
    return Settings(
        rounds=max(1, min(args.rounds or base.rounds, 10)),
        requests=min(args.requests or base.requests, 100_000),
        seconds=min(args.seconds or base.seconds, 120.0),
        warmup=base.warmup,
        starts=max(1, min(args.starts or base.starts, 10)),
    )


# -- processes -------------------------------------------------------------------------------


def serving_pid(server: Server) -> int:
    """The process that serves the calls: nginx's one worker, otherwise the process itself."""
    if server.name == "nginx":
        return first_child_pid(server)
    kids = psutil.Process(server.pid).children(recursive=True)
    if kids:
        log(
            f"{server.name}: {len(kids)} child process(es); CPU per call is charged to pid {server.pid}"
        )
    return server.pid


@dataclass
class Gateway:
    name: str
    server: Server
    target_for: Any  # (mode, upstream ms) -> Target
    starts_s: list[float] = field(default_factory=list)
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    cpu_pid: int = 0


# -- measurement -----------------------------------------------------------------------------


def start_bastion(
    cfg: dict[str, Any], tmp: Path, i: int, started: list[Server]
) -> tuple[Server, str, float]:
    """``bastion serve`` with its own store, state and spill file; the key is created (and the
    store with it) before the clock starts, as in ``startup.py``. Returns it, a key, ``t0``."""
    d = tmp / f"bastion-{i}"
    config = write_gateway_config(cfg, d)
    key = create_key(config)
    t0 = time.perf_counter()
    server = start_process(
        "bastion",
        lambda port: [*BASTION, "serve", "--config", str(config), "--port", str(port)],
        d / "gateway.log",
        started,
    )
    return server, key, t0


def start_all(
    tmp: Path, sim: Server, s: Settings, started: list[Server], litellm_ok: bool
) -> tuple[dict[str, Gateway], str | None]:
    """``s.starts`` timed starts of every gateway, interleaved; the last of each stays up.

    Returns the gateways and, if LiteLLM was to be measured but did not become healthy, why.
    """
    cfg = gateway_config(tmp, sim.port, sorted({ms for _, ms in CELLS}))
    cfg["cost"] = CAPS
    # The default 64 open streams per key refuses some calls at 50 in flight (a stream's slot
    # is freed after the client has read its end), and a refusal is not what is measured here.
    cfg["server"] = {"max_concurrent_streams_per_key": STREAMS_PER_KEY}
    names = [n for n in GATEWAYS if n != "litellm" or litellm_ok]
    gws: dict[str, Gateway] = {}
    why: str | None = None
    for i in range(s.starts):
        last = i == s.starts - 1
        for name in list(names):
            key = ""
            if name == "nginx":
                t0 = time.perf_counter()
                server = start_nginx(tmp, sim.port, i, started)
            elif name == "bastion":
                server, key, t0 = start_bastion(cfg, tmp, i, started)
            else:
                t0 = time.perf_counter()
                server = start_litellm(tmp, sim.port, i, started, LITELLM_MODELS)
            try:
                took = wait_healthy(
                    server, HEALTH_PATH[name], timeout=HEALTH_TIMEOUT_S[name], started=t0
                )
            except (RuntimeError, TimeoutError) as exc:
                if name != "litellm":
                    raise
                server.stop()
                started.remove(server)
                why = f"the LiteLLM proxy did not become healthy: {exc}"
                log(f"litellm: not measured: {why}")
                names.remove(name)
                gws.pop(name, None)
                continue
            gw = gws.setdefault(name, Gateway(name, server, None))
            gw.starts_s.append(took)
            log(f"{name} start {i + 1}/{s.starts}: healthy after {took:.2f} s")
            if last:
                gw.server = server
                gw.rss_start_mb = tree_rss_mb(server.pid)
                gw.cpu_pid = serving_pid(server)
                gw.target_for = target_factory(name, f"http://127.0.0.1:{server.port}", key)
            else:
                server.stop()
                started.remove(server)
    return gws, why


def target_factory(name: str, base: str, key: str) -> Any:
    if name == "nginx":
        return lambda mode, ms: target(API, mode, ms, base=base, key=None)
    if name == "bastion":
        return lambda mode, ms: with_headers(
            target(API, mode, ms, base=base, key=key), {"x-bastion-user": USER}
        )
    return lambda mode, ms: litellm_target(base, mode, ms)


async def measure(sim: Server, gws: dict[str, Gateway], s: Settings) -> Cells:
    direct_base = f"http://127.0.0.1:{sim.port}"
    sides: list[tuple[str, Callable[[str, int], Target], int | None]] = [
        ("direct", lambda mode, ms: target(API, mode, ms, base=direct_base, key=None), sim.pid)
    ]
    sides += [(n, g.target_for, g.cpu_pid) for n, g in gws.items()]

    def progress(mode: str, conc: int, ms: int, res: dict[str, Result]) -> str:
        d = res["direct"].rps
        return f"{mode} conc {conc} up {ms} ms: " + ", ".join(
            f"{n} {r.rps:.0f} rps ({r.rps / d:.0%})" if d else f"{n} {r.rps:.0f} rps"
            for n, r in res.items()
        )

    return await measure_cells(sides, MODES, CELLS, s, progress)


# -- report ----------------------------------------------------------------------------------


def span(values: Sequence[float | None], fmt: str) -> str:
    vs = [v for v in values if v is not None]
    if not vs:
        return "-"
    lo, hi = min(vs), max(vs)
    return fmt.format(lo) if f"{lo:.2f}" == f"{hi:.2f}" else f"{fmt.format(lo)}–{fmt.format(hi)}"


def summary(cells: Cells, gws: dict[str, Gateway]) -> dict[str, dict[str, Any]]:
    """Per gateway, the issue's measures (numbers, for the JSON and the table)."""
    out: dict[str, dict[str, Any]] = {}
    for name in GATEWAYS:
        if name not in gws:
            continue
        g = gws[name]
        m: dict[str, Any] = {}
        for mode in MODES:
            big = cells[(mode, 50, 50)]
            m[f"share_{mode}"] = share(big[name], big["direct"])
            m[f"cpu_{mode}_ms"] = [cells[(mode, c, ms)][name].cpu_ms_per_req for c, ms in CELLS]
            for c, ms in CELLS:
                if c == 1:
                    res = cells[(mode, c, ms)]
                    m[f"added_p50_{mode}_{ms}ms"] = added(res[name], res["direct"])
                    if mode == "stream":
                        m[f"added_ttfb_p50_{ms}ms"] = added_ttfb(res[name], res["direct"])
        m["errors"] = sum(res[name].samples.errors for res in cells.values())
        m["startup_s"] = statistics.median(g.starts_s)
        m["starts_s"] = g.starts_s
        m["rss_start_mb"] = g.rss_start_mb
        m["rss_end_mb"] = g.rss_end_mb
        out[name] = m
    return out


def ms_or_dash(v: float | None) -> str:
    return "-" if v is None else f"{v:+.2f} ms"


def summary_table(sm: dict[str, dict[str, Any]]) -> str:
    names = [n for n in ("bastion", "litellm", "nginx") if n in sm]
    label = {"bastion": "Bastion", "litellm": "LiteLLM (1 worker)", "nginx": "nginx pass-through"}
    rows = [
        ["throughput c50, 50 ms up, share of direct", ""]
        + [
            f"{pct_or_dash(sm[n]['share_unary'])} unary, {pct_or_dash(sm[n]['share_stream'])} stream"
            for n in names
        ],
        ["gateway CPU per call (c1 0/50 ms, c50)", ""]
        + [
            f"{span(sm[n]['cpu_unary_ms'], '{:.2f}')} ms unary, "
            f"{span(sm[n]['cpu_stream_ms'], '{:.2f}')} ms stream"
            for n in names
        ],
        ["added p50 at c1, 0 ms up", ""]
        + [
            f"{ms_or_dash(sm[n]['added_p50_unary_0ms'])} unary, "
            f"{ms_or_dash(sm[n]['added_p50_stream_0ms'])} stream"
            f" ({ms_or_dash(sm[n]['added_ttfb_p50_0ms'])} first byte)"
            for n in names
        ],
        ["added p50 at c1, 50 ms up", ""]
        + [
            f"{ms_or_dash(sm[n]['added_p50_unary_50ms'])} unary, "
            f"{ms_or_dash(sm[n]['added_p50_stream_50ms'])} stream"
            f" ({ms_or_dash(sm[n]['added_ttfb_p50_50ms'])} first byte)"
            for n in names
        ],
        ["start-up to healthy (p50)", ""] + [f"{sm[n]['startup_s']:.2f} s" for n in names],
        ["RSS after start -> after run", ""]
        + [f"{sm[n]['rss_start_mb']:.0f} -> {sm[n]['rss_end_mb']:.0f} MB" for n in names],
        ["failed calls", ""] + [str(sm[n]["errors"]) for n in names],
    ]
    return render(["measure", "", *(label[n] for n in names)], rows)


def goals(b: dict[str, Any]) -> list[str]:
    def v(ok: bool) -> str:
        return "MEET" if ok else "MISS"

    out = []
    worst_share = min(
        (x for x in (b["share_unary"], b["share_stream"]) if x is not None), default=0.0
    )
    out.append(
        f"{v(worst_share >= GOALS['share'])}  throughput >= 90% of direct (c50, 50 ms): worst {worst_share:.0%}"
    )
    for mode, key in (("unary", "cpu_unary_ms"), ("stream", "cpu_stream_ms")):
        worst = max((x for x in b[f"cpu_{mode}_ms"] if x is not None), default=float("inf"))
        out.append(
            f"{v(worst <= GOALS[key])}  gateway CPU <= {GOALS[key]:g} ms per {mode} call: worst {worst:.2f} ms"
        )
    adds = [b[k] for k in b if k.startswith("added_") and b[k] is not None]
    worst_add = max(adds, default=float("inf"))
    out.append(
        f"{v(worst_add <= GOALS['added_p50_ms'])}  added p50 <= 0.5 ms at c1 (whole call, stream first byte): worst {worst_add:+.2f} ms"
    )
    out.append(
        f"{v(b['startup_s'] <= GOALS['startup_s'])}  start-up <= 1 s to healthy: {b['startup_s']:.2f} s"
    )
    rss = max(b["rss_start_mb"], b["rss_end_mb"])
    out.append(f"{v(rss <= GOALS['rss_mb'])}  RSS <= 120 MB: {rss:.0f} MB")
    return out


# -- main ------------------------------------------------------------------------------------


def run(args: argparse.Namespace, s: Settings) -> tuple[dict[str, Any], bool]:
    m = meta()
    m["mode"] = "quick" if args.quick else "full"
    litellm_version: str | None = None
    why: str | None = None
    if args.no_litellm:
        why = "--no-litellm"
    else:
        try:
            litellm_version = ensure_litellm(args.litellm_version, log)
            log(f"litellm: version {litellm_version} in {VENV}")
        except Unavailable as exc:
            why = str(exc)
            log(f"litellm: not measured: {why}")
    with tempfile.TemporaryDirectory(prefix="bastion-bench-sbs-") as d, stopping() as started:
        tmp = Path(d)
        sim = start_sim(tmp, started)
        sim.wait_ready()
        gws, failed = start_all(tmp, sim, s, started, litellm_version is not None)
        if failed is not None:
            why, litellm_version = failed, None
        log(
            "pids: simulator "
            + str(sim.pid)
            + "".join(f", {n} {g.server.pid} (serving {g.cpu_pid})" for n, g in gws.items())
        )
        cpu0 = {n: tree_cpu_s(g.server.pid) for n, g in gws.items()}
        cells = run_async(measure(sim, gws, s))
        for g in gws.values():
            g.rss_end_mb = tree_rss_mb(g.server.pid)
        tree_cpu = {n: tree_cpu_s(g.server.pid) - cpu0[n] for n, g in gws.items()}
    sm = summary(cells, gws)
    m["litellm"] = litellm_version or f"not measured: {why}"
    print(meta_line("Side by side: direct, nginx, Bastion, LiteLLM (bench/sidebyside.py)", m))
    print(
        f"{m['mode']} run; OpenAI chat completions, 32-token replies, streams 32 chunks 1 ms apart;"
        f" LiteLLM {m['litellm']}; Bastion with caps, rate limits, records and the safety defaults"
    )
    print(
        "share = side rps / direct rps in the same interleaved rounds; added p50 = side p50 - direct p50\n"
    )
    print(summary_table(sm))
    print()
    print(detail_table(cells, ttfb=True, cpu_digits=2))
    if "bastion" in sm:
        print("\nBastion against issue 16's goals:")
        for line in goals(sm["bastion"]):
            print("  " + line)
    if "bastion" in sm and "litellm" in sm:
        b, lt = sm["bastion"], sm["litellm"]
        ratios = [
            lt_c / b_c
            for mode in MODES
            for b_c, lt_c in zip(b[f"cpu_{mode}_ms"], lt[f"cpu_{mode}_ms"], strict=True)
            if b_c and lt_c
        ]
        if ratios:
            print(
                f"LiteLLM CPU per call / Bastion's: {min(ratios):.1f}x–{max(ratios):.1f}x over the cells"
            )
    data = {
        "meta": m,
        "settings": s.__dict__,
        "litellm_version": litellm_version,
        "litellm_not_measured_because": why,
        "summary": sm,
        "gateway_tree_cpu_s": tree_cpu,
        "cells": [
            {
                "mode": mode,
                "concurrency": c,
                "upstream_ms": ms,
                "sides": {n: result_json(r, ttfb=True) for n, r in res.items()},
            }
            for (mode, c, ms), res in cells.items()
        ],
    }
    return data, litellm_version is not None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--quick",
        action="store_true",
        help="a sanity run: 2 rounds, 2 s per side and cell, 1 start",
    )
    p.add_argument("--json", type=Path, help="write the raw numbers to this file")
    p.add_argument(
        "--requests", type=int, help="max measured requests per side and cell (default 4,000)"
    )
    p.add_argument(
        "--seconds", type=float, help="max measured seconds per side and cell (default 12)"
    )
    p.add_argument("--rounds", type=int, help="alternating rounds per cell (default 5, at most 10)")
    p.add_argument(
        "--starts", type=int, help="timed starts per gateway, interleaved (default 3, at most 10)"
    )
    p.add_argument(
        "--litellm-version",
        default=LITELLM_PIN,
        help=f"the LiteLLM release to install (default {LITELLM_PIN})",
    )
    p.add_argument(
        "--no-litellm", action="store_true", help="measure direct, nginx and Bastion only"
    )
    p.add_argument(
        "--require-litellm", action="store_true", help="exit 1 if LiteLLM could not be measured"
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    data, had_litellm = run(args, settings_from(args))
    if args.json:
        args.json.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
        print(f"\nraw numbers written to {args.json}")
    if args.require_litellm and not had_litellm:
        print(f"LiteLLM was not measured: {data['litellm_not_measured_because']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the cost guards add: Bastion with and without spend caps and rate limits, embedded and Redis.

One simulator and four ``bastion serve`` processes on 127.0.0.1, all measured in the same
rounds (off, on, off+redis, on+redis, off, on, ...):

- ``off``       the default pipeline: no caps, no rate limits, embedded state (SQLite file);
- ``on``        cost guards on, embedded state: a global and a per-user daily $ cap (high
                enough never to refuse), a per-user rate limit (requests/minute) and a
                per-user tokens-per-minute limit (both high enough never to refuse);
- ``off+redis`` the default pipeline with ``state.url: redis://...`` (breakers and the kill
                switch then live in Redis too, so this isolates the backend's own cost);
- ``on+redis``  the cost guards with Redis state;
- ``off'``      a second default gateway, identical to ``off``: ``off' - off`` is the noise
                floor of comparing two processes on this machine (an A/A test).

Every request names a user (``X-Bastion-User``) so the per-user cap and limits apply. For each
API x mode x concurrency (1, 10) at 0 ms upstream (no time to first token, no gap between
stream chunks, 32-token replies), it prints p50/p99 for each process and the guards' added
latency and CPU per request: on - off (embedded) and on+redis - off (what turning the guards
on with Redis costs against the default deployment), with on+redis - off+redis alongside.
Targets (issue): added p50 <= 0.5 ms embedded and <= 1.5 ms with Redis on loopback.
The Redis server's CPU (``/proc`` of ``redis-server``; shared, so other clients' work can
show up) is charged per request to each side. A second table times each counter-store
operation the guards use, in this process, on the memory, embedded and Redis backends,
to explain the end-to-end figures.

Redis keys use a unique prefix and are deleted afterwards (SCAN + DEL, never FLUSHDB).

    .venv/bin/python bench/guards.py [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from harness import (
    REDIS_URL,
    Result,
    find_pid,
    fmt_ms,
    interleaved,
    log,
    meta,
    meta_line,
    redis_cleanup,
    redis_ping,
    render,
    run_async,
    start_gateway,
    start_sim,
    stopping,
    unique,
    with_headers,
)
from overhead import APIS, MODES, gateway_config, target

CONCURRENCY = (1, 10)
VARIANTS = ("off", "on", "off+redis", "on+redis", "off'")
USER = {"x-bastion-user": "bench-user-1"}
TARGETS = {"embedded": 0.5, "redis": 1.5}

GUARDS = {
    "caps": {"global_daily_usd": 1_000_000.0, "per_user_daily_usd": 1_000_000.0},
    "rate_limits": {
        "per_user": {"requests_per_minute": 10_000_000.0, "tokens_per_minute": 1_000_000_000.0}
    },
}


def configs(tmp: Path, sim_port: int, prefix: str) -> dict[str, dict[str, Any]]:
    base = gateway_config(tmp, sim_port, [0])
    for m in base["models"].values():
        for d in m["deployments"]:
            d["headers"]["x-sim-chunk-ms"] = "0"  # 0 ms upstream: no pacing at all
    for key in ("store", "state", "observability"):
        base.pop(key, None)  # start_gateway gives each process its own files
    redis = {"url": REDIS_URL, "prefix": prefix}
    return {
        "off": base,
        "off'": base,  # a second, identical default gateway: the A/A noise floor
        "on": {**base, "cost": GUARDS},
        "off+redis": {**base, "state": redis},
        "on+redis": {**base, "cost": GUARDS, "state": redis},
    }


def diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    m = meta()
    prefix = unique("guards")
    redis_ping()
    redis_pid = find_pid("redis-server")
    cells: list[dict[str, Any]] = []
    ops: list[list[str]] = []
    lib: list[list[str]] = []
    try:
        with stopping() as started:
            sim = start_sim(tmp, started)
            gws = {
                name: start_gateway(name.replace("+", "_").replace("'", "2"), cfg, tmp, started)
                for name, cfg in configs(tmp, sim.port, prefix).items()
            }
            for s in started:
                s.wait_ready()
            log("pids: " + ", ".join(f"{s.name} {s.pid}" for s in started))
            matrix = [(a, mo, c) for a in args.api for mo in args.mode for c in args.conc]
            for i, (api, mode, conc) in enumerate(matrix, 1):
                sides = [
                    (
                        name,
                        with_headers(
                            target(api, mode, 0, base=f"http://127.0.0.1:{gw.port}", key=key),
                            USER,
                        ),
                        gw.pid,
                    )
                    for name, (gw, key) in gws.items()
                ]
                res = await interleaved(
                    sides,
                    conc,
                    rounds=args.rounds,
                    requests=args.requests,
                    seconds=args.seconds,
                    warmup=max(50, 2 * conc),
                    watch_pid=redis_pid,
                )
                cells.append({"api": api, "mode": mode, "conc": conc, "results": res})
                log(
                    f"[{i}/{len(matrix)}] {api} {mode} conc {conc}: "
                    + ", ".join(f"{n} p50 {fmt_ms(r.p(0.5))}" for n, r in res.items())
                )
        log("counter-store operations, in process ...")
        ops = await store_ops(tmp, prefix, args.op_count)
        log("the gateway as a library, in process ...")
        lib = await in_process(tmp, prefix, args.op_count)
    finally:
        n = redis_cleanup(prefix)
        log(f"deleted {n} Redis keys under {prefix}:")
    report = tables(cells)
    print(meta_line("Bastion cost guards, embedded vs Redis state", m))
    print(report)
    print()
    print(
        f"counter-store operations the guards call, one at a time in this process"
        f" ({args.op_count} each; CPU = this process's CPU / operation, in microseconds):"
    )
    print()
    print(render(["backend", "operation", "p50 us", "p99 us", "CPU us/op"], ops))
    print()
    print(
        f"the same configs as a library in this process (Gateway.messages, built-in simulator,"
        f" no HTTP; {args.op_count} calls each; guards' CPU = on - off of the same state backend):"
    )
    print()
    print(render(["config", "p50 us", "p99 us", "CPU us/call", "guards' CPU us/call"], lib))
    return {
        "meta": m,
        "store_ops": ops,
        "library": lib,
        "settings": vars(args) | {"json": None},
        "cells": [
            {
                **{k: v for k, v in c.items() if k != "results"},
                "results": {
                    n: {
                        "requests": r.samples.done,
                        "errors": r.samples.errors,
                        "error_examples": r.samples.error_examples,
                        "rps": r.rps,
                        "p50_ms": r.p(0.5),
                        "p99_ms": r.p(0.99),
                        "ttfb_p50_ms": r.ttfb(0.5),
                        "ttfb_p99_ms": r.ttfb(0.99),
                        "cpu_ms_per_req": r.cpu_ms_per_req,
                        "redis_cpu_ms_per_req": r.watched_ms_per_req,
                        "busy_pct": r.busy_pct,
                        "latencies_ms": [round(v, 3) for v in r.samples.latencies_ms],
                    }
                    for n, r in c["results"].items()
                },
            }
            for c in cells
        ],
    }


def tables(cells: Sequence[dict[str, Any]]) -> str:
    raw_rows = []
    for c in cells:
        res: dict[str, Result] = c["results"]
        for name in VARIANTS:
            r = res[name]
            raw_rows.append(
                [
                    c["api"],
                    c["mode"],
                    str(c["conc"]),
                    name,
                    str(r.samples.done),
                    f"{r.rps:.0f}",
                    f"{fmt_ms(r.p(0.5))}/{fmt_ms(r.p(0.99))}",
                    "-" if r.ttfb(0.5) is None else f"{fmt_ms(r.ttfb(0.5))}/{fmt_ms(r.ttfb(0.99))}",
                    fmt_ms(r.cpu_ms_per_req),
                    fmt_ms(r.watched_ms_per_req) if "redis" in name else "-",
                    f"{r.busy_pct:.0f}",
                    str(r.samples.errors),
                ]
            )
    raw = render(
        [
            "api",
            "mode",
            "conc",
            "config",
            "requests",
            "rps",
            "p50/p99",
            "TTFB p50/p99",
            "CPU ms/req",
            "redis CPU ms/req",
            "box busy%",
            "errors",
        ],
        raw_rows,
    )
    rows = []
    worst: dict[str, tuple[float, str]] = {}
    for c in cells:
        res = c["results"]
        off, on, roff, ron, off2 = (res[v] for v in VARIANTS)
        where = f"{c['api']} {c['mode']} conc {c['conc']}"
        for label, a, b, kind in (
            ("on - off", on, off, "embedded"),
            ("on+redis - off", ron, off, "redis"),
            ("on+redis - off+redis", ron, roff, None),
            ("A/A: off' - off", off2, off, None),
        ):
            p50 = diff(a.p(0.5), b.p(0.5))
            if kind is not None and p50 is not None and (kind not in worst or p50 > worst[kind][0]):
                worst[kind] = (p50, where)
            rows.append(
                [
                    c["api"],
                    c["mode"],
                    str(c["conc"]),
                    label,
                    fmt_ms(p50),
                    fmt_ms(diff(a.p(0.99), b.p(0.99))),
                    fmt_ms(diff(a.ttfb(0.5), b.ttfb(0.5))),
                    fmt_ms(diff(a.cpu_ms_per_req, b.cpu_ms_per_req)),
                    "-"
                    if kind is None or p50 is None
                    else ("PASS" if p50 <= TARGETS[kind] else "MISS"),
                ]
            )
    added = render(
        [
            "api",
            "mode",
            "conc",
            "guards added",
            "p50 ms",
            "p99 ms",
            "TTFB p50 ms",
            "CPU ms/req",
            "target",
        ],
        rows,
    )
    lines = [
        "latencies in ms, whole response (to the last body byte); TTFB = first SSE body byte;",
        "CPU = that gateway process's user+sys CPU / requests (clock ticks of 10 ms); redis CPU =",
        "the redis-server process's CPU over the same rounds / requests",
        "",
        raw,
        "",
        "added by the guards (difference of the two processes' figures in the same rounds):",
        "",
        added,
        "",
        "targets:",
    ]
    aa = [
        abs(d)
        for c in cells
        if (d := diff(c["results"]["off'"].p(0.5), c["results"]["off"].p(0.5))) is not None
    ]
    for kind, limit in TARGETS.items():
        if kind in worst:
            v, where = worst[kind]
            label = "embedded (on - off)" if kind == "embedded" else "Redis (on+redis - off)"
            lines.append(
                f"  {'PASS' if v <= limit else 'MISS'}  guards' added p50 <= {limit:g} ms, {label}:"
                f" worst {v:.2f} ms ({where})"
            )
    if aa:
        lines.append(
            f"  (noise floor: two identical default gateways differed by up to {max(aa):.2f} ms p50"
            f" in the same rounds, A/A rows above)"
        )
    return "\n".join(lines)


async def in_process(tmp: Path, prefix: str, n: int) -> list[list[str]]:
    """The same four configs as a library (``Gateway.messages``, built-in simulator): no HTTP."""
    import bastion
    from bastion.config import load_config

    body = {
        "model": "claude-sonnet-5",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": "Where is my parcel?"}],
    }
    redis = {"url": REDIS_URL, "prefix": prefix}
    configs: dict[str, dict[str, Any]] = {
        "off": {},
        "on": {"cost": GUARDS},
        "off+redis": {"state": redis},
        "on+redis": {"cost": GUARDS, "state": redis},
    }
    cpu: dict[str, float] = {}
    rows = []
    for name, over in configs.items():
        d = tmp / f"inproc-{name.replace('+', '_')}"
        d.mkdir()
        cfg = load_config(
            None,
            env={},  # no provider keys: the built-in simulator serves every model
            overrides={
                "store": {"url": f"sqlite:///{d / 'b.db'}"},
                "state": {"url": f"sqlite:///{d / 'state.db'}"},
                "observability": {"spill_path": str(d / "spill.jsonl")},
                **over,
            },
        )
        async with bastion.Gateway(cfg) as gw:
            for _ in range(200):
                await gw.messages(body, user="bench-user-1")
            lat = []
            cpu0 = time.process_time()
            for _ in range(n):
                t0 = time.perf_counter()
                await gw.messages(body, user="bench-user-1")
                lat.append((time.perf_counter() - t0) * 1e6)
            cpu[name] = (time.process_time() - cpu0) * 1e6 / n
        lat.sort()
        base = "off" if "redis" not in name else "off+redis"
        rows.append(
            [
                name,
                f"{lat[n // 2]:.0f}",
                f"{lat[int(n * 0.99)]:.0f}",
                f"{cpu[name]:.0f}",
                "-" if name == base else f"{cpu[name] - cpu[base]:+.0f}",
            ]
        )
    return rows


async def store_ops(tmp: Path, prefix: str, n: int) -> list[list[str]]:
    """Each counter-store call the cost guards and breakers make, timed one at a time."""
    from bastion.state import open_state

    backends = {
        "memory": "memory://",
        "embedded": f"sqlite:///{tmp / 'ops-state.db'}",
        "redis": REDIS_URL,
    }
    rows: list[list[str]] = []
    for backend, url in backends.items():
        st = open_state(url, prefix=prefix)
        try:
            rows += [[backend, *r] for r in await time_ops(st, n)]
        finally:
            await st.close()
    return rows


async def time_ops(st: Any, n: int) -> list[list[str]]:
    from bastion.state import BreakerPolicy, Cap
    from bastion.state.plan import AllowBreaker, Charge, RecordBreaker, Reserve, Settle, Take

    caps = [Cap("spend:ops:global", 1e9, 3600.0), Cap("spend:ops:user:u1", 1e9, 3600.0)]
    policy = BreakerPolicy()
    ops: dict[str, Callable[[int], Awaitable[Any]]] = {
        "reserve (2 caps)": lambda i: st.reserve(f"r{i}", caps, 0.003, 180.0),
        "settle": lambda i: st.settle(f"r{i}", 0.001),
        "take (tokens/min check)": lambda i: st.take("tpm:user:u1", 1e9 / 60, 1e9, 0.0),
        "take (requests/min)": lambda i: st.take("rpm:user:u1", 1e7 / 60, 1e7 / 6),
        "charge (tokens/min)": lambda i: st.charge("tpm:user:u1", 1e9 / 60, 1e9, 100.0),
        "breaker_allow": lambda i: st.breaker_allow("breaker:ops", policy),
        "breaker_record": lambda i: st.breaker_record("breaker:ops", True, policy),
        # what a call now sends instead: one batch to be admitted, one to settle
        "admit (tpm, rpm, breaker, 2 caps)": lambda i: st.admit(
            [
                Take("tpm:user:u2", 1e9 / 60, 1e9, 0.0),
                Take("rpm:user:u2", 1e7 / 60, 1e7 / 6),
                AllowBreaker("breaker:ops2", policy),
                Reserve(f"b{i}", tuple(caps), 0.003, 180.0),
            ]
        ),
        "finish (settle, tpm, breaker)": lambda i: st.finish(
            [
                Settle(f"b{i}", tuple(caps), 0.001),
                Charge("tpm:user:u2", 1e9 / 60, 1e9, 100.0),
                RecordBreaker("breaker:ops2", True, policy),
            ]
        ),
    }
    for i in range(50):  # warm: connections, script loading, the first file write
        for op in ops.values():
            await op(-1 - i)
    rows = []
    for name, op in ops.items():
        lat = []
        cpu0 = time.process_time()
        for i in range(n):
            t0 = time.perf_counter()
            await op(i)
            lat.append((time.perf_counter() - t0) * 1e6)
        cpu = (time.process_time() - cpu0) * 1e6 / n
        lat.sort()
        rows.append(
            [name, f"{lat[len(lat) // 2]:.0f}", f"{lat[int(len(lat) * 0.99)]:.0f}", f"{cpu:.0f}"]
        )
    return rows


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a sanity run: fewer requests, 2 rounds")
    p.add_argument("--requests", type=int, help="max requests per process and cell (1,500)")
    p.add_argument("--seconds", type=float, help="max seconds per process and cell (5)")
    p.add_argument("--rounds", type=int, help="alternating rounds per cell (5)")
    p.add_argument("--api", nargs="+", choices=APIS, default=APIS)
    p.add_argument("--mode", nargs="+", choices=MODES, default=MODES)
    p.add_argument("--conc", nargs="+", type=int, default=CONCURRENCY)
    p.add_argument("--op-count", type=int, default=2_000, help="calls per store operation")
    p.add_argument("--json", type=Path, help="write the raw numbers to this file")
    args = p.parse_args(argv)
    args.requests = args.requests or (300 if args.quick else 1_500)
    args.seconds = args.seconds or (1.5 if args.quick else 5.0)
    args.rounds = args.rounds or (2 if args.quick else 5)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    import tempfile

    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bastion-bench-guards-") as d:
        data = run_async(run(args, Path(d)))
    if args.json:
        args.json.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
        print(f"\nraw numbers written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

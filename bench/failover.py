"""Failover: serving from the fallback when the primary's breaker is open, and under a 30% failing primary.

One simulator and three ``bastion serve`` processes on 127.0.0.1. Every alias has a primary
deployment (a provider entry of its own, ``sim-primary-API-MODE``, on the same simulator, so
each alias has its own breaker) and a fallback (``sim-API``); the simulator is told the pacing (0 ms to first token, no gap between chunks,
32-token replies) and, on the primary only, a fault in an ``x-sim-fault`` header.

(a) breaker open. Gateway ``open``: ``reliability.breaker.failure_threshold: 1`` and a one-hour
    cooldown; the primary always answers 503. Warm-up requests run until the breaker is open
    (a reply served in 1 attempt by the fallback), then, in alternating rounds at
    concurrency 1: direct to the simulator with the fallback's request, through Bastion on the
    alias whose primary is open (``open``), and through Bastion on an alias with only the
    fallback (``single``, the plain gateway overhead). Target: ``open`` p50 - direct p50
    <= 2 ms. The ``served`` column shows how each reply was served (attempts@deployment).

(b) 30% failing primary. The primary has ``fail_rate:0.3;seed:7`` (a deterministic 30% of
    its requests answer 500) and a 1 s timeout (``total``; ``connect`` + ``first_token`` for
    streams). Two gateways: ``rate`` with the default retry and breaker settings (the breaker
    opens on 5 consecutive failures, which a 30% failure rate produces by chance, and then
    skips the primary for its 10 s cooldown), and ``rate-nobreaker`` with the breaker off, so
    every call tries the primary and the failover path is taken every time it fails twice.
    N requests (2,000) at concurrency 10 through each, and the same number direct to the
    fallback, alternating. Targets: 100% success through Bastion, and Bastion p99 <= the
    primary's timeout + the fallback's direct p99.

    .venv/bin/python bench/failover.py [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from harness import (
    Result,
    fmt_ms,
    interleaved,
    log,
    meta,
    meta_line,
    one_request,
    render,
    run_async,
    start_gateway,
    start_sim,
    stopping,
)
from overhead import APIS, MODES, SIM_MODEL, STREAM_CHUNKS, Samples, client, target

PRIMARY_TIMEOUT_S = 1.0
TIMEOUTS = {"connect": 0.25, "first_token": 0.75, "idle": 1.0, "total": PRIMARY_TIMEOUT_S}
RATE_FAULT = "fail_rate:0.3;seed:7"
OPEN_TARGET_MS = 2.0
PACING = {"x-sim-ttft-ms": "0", "x-sim-chunk-ms": "0", "x-sim-reply-tokens": str(STREAM_CHUNKS)}


def providers(sim_port: int) -> dict[str, Any]:
    sim = f"http://127.0.0.1:{sim_port}"
    out: dict[str, Any] = {}
    urls = {"anthropic": sim, "openai": sim + "/v1"}
    for api in APIS:
        out[f"sim-{api}"] = {"kind": api, "base_url": urls[api]}
        for mode in MODES:
            out[f"sim-primary-{api}-{mode}"] = {"kind": api, "base_url": urls[api]}
    return out


def fallback(api: str) -> dict[str, Any]:
    return {"provider": f"sim-{api}", "model": SIM_MODEL[api], "headers": dict(PACING)}


def primary(
    api: str, mode: str, fault: str, timeouts: dict[str, float] | None = None
) -> dict[str, Any]:
    dep: dict[str, Any] = {
        "provider": f"sim-primary-{api}-{mode}",
        "model": SIM_MODEL[api],
        "headers": {**PACING, "x-sim-fault": fault},
    }
    if timeouts:
        dep["timeouts"] = timeouts
    return dep


def open_config(sim_port: int) -> dict[str, Any]:
    models: dict[str, Any] = {}
    for api in APIS:
        for mode in MODES:
            models[f"open-{api}-{mode}"] = {
                "deployments": [primary(api, mode, "status:503"), fallback(api)]
            }
            models[f"single-{api}-{mode}"] = {"deployments": [fallback(api)]}
    return {
        "reliability": {"breaker": {"failure_threshold": 1, "cooldown_seconds": 3600.0}},
        "providers": providers(sim_port),
        "models": models,
    }


def rate_config(sim_port: int, *, breaker: bool) -> dict[str, Any]:
    models = {
        f"rate-{api}-{mode}": {
            "deployments": [primary(api, mode, RATE_FAULT, TIMEOUTS), fallback(api)],
        }
        for api in APIS
        for mode in MODES
    }
    cfg: dict[str, Any] = {"providers": providers(sim_port), "models": models}
    if not breaker:
        cfg["reliability"] = {"breaker": {"enabled": False}}
    return cfg


def gw_target(api: str, mode: str, alias: str, port: int, key: str) -> Any:
    """``overhead.target`` with another alias: its model name is the only thing that differs."""
    t = target(api, mode, 0, base=f"http://127.0.0.1:{port}", key=key)
    body = orjson.loads(t.body)
    body["model"] = alias
    return type(t)(t.url, t.headers, orjson.dumps(body), t.stream, t.end)


def direct_target(api: str, mode: str, sim_port: int) -> Any:
    t = target(api, mode, 0, base=f"http://127.0.0.1:{sim_port}", key=None)
    return type(t)(t.url, {**t.headers, **PACING}, t.body, t.stream, t.end)


async def open_breakers(targets: Sequence[Any]) -> dict[str, int]:
    """Send requests on each alias until one is served by the fallback alone (bounded)."""
    warm: dict[str, int] = {}
    async with client(1) as session:
        for t in targets:
            for n in range(1, 51):
                tally: Counter[str] = Counter()
                await one_request(session, t, Samples(), tally)
                if any(k.startswith("1@") and k.endswith("#1") for k in tally):
                    warm[t.url + t.body.decode()[:60]] = n
                    break
            else:
                raise RuntimeError(f"the primary's breaker never opened for {t.url}")
            await asyncio.sleep(0)
    return warm


def served(tally: Counter[str]) -> str:
    return ", ".join(f"{k.split('/')[0]}#{k.rsplit('#', 1)[1]} x{v}" for k, v in tally.items())


async def part_a(args: argparse.Namespace, tmp: Path, started: list[Any]) -> list[dict[str, Any]]:
    sim = started[0]
    gw, key = start_gateway("open", open_config(sim.port), tmp, started)
    gw.wait_ready()
    log(f"(a) gateway 'open' pid {gw.pid}")
    await open_breakers(
        [gw_target(a, m, f"open-{a}-{m}", gw.port, key) for a in args.api for m in args.mode]
    )
    cells = []
    for api in args.api:
        for mode in args.mode:
            res = await interleaved(
                [
                    ("direct", direct_target(api, mode, sim.port), None),
                    ("open", gw_target(api, mode, f"open-{api}-{mode}", gw.port, key), gw.pid),
                    ("single", gw_target(api, mode, f"single-{api}-{mode}", gw.port, key), gw.pid),
                ],
                1,
                rounds=args.rounds,
                requests=args.requests,
                seconds=args.seconds,
                warmup=50,
            )
            cells.append({"api": api, "mode": mode, "results": res})
            log(
                f"(a) {api} {mode}: " + ", ".join(f"{n} {fmt_ms(r.p(0.5))}" for n, r in res.items())
            )
    return cells


async def part_b(args: argparse.Namespace, tmp: Path, started: list[Any]) -> list[dict[str, Any]]:
    sim = started[0]
    gws = {
        name: start_gateway(name, rate_config(sim.port, breaker=br), tmp, started)
        for name, br in (("rate", True), ("rate-nobreaker", False))
    }
    for gw, _ in gws.values():
        gw.wait_ready()
    log("(b) gateways " + ", ".join(f"{n} pid {gw.pid}" for n, (gw, _) in gws.items()))
    cells = []
    for api in args.api:
        for mode in args.mode:
            res = await interleaved(
                [
                    ("direct", direct_target(api, mode, sim.port), None),
                    *(
                        (name, gw_target(api, mode, f"rate-{api}-{mode}", gw.port, key), gw.pid)
                        for name, (gw, key) in gws.items()
                    ),
                ],
                10,
                rounds=2,
                requests=args.n,
                seconds=args.n_seconds,
                warmup=0,  # every request of the run counts towards the success rate
                rewarm=False,
            )
            cells.append({"api": api, "mode": mode, "results": res})
            for name in gws:
                b = res[name]
                log(
                    f"(b) {api} {mode} {name}: {b.ok}/{b.samples.done} ok,"
                    f" p99 {fmt_ms(b.p(0.99))} ms, {served(b.tally)}"
                )
    return cells


def table_a(cells: Sequence[dict[str, Any]]) -> tuple[str, list[tuple[bool, str]]]:
    rows = []
    checks = []
    for c in cells:
        d, o, s = (c["results"][k] for k in ("direct", "open", "single"))
        added = None if o.p(0.5) is None or d.p(0.5) is None else o.p(0.5) - d.p(0.5)
        skip = None if o.p(0.5) is None or s.p(0.5) is None else o.p(0.5) - s.p(0.5)
        where = f"{c['api']} {c['mode']}"
        if added is not None:
            checks.append((added <= OPEN_TARGET_MS, f"{added:.2f} ms ({where})"))
        rows.append(
            [
                c["api"],
                c["mode"],
                str(o.samples.done),
                f"{fmt_ms(d.p(0.5))}/{fmt_ms(d.p(0.99))}",
                f"{fmt_ms(o.p(0.5))}/{fmt_ms(o.p(0.99))}",
                f"{fmt_ms(s.p(0.5))}/{fmt_ms(s.p(0.99))}",
                fmt_ms(added),
                fmt_ms(skip),
                "-" if o.ttfb(0.5) is None else fmt_ms(o.ttfb(0.5) - d.ttfb(0.5)),
                fmt_ms(o.cpu_ms_per_req),
                fmt_ms(s.cpu_ms_per_req),
                f"{d.samples.errors}/{o.samples.errors}/{s.samples.errors}",
                served(o.tally),
                "-" if added is None else ("PASS" if added <= OPEN_TARGET_MS else "MISS"),
            ]
        )
    header = [
        "api",
        "mode",
        "requests",
        "direct p50/p99",
        "open p50/p99",
        "single p50/p99",
        "added p50",
        "open - single",
        "added TTFB p50",
        "open CPU ms/req",
        "single CPU",
        "errors d/o/s",
        "served (open)",
        "target",
    ]
    return render(header, rows), checks


def table_b(
    cells: Sequence[dict[str, Any]],
) -> tuple[str, list[tuple[str, bool, str, float]]]:
    rows = []
    checks = []
    for c, name in [(cell, n) for cell in cells for n in cell["results"] if n != "direct"]:
        d: Result = c["results"]["direct"]
        b: Result = c["results"][name]
        success = b.ok / b.samples.done if b.samples.done else 0.0
        p99 = b.p(0.99)
        fb99 = d.p(0.99)
        bound = None if fb99 is None else PRIMARY_TIMEOUT_S * 1000.0 + fb99
        ok_p99 = p99 is not None and bound is not None and p99 <= bound
        where = f"{c['api']} {c['mode']} {name}"
        checks.append(("success rate 100%", success == 1.0, f"{success:.2%} ({where})", -success))
        checks.append(
            (
                "p99 <= primary timeout + fallback p99",
                ok_p99,
                f"p99 {fmt_ms(p99)} ms vs bound {fmt_ms(bound)} ms ({where})",
                (p99 or 0.0) - (bound or 0.0),
            )
        )
        tally = b.tally
        first = sum(v for k, v in tally.items() if k.startswith("1@") and k.endswith("#0"))
        retried = sum(v for k, v in tally.items() if k.startswith("2@") and k.endswith("#0"))
        failover = sum(v for k, v in tally.items() if not k.startswith("1@") and k.endswith("#1"))
        skipped = sum(v for k, v in tally.items() if k.startswith("1@") and k.endswith("#1"))
        rows.append(
            [
                c["api"],
                c["mode"],
                name,
                str(b.samples.done),
                f"{success:.2%}",
                f"{fmt_ms(b.p(0.5))}/{fmt_ms(p99)}",
                f"{fmt_ms(d.p(0.5))}/{fmt_ms(fb99)}",
                f"{PRIMARY_TIMEOUT_S * 1000:.0f}",
                fmt_ms(bound),
                f"{first}/{retried}/{failover}/{skipped}",
                fmt_ms(b.cpu_ms_per_req),
                "PASS" if success == 1.0 and ok_p99 else "MISS",
            ]
        )
    header = [
        "api",
        "mode",
        "gateway",
        "requests",
        "success",
        "bastion p50/p99",
        "fallback direct p50/p99",
        "primary timeout",
        "bound (timeout + fb p99)",
        "served 1st/retry/failover/breaker",
        "CPU ms/req",
        "target",
    ]
    return render(header, rows), checks


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    m = meta()
    with stopping() as started:
        sim = start_sim(tmp, started)
        sim.wait_ready()
        a = await part_a(args, tmp, started)
        b = await part_b(args, tmp, started)
    ta, ca = table_a(a)
    tb, cb = table_b(b)
    print(meta_line("Bastion failover", m))
    print(
        "\n(a) primary's breaker open (primary always 503, failure_threshold 1, 1 h cooldown);"
        " concurrency 1, 0 ms upstream;\n"
        "    latencies in ms to the last body byte; added = open - direct; open - single ="
        " the cost of skipping the open primary\n"
    )
    print(ta)
    print(
        f"\n(b) primary fails {RATE_FAULT!r} (500s), default retry settings, breaker default"
        f" (rate) or off (rate-nobreaker), primary timeout {PRIMARY_TIMEOUT_S * 1000:.0f} ms; concurrency 10;\n"
        "    served = replies by the primary first time / by the primary on its retry /"
        " by the fallback after the primary failed / by the fallback with the primary's"
        " breaker open\n"
    )
    print(tb)
    print("\ntargets:")
    if ca:
        worst = max(ca, key=lambda x: float(x[1].split()[0]))
        print(
            f"  {'PASS' if all(ok for ok, _ in ca) else 'MISS'}  breaker open: fallback served"
            f" <= {OPEN_TARGET_MS:g} ms over direct (p50): worst {worst[1]}"
        )
    for name in ("success rate 100%", "p99 <= primary timeout + fallback p99"):
        sel = [(ok, what, score) for n, ok, what, score in cb if n == name]
        if sel:
            worst_b = max(sel, key=lambda x: x[2])
            print(
                f"  {'PASS' if all(ok for ok, _, _ in sel) else 'MISS'}  30% failing primary,"
                f" {name}: worst {worst_b[1]}"
            )

    def dump(cells: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {
                "api": c["api"],
                "mode": c["mode"],
                "results": {
                    n: {
                        "requests": r.samples.done,
                        "errors": r.samples.errors,
                        "error_examples": r.samples.error_examples,
                        "p50_ms": r.p(0.5),
                        "p99_ms": r.p(0.99),
                        "cpu_ms_per_req": r.cpu_ms_per_req,
                        "served": dict(r.tally),
                        "latencies_ms": [round(v, 3) for v in r.samples.latencies_ms],
                    }
                    for n, r in c["results"].items()
                },
            }
            for c in cells
        ]

    return {"meta": m, "breaker_open": dump(a), "fail_rate": dump(b)}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a sanity run: fewer requests")
    p.add_argument("--api", nargs="+", choices=APIS, default=APIS)
    p.add_argument("--mode", nargs="+", choices=MODES, default=MODES)
    p.add_argument("--requests", type=int, help="(a) max requests per side and cell (1,500)")
    p.add_argument("--seconds", type=float, help="(a) max seconds per side and cell (4)")
    p.add_argument("--rounds", type=int, help="(a) alternating rounds (4)")
    p.add_argument("-n", type=int, help="(b) requests per side and cell (2,000)")
    p.add_argument("--n-seconds", type=float, default=30.0, help="(b) time cap per side (30)")
    p.add_argument("--json", type=Path, help="write the raw numbers to this file")
    args = p.parse_args(argv)
    args.requests = args.requests or (300 if args.quick else 1_500)
    args.seconds = args.seconds or (1.5 if args.quick else 4.0)
    args.rounds = args.rounds or (2 if args.quick else 4)
    args.n = args.n or (400 if args.quick else 2_000)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bastion-bench-failover-") as d:
        data = run_async(run(args, Path(d)))
    if args.json:
        args.json.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
        print(f"\nraw numbers written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The request pipeline's own CPU per call, in process, old tree against new (issue 16).

``ablation.py`` measures whole server processes over sockets: the server, the HTTP client and
the kernel are in every figure, and on a shared 2-core box their noise swamps a change to the
pipeline. This script takes them out: a child process runs Bastion's ASGI app
(``server/app.py``: body read, auth, parsing, dialect, guards, engine, relay, reply, after-send
observers) against the in-process provider simulator (``sim://``, no socket), driven by a fake
ASGI server that costs next to nothing, and reports its own CPU time (``time.process_time``)
per call over a bounded burst after a warm-up. The config is ``ablation.py``'s (``full
defaults`` or ``everything off``, records off through the same switch as ``recording.py``)
with the providers pointed at ``sim://``. The parent runs each (tree, side, mode) as a fresh
child, in rotating order over rounds, and prints medians and the per-round ratio new/old.

    .venv/bin/python bench/framework.py --compare REF_OR_SRC_DIR [--ref worktree]
        [--rounds 5] [--unary 2000] [--stream 200] [--only "everything off"] [--quick]
        [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import yaml
from ablation import ALL_OFF, FULL, VARIANTS, slug, tree_of, variant_config
from harness import render
from overhead import BASTION, alias, request_body
from recording import SERVE_FLAG
from sidebyside import USER

MODES = ("unary", "stream")
SIDES = (FULL, ALL_OFF)


def sim_config(name: str, tmp: Path) -> dict[str, Any]:
    v = next(x for x in VARIANTS if x.name == name)
    cfg = variant_config(v, tmp, 0)
    cfg["providers"] = {
        "sim-anthropic": {"kind": "anthropic", "base_url": "sim://anthropic"},
        "sim-openai": {"kind": "openai", "base_url": "sim://openai/v1"},
    }
    return cfg


# -- the child: one side, one mode, one tree (PYTHONPATH) ---------------------------------------


async def _one(app: Any, scope: dict[str, Any], body: bytes) -> int:
    """One request through the app; a stream's client stays until the response ends."""
    done = asyncio.Event()
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(msg: dict[str, Any]) -> None:
        nonlocal status
        if msg["type"] == "http.response.start":
            status = msg["status"]
        elif not msg.get("more_body", False):
            done.set()

    await app(scope, receive, send)
    done.set()
    return status


async def _child(config: Path, key: str, mode: str, calls: int, conc: int) -> dict[str, float]:
    from bastion.gateway import Gateway
    from bastion.server.app import create_app

    gw = Gateway.from_config(str(config))
    await gw.start()
    app = create_app(gw)
    stream = mode == "stream"
    body = request_body("openai", alias("openai", mode, 0), stream)
    headers = [
        (b"content-type", b"application/json"),
        (b"authorization", b"Bearer " + key.encode()),
        (b"x-bastion-user", USER.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "headers": headers,
        "scheme": "http",
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 1),
    }
    bad = 0

    async def worker(n: int) -> None:
        nonlocal bad
        for _ in range(n):
            if await _one(app, dict(scope), body) != 200:
                bad += 1

    try:
        await asyncio.gather(*(worker(max(1, calls // 20 // conc)) for _ in range(conc)))
        bad = 0
        t0, w0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker(calls // conc) for _ in range(conc)))
        cpu, wall = time.process_time() - t0, time.perf_counter() - w0
    finally:
        await gw.aclose()
    n = conc * (calls // conc)
    return {"cpu_ms": cpu * 1000.0 / n, "wall_ms": wall * 1000.0 / n, "errors": float(bad)}


def child_main(argv: Sequence[str]) -> int:
    config, key, mode, calls, conc, records = argv
    if records == "off":
        from bastion.observability import recording

        recording.RecordGuard.active = False
    import uvloop

    out = uvloop.run(_child(Path(config), key, mode, int(calls), int(conc)))
    print(orjson.dumps(out).decode())
    return 0


# -- the parent --------------------------------------------------------------------------------


def prepare(name: str, tree: Path | None, tmp: Path) -> tuple[Path, str, dict[str, str]]:
    """Config file and key for one side on one tree (made by that tree's CLI)."""
    d = tmp / slug(f"{name}-{tree or 'worktree'}")
    d.mkdir(parents=True, exist_ok=True)
    cfg = sim_config(name, d)
    path = d / "bastion.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = dict(os.environ) if tree is None else {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [*BASTION, "keys", "create", "--name", "bench", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=env,
    ).stdout
    key = next(ln.split()[-1] for ln in out.splitlines() if ln.startswith("secret:"))
    return path, key, env


def run_child(
    prepared: tuple[Path, str, dict[str, str]], name: str, mode: str, calls: int
) -> dict[str, float]:
    path, key, env = prepared
    v = next(x for x in VARIANTS if x.name == name)
    records = "off" if v.record_flag == SERVE_FLAG else "on"
    conc = "1" if mode == "unary" else "4"
    argv = [sys.executable, __file__, "_child", str(path), key, mode, str(calls), conc, records]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"child failed: {out.stderr[-2000:]}")
    got: dict[str, float] = orjson.loads(out.stdout.strip().splitlines()[-1])
    return got


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["_child"]:
        return child_main(argv[1:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--ref", default="worktree", help="tree measured: 'worktree', a rev or a src dir"
    )
    p.add_argument("--compare", required=True, help="tree compared against: a rev or a src dir")
    p.add_argument("--rounds", type=int)
    p.add_argument("--unary", type=int, help="unary calls per child (default 2000)")
    p.add_argument("--stream", type=int, help="streams per child (default 200)")
    p.add_argument("--quick", action="store_true", help="a sanity run (1 round, small bursts)")
    p.add_argument("--only", help="comma-separated sides (default: both)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 5)
    args.unary = args.unary or (300 if args.quick else 2000)
    args.stream = args.stream or (40 if args.quick else 200)
    sides = [s.strip() for s in args.only.split(",")] if args.only else list(SIDES)
    cpu: dict[tuple[str, str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bastion-framework-") as d:
        tmp = Path(d)
        trees = {
            "now": None if args.ref == "worktree" else tree_of(args.ref, tmp / "ref"),
            "before": tree_of(args.compare, tmp / "compare"),
        }
        prepared = {(t, s): prepare(s, tree, tmp) for t, tree in trees.items() for s in sides}
        jobs = [(t, s, m) for s in sides for m in MODES for t in trees]
        for r in range(args.rounds):
            order = jobs[r % len(jobs) :] + jobs[: r % len(jobs)]
            for t, s, m in order:
                calls = args.unary if m == "unary" else args.stream
                got = run_child(prepared[(t, s)], s, m, calls)
                if got["errors"]:
                    print(f"warning: {t} {s} {m}: {got['errors']:.0f} errors", file=sys.stderr)
                cpu.setdefault((t, s, m), []).append(got["cpu_ms"])
            line = ", ".join(f"{t}/{s}/{m} {v[-1]:.3f}" for (t, s, m), v in cpu.items())
            print(f"round {r + 1}/{args.rounds}: CPU ms per call: {line}", file=sys.stderr)
    rows = []
    for s in sides:
        row = [s]
        for m in MODES:
            new, old = cpu[("now", s, m)], cpu[("before", s, m)]
            ratios = [n / o for n, o in zip(new, old, strict=True)]
            row += [
                f"{statistics.median(old):.3f} -> {statistics.median(new):.3f}",
                f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})",
            ]
        rows.append(row)
    head = ["side"]
    for m in MODES:
        head += [f"{m} CPU ms before -> now", "ratio (range over rounds)"]
    print(
        f"in-process pipeline CPU per call (sim://, fake ASGI server), median of {args.rounds} "
        f"rounds, {args.unary} unary at concurrency 1, {args.stream} streams of 32 chunks at "
        f"concurrency 4; now={args.ref}, before={args.compare}\n" + render(head, rows)
    )
    if args.json:
        data = {f"{t}|{s}|{m}": v for (t, s, m), v in cpu.items()}
        args.json.write_bytes(
            orjson.dumps({"args": vars(args) | {"json": str(args.json)}, "cpu_ms": data})
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where Bastion's CPU per call goes: one switch off at a time, in one interleaved run (issue 16).

Every side is a ``bastion serve`` worker configured as ``hotpath.py``'s (``sidebyside.py``'s
Bastion: records, the safety defaults, spend caps and per-user rate limits that never refuse)
with ONE switch changed, plus the bare uvicorn+aiohttp proxy (``bare_proxy.py``) as the floor
and a side with every switch off (the bare pipeline). Switches are real config keys (see
``VARIANTS``); records cannot be turned off by config, so two sides run the stock gateway
through ``recording.py``'s launchers instead: without the record guard, and with the record
store's writes made no-ops (the recorder's sink to a null store). Each round sends every side
the same bounded burst of OpenAI chat calls (a 32-token unary answer at concurrency 1, a
32-chunk stream 1 ms apart at concurrency 4), sides in rotating order; a side's CPU per call
is its process's user+system time over the burst divided by its calls (``hotpath.burst``).
The table gives the median over rounds and the delta against full defaults.

Then ``py-spy`` (in the venv) records the full-defaults worker over one more unary and one more
stream burst, and its samples are attributed to who does the work: the innermost frame that is
Bastion's (grouped by module: records, cost & state, safety, observability, access log,
server, the pipeline and dialects), aiohttp's or uvicorn's; a stack with none of those is the
event loop (asyncio/uvloop) or other; the aiosqlite threads (records and embedded state) apart.

    .venv/bin/python bench/ablation.py [--rounds 5] [--unary 500] [--stream 120]
        [--quick] [--json FILE] [--no-profile] [--only "full defaults,everything off"]
        [--ref REV|worktree|SRC_DIR] [--compare REV|SRC_DIR]

``--compare`` runs each chosen side a second time on another tree, in the same rounds, and
prints the per-round ratio now/before (a change measured against what it replaces).
"""

from __future__ import annotations

import argparse
import copy
import linecache
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml
from harness import fmt_ms, render, run_async, stopping, with_headers
from hotpath import GOAL_MS, MODES, Side, bastion_config, burst, export_tree, measure
from overhead import BARE_PROXY, BASTION, Server, free_port, target
from recording import NOWRITE_FLAG, SERVE_FLAG
from sidebyside import USER

HERE = Path(__file__).resolve().parent
FULL = "full defaults"
ALL_OFF = "everything off"


@dataclass(frozen=True)
class Variant:
    """One side: ``switches`` (dotted config path -> value) over the full config, or a
    ``recording.py`` launcher flag (the same config, a build without records)."""

    name: str
    what: str
    switches: Mapping[str, Any] = field(default_factory=dict)
    record_flag: str | None = None


SWITCHES: tuple[Variant, ...] = (
    Variant("pii output off", "no PII scan of answers", {"features.default.pii_output": "off"}),
    Variant("ner off", "PII without the name/place tagger", {"safety.pii.ner": "off"}),
    Variant(
        "injection off",
        "no injection scan of the request",
        {"features.default.safety.injection_action": "off"},
    ),
    Variant(
        "leak off",
        "no system-prompt leak watch",
        {"features.default.safety.leak_action": "off"},
    ),
    Variant("caps off", "no spend caps (no reserve/settle)", {"cost.caps": {}}),
    Variant("rate limits off", "no per-user rate limit", {"cost.rate_limits": {}}),
    Variant("breaker off", "no circuit breaker", {"reliability.breaker.enabled": False}),
    Variant("access log off", "log_level warning", {"server.log_level": "warning"}),
    Variant("bodies off", "records keep no bodies (no scrub)", {"observability.body_max_chars": 0}),
    Variant("quality off", "no online quality sampling", {"observability.quality_rate": 0.0}),
    Variant("review off", "no review sampling", {"observability.review_rate": 0.0}),
)
VARIANTS: tuple[Variant, ...] = (
    Variant(FULL, "sidebyside config: caps, rate limits, records, safety defaults"),
    *SWITCHES,
    Variant("records null store", "record store writes are no-ops", record_flag=NOWRITE_FLAG),
    Variant("records off", "no record guard", record_flag=SERVE_FLAG),
    Variant(
        ALL_OFF,
        "every switch above off, and no record guard",
        {k: v for s in SWITCHES for k, v in s.switches.items()},
        record_flag=SERVE_FLAG,
    ),
)


def set_path(cfg: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = cfg
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = copy.deepcopy(value)


def variant_config(v: Variant, tmp: Path, sim_port: int, name: str = "") -> dict[str, Any]:
    """The config ``v``'s gateway runs: the full one, its switches applied, files in
    ``tmp/<slug of name>`` (``v.name`` by default)."""
    cfg = copy.deepcopy(bastion_config(tmp, sim_port))  # it shares sidebyside's CAPS
    for path, value in v.switches.items():
        set_path(cfg, path, value)
    d = tmp / slug(name or v.name)
    cfg["store"] = {"url": f"sqlite:///{d / 'bastion.db'}"}
    cfg["state"] = {"url": f"sqlite:///{d / 'bastion-state.db'}"}
    cfg.setdefault("observability", {})["spill_path"] = str(d / "bastion-spill.jsonl")
    return cfg


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def write_config(v: Variant, tmp: Path, sim_port: int, name: str = "") -> Path:
    """Write ``v``'s config where ``start_gateway`` writes it (it rewrites the same text)."""
    path = tmp / slug(name or v.name) / "bastion.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(variant_config(v, tmp, sim_port, name), sort_keys=False))
    return path


def launcher(v: Variant, src: Path | None) -> tuple[str, ...]:
    """How ``v``'s gateway is started: ``bastion`` or a ``recording.py`` build, on ``src``."""
    argv = (
        BASTION
        if v.record_flag is None
        else (sys.executable, str(HERE / "recording.py"), v.record_flag)
    )
    return argv if src is None else ("env", f"PYTHONPATH={src}", *argv)


def start_variant(
    v: Variant, tmp: Path, sim_port: int, src: Path | None, started: list[Server], name: str = ""
) -> tuple[Server, str]:
    """``v``'s gateway on a free port, and a key for it (made by the same source tree);
    ``name`` (``v.name`` by default) names its directory."""
    name = name or v.name
    config = write_config(v, tmp, sim_port, name)
    env = dict(os.environ) if src is None else {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run(
        [*BASTION, "keys", "create", "--name", "bench", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=env,
    ).stdout
    key = next(ln.split()[-1] for ln in out.splitlines() if ln.startswith("secret:"))
    port = free_port()
    argv = [*launcher(v, src), "serve", "--config", str(config), "--port", str(port)]
    gw = Server(slug(name), argv, port, config.parent / "gateway.log")
    started.append(gw)
    return gw, key


# -- py-spy attribution ------------------------------------------------------------------------

BASTION_GROUPS: tuple[tuple[str, str], ...] = (  # first match on the path under bastion/
    (r"^observability/(recording|recorder|spill|journal)\.py|^store/", "records"),
    (r"^observability/access\.py", "access log"),
    (r"^observability/", "observability (metrics, tracing, quality, review)"),
    (r"^(cost|state)/|^spend\.py", "cost & state"),
    (r"^safety/pii/", "safety: PII"),
    (r"^safety/", "safety: injection, leak, other"),
    (r"^server/", "server (bastion's ASGI app)"),
    (r".", "pipeline, dialects, providers, engine"),
)
FRAME = re.compile(r"^(?P<func>\S+) \((?P<file>[^()]*?):(?P<line>\d+)\)$")
# a worker thread blocked on its queue: py-spy counts the C-level wait as on-CPU
IDLE_WAITS = ("_connection_worker_thread", "_worker")


def source_line(file: str, line: int) -> str:
    """The source line py-spy names (its paths are relative to an import root)."""
    for root in sys.path:
        path = Path(root or ".") / file
        if path.is_file():
            return linecache.getline(str(path), line)
    return ""


def idle(leaf: str) -> bool:
    m = FRAME.search(leaf)
    if not m or m.group("func") not in IDLE_WAITS:
        return False
    return ".get(" in source_line(m.group("file"), int(m.group("line")))


def frame_file(frame: str) -> str:
    m = FRAME.search(frame)
    return m.group("file") if m else frame


LOOP_ENTRY = re.compile(r"(^|/)(asyncio/(runners|base_events|events)\.py|uvloop/)")


def group_of(stack: Sequence[str]) -> str:
    """Who one sample's CPU belongs to (``stack`` root first, as py-spy's raw format).

    Only the frames below the innermost event-loop entry (``Runner.run``, ``_run_once``,
    ``Handle._run``) are the running task or callback; a sample with none is the loop's own C
    code (uvloop: polling, transports, callbacks without a Python frame)."""
    files = [frame_file(f) for f in stack]
    if any("aiosqlite" in f for f in files):
        return "sqlite work in aiosqlite threads (records, state)"
    entries = [i for i, f in enumerate(files) if LOOP_ENTRY.search(f)]
    task = files[entries[-1] + 1 :] if entries else files
    for f in reversed(task):
        if "/bastion/" in f or f.startswith("bastion/"):
            rel = f.rsplit("bastion/", 1)[1]
            return next(g for pat, g in BASTION_GROUPS if re.search(pat, rel))
        if re.search(r"(^|/)(aiohttp|yarl|multidict|aiohappyeyeballs)/", f):
            return "aiohttp (client)"
        if re.search(r"(^|/)(uvicorn|httptools|h11)/", f):
            return "server/ASGI (uvicorn)"
    return "event loop (asyncio/uvloop)" if entries else "other"


def attribute(raw: str) -> Counter[str]:
    """Samples per group from py-spy's ``--format raw`` output (``a;b;c count`` per line)."""
    out: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit() and not idle(stack.rsplit(";", 1)[-1]):
            out[group_of(stack.split(";"))] += int(count)
    return out


async def profiled(side: Side, args: argparse.Namespace, tmp: Path) -> dict[str, dict[str, float]]:
    """py-spy over one unary and one stream burst of ``side``: share of samples per group."""
    exe = shutil.which("py-spy", path=os.path.dirname(sys.executable)) or "py-spy"
    shares: dict[str, dict[str, float]] = {}
    for mode in MODES:
        out = tmp / f"pyspy-{mode}.txt"
        argv = [exe, "record", "--format", "raw", "-o", str(out), "--rate", "500"]
        spy = subprocess.Popen(
            [*argv, "--pid", str(side.server.pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(1.0)
            calls = 3 * (args.unary if mode == "unary" else args.stream)
            # a scratch side: these bursts stay out of the measured rounds
            await burst(
                Side(side.name, side.server, side.targets), mode, calls, 1 if mode == "unary" else 4
            )
        finally:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        counts = attribute(out.read_text()) if out.exists() else Counter()
        if args.profile_dir and out.exists():
            args.profile_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy(out, args.profile_dir / out.name)
        total = sum(counts.values()) or 1
        shares[mode] = {g: n / total for g, n in counts.most_common()}
        shares[mode]["(samples)"] = float(total)
    return shares


# -- report ------------------------------------------------------------------------------------


def med(side: Side, mode: str) -> float:
    return statistics.median(side.cpu_ms[mode])


def table(sides: Sequence[Side], args: argparse.Namespace) -> str:
    bare, full = sides[0], next((s for s in sides if s.name == FULL), None)
    rows = []
    for s in sides:
        row = [s.name]
        for mode in MODES:
            cpu = med(s, mode)
            row += [
                fmt_ms(cpu, 3),
                "-" if full is None or s in (bare, full) else f"{cpu - med(full, mode):+.3f}",
                "-" if s is bare else fmt_ms(cpu - med(bare, mode), 3),
            ]
        rows.append([*row, str(s.errors)])
    head = ["side"]
    for mode in MODES:
        head += [f"{mode} CPU ms", "vs full", "over bare"]
    goals = ", ".join(f"{m} <= {g} ms" for m, g in GOAL_MS.items())
    return (
        f"CPU per call, median of {args.rounds} rounds ({args.unary} unary at concurrency 1, "
        f"{args.stream} streams of 32 chunks at concurrency 4); goals: {goals}\n"
        + render([*head, "errors"], rows)
    )


def profile_table(shares: Mapping[str, Mapping[str, float]]) -> str:
    groups = sorted({g for m in shares.values() for g in m if g != "(samples)"})
    groups.sort(key=lambda g: -sum(shares[m].get(g, 0.0) for m in shares))
    rows = [[g, *(f"{100 * shares[m].get(g, 0.0):.1f}%" for m in MODES)] for g in groups]
    rows.append(["(samples)", *(f"{shares[m]['(samples)']:.0f}" for m in MODES)])
    return "py-spy, full defaults, share of on-CPU samples\n" + render(["group", *MODES], rows)


def compare_table(sides: Sequence[Side], ref: str) -> str:
    """Each side against the same variant on ``ref``'s tree, round by round (same round, same
    load): the median ratio new/old and its range over the rounds."""
    by = {s.name: s for s in sides}
    rows = []
    for s in sides:
        old = by.get(f"{s.name} @{ref}")
        if old is None:
            continue
        row = [s.name]
        for mode in MODES:
            ratios = [n / o for n, o in zip(s.cpu_ms[mode], old.cpu_ms[mode], strict=True) if o]
            row += [
                f"{med(old, mode):.3f} -> {med(s, mode):.3f}",
                f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})",
            ]
        rows.append(row)
    head = ["side"]
    for mode in MODES:
        head += [f"{mode} CPU ms @{ref} -> now", "ratio now/before (range)"]
    return f"against {ref}, per round\n" + render(head, rows)


def verdict(sides: Sequence[Side]) -> str:
    by = {s.name: s for s in sides}
    if FULL not in by or ALL_OFF not in by:
        return "verdict: needs both the full-defaults and the everything-off sides"
    full, off, bare = by[FULL], by[ALL_OFF], sides[0]
    parts = []
    for mode in MODES:
        savings = sorted(
            (
                (med(full, mode) - med(s, mode), s.name)
                for s in sides[1:]
                if s.name not in (FULL, ALL_OFF)
            ),
            reverse=True,
        )
        top = ", ".join(f"{n} {d:+.3f}" for d, n in savings[:3])
        parts.append(
            f"{mode}: full {med(full, mode):.3f} ms, everything off {med(off, mode):.3f} ms "
            f"(goal {GOAL_MS[mode]}; {med(off, mode) / med(bare, mode):.1f}x the bare proxy "
            f"{med(bare, mode):.3f} ms); defaults cost "
            f"{med(full, mode) - med(off, mode):.3f} ms, the bare pipeline "
            f"{med(off, mode) - med(bare, mode):.3f} ms over the floor; largest single savings: {top}"
        )
    return "verdict: " + " | ".join(parts)


# -- run ---------------------------------------------------------------------------------------


def tree_of(ref: str, dest: Path) -> Path:
    """``src/`` of a git revision (exported under ``dest``), or a directory named as it is."""
    path = Path(ref)
    return path.resolve() if path.is_dir() else export_tree(ref, dest)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int)
    p.add_argument("--unary", type=int, help="unary calls per side per round")
    p.add_argument("--stream", type=int, help="streams per side per round")
    p.add_argument("--quick", action="store_true", help="a sanity run (1 round, small bursts)")
    p.add_argument("--json", type=Path, help="write the raw numbers to this file")
    p.add_argument(
        "--ref",
        default="HEAD",
        help="git revision whose src/ the gateways run (git archive; 'worktree': the checkout;"
        " a directory: that src/ tree)",
    )
    p.add_argument(
        "--compare",
        metavar="REF",
        help="also run each side on this git revision's src/ (named 'side @REF'), same rounds",
    )
    p.add_argument(
        "--only",
        metavar="NAMES",
        help="comma-separated side names to run (default: all), e.g. 'full defaults,everything off'",
    )
    p.add_argument("--profile-dir", type=Path, help="keep py-spy's raw stacks here")
    p.add_argument("--no-profile", action="store_true", help="skip the py-spy attribution")
    args = p.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 5)
    args.unary = args.unary or (100 if args.quick else 500)
    args.stream = args.stream or (30 if args.quick else 120)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bastion-ablation-") as d, stopping() as started:
        tmp = Path(d)
        src = None if args.ref == "worktree" else tree_of(args.ref, tmp / "tree")
        env = () if src is None else ("env", f"PYTHONPATH={src}")
        sim_port = free_port()
        sim = Server(
            "simulator", [*env, *BASTION, "sim", "--port", str(sim_port)], sim_port, tmp / "sim.log"
        )
        started.append(sim)
        sim.wait_ready()
        port = free_port()
        bare_argv = [*BARE_PROXY, "--port", str(port), "--upstream", f"http://127.0.0.1:{sim.port}"]
        bare = Server("bare", bare_argv, port, tmp / "bare.log")
        started.append(bare)
        base = f"http://127.0.0.1:{port}"
        sides = [
            Side(
                "bare proxy", bare, {m: target("openai", m, 0, base=base, key=None) for m in MODES}
            )
        ]
        only = {n.strip() for n in args.only.split(",")} if args.only else None
        trees: list[tuple[str, Path | None]] = [("", src)]
        if args.compare:
            trees.append((f" @{args.compare}", tree_of(args.compare, tmp / "compare")))
        for v in VARIANTS:
            if only is not None and v.name not in only:
                continue
            for suffix, tree in trees:
                gw, key = start_variant(v, tmp, sim.port, tree, started, v.name + suffix)
                gw_base = f"http://127.0.0.1:{gw.port}"
                targets = {
                    m: with_headers(
                        target("openai", m, 0, base=gw_base, key=key), {"x-bastion-user": USER}
                    )
                    for m in MODES
                }
                sides.append(Side(v.name + suffix, gw, targets))
        for s in sides:
            s.server.wait_ready(90.0)
        run_async(measure(sides, args))
        shares = {}
        if not args.no_profile and any(s.name == FULL for s in sides):
            full = next(s for s in sides if s.name == FULL)
            shares = run_async(profiled(full, args, tmp))
    print(table(sides, args))
    if args.compare:
        print("\n" + compare_table(sides, args.compare))
    if shares:
        print("\n" + profile_table(shares))
    line = verdict(sides)
    print("\n" + line)
    if args.json:
        data = {
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "sides": {
                s.name: {"cpu_ms": s.cpu_ms, "p50_ms": s.p50_ms, "errors": s.errors} for s in sides
            },
            "variants": {
                v.name: {"what": v.what, "switches": dict(v.switches), "record_flag": v.record_flag}
                for v in VARIANTS
            },
            "profile_shares": shares,
            "verdict": line,
        }
        args.json.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
        print(f"raw numbers written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the one call lifecycle costs: the same in-process calls on this tree and on an earlier
revision, measured in the same run, interleaved round by round.

"Before" is a git revision (default ``7d40006``, the last commit before per-attempt
reservations, server-minted ids and key-decided identity) checked out into a temporary worktree;
"after" is this tree. Each side runs in its own fresh process, alternating, a loop of unary
Anthropic calls through ``Gateway.handle`` against the in-process simulator (no latency), with
a global and a per-user daily cap, a per-user rate limit and memory state, so every phase of the
lifecycle runs: admit, a reservation per attempt, pricing per attempt, a settle per attempt,
record. The figure is the mean wall time per call; the target (issue 11) is after - before
<= 0.05 ms. Noise floor: the spread of each side's rounds is printed beside it.

A second table isolates the lifecycle's own per-call work on this tree, in this process: the
attempt phase (worst case of the upstream body, a server-minted id, reserve on every cap) and
the settle phase (price each attempt, settle each reservation), on the memory state, against
the same reserve + settle done once per call as before. The end-to-end figure above also moves
with every other feature added between the two revisions (PII names, record sanitising, the
record journal, ...), which this isolates from.

    .venv/bin/python bench/lifecycle.py [--rev REV] [--calls N] [--rounds R]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# One process's measurement: warm up, then time N calls; prints ms per call as JSON.
CHILD = r"""
import asyncio, json, sys, tempfile, time
from pathlib import Path
from bastion.call import Principal
from bastion.config import load_config
from bastion.gateway import Gateway
from bastion.providers.base import Format

N = int(sys.argv[1])

async def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    cfg = load_config(None, env={}, overrides={
        "store": {"url": f"sqlite:///{tmp / 'b.db'}"},
        "state": {"url": "memory://"},
        "observability": {"spill_path": str(tmp / "spill.jsonl")},
        "providers": {"sim": {"kind": "sim"}},
        "models": {"m": {"deployments": [{"provider": "sim", "model": "claude-sonnet-5"}]}},
        "simulator": {"ttft_ms": 0, "chunk_ms": 0},
        "cost": {
            "caps": {"global_daily_usd": 1e9, "per_user_daily_usd": 1e9},
            "rate_limits": {"per_user": {"requests_per_minute": 1e9}},
        },
    })
    principal = Principal(key_id="k-bench", name="bench", user="u1")
    raw = json.dumps({"model": "m", "max_tokens": 64,
                      "messages": [{"role": "user", "content": "hello there"}]}).encode()
    async with Gateway(cfg) as gw:
        for _ in range(300):
            await gw.handle(Format.ANTHROPIC, raw, {}, principal=principal)
        t0 = time.perf_counter()
        for _ in range(N):
            await gw.handle(Format.ANTHROPIC, raw, {}, principal=principal)
        dt = time.perf_counter() - t0
    print(json.dumps({"ms_per_call": dt * 1000.0 / N}))

asyncio.run(main())
"""


def _run(src: Path, calls: int) -> float:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(calls)],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"},
        timeout=600,
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1])["ms_per_call"])


MICRO = r"""
import asyncio, json, sys, time
from bastion.call import Attempt, Call, Principal, Usage
from bastion.clock import DayClock
from bastion.config import load_config
from bastion.cost.budget import BudgetGuard
from bastion.cost.meter import CostMeter
from bastion.cost.pricing import PriceTable
from bastion.providers.base import Format
from bastion.state import MemoryCounterStore

N = int(sys.argv[1])

async def main() -> None:
    cfg = load_config(None, env={}, overrides={
        "providers": {"sim": {"kind": "sim"}},
        "models": {"m": {"deployments": [{"provider": "sim", "model": "claude-sonnet-5"}]}},
        "cost": {"caps": {"global_daily_usd": 1e9, "per_user_daily_usd": 1e9}},
    })
    state = MemoryCounterStore()
    prices = PriceTable({})
    guard = BudgetGuard(cfg, state, prices, DayClock())
    meter = CostMeter(prices)
    body = {"model": "claude-sonnet-5", "max_tokens": 64,
            "messages": [{"role": "user", "content": "hello there"}]}
    size = len(json.dumps(body))
    p = Principal(key_id="k", name="b", user="u1")

    def new_call() -> Call:
        c = Call(request_id="req_x", trace_id="t", span_id="s", client_format=Format.ANTHROPIC,
                 principal=p, body=body, requested_model="m", stream=False)
        c.deadline = c.started + 60
        c.cap_subject = "user:u1"
        return c

    caps = guard._applicable(new_call(), "d")
    t0 = time.perf_counter()
    for i in range(N):  # before: one reserve and one settle per call
        rid = f"r{i}"
        await state.reserve(rid, caps, 0.001, 60.0)
        await state.settle(rid, 0.0005)
    old = (time.perf_counter() - t0) / N * 1e6
    t0 = time.perf_counter()
    for _ in range(N):  # after: admit, the attempt phase, per-attempt price and settle
        c = new_call()
        await guard.before(c)
        a = Attempt("sim/claude-sonnet-5", "sim", "claude-sonnet-5", provider_kind="sim")
        c.attempts.append(a)
        await guard.reserve_attempt(c, a, body, size)
        a.sent = True
        a.usage = Usage(input_tokens=10, output_tokens=20)
        await meter.after(c, None)
        await guard.after(c, None)
    new = (time.perf_counter() - t0) / N * 1e6
    print(json.dumps({"old_us": old, "new_us": new}))

asyncio.run(main())
"""


def _micro(calls: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", MICRO, str(calls)],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
        timeout=600,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rev", default="7d40006")
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bastion-before-") as tmp:
        wt = Path(tmp) / "before"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(wt), args.rev],
            check=True,
            capture_output=True,
        )
        try:
            before: list[float] = []
            after: list[float] = []
            for _ in range(args.rounds):
                before.append(_run(wt / "src", args.calls))
                after.append(_run(ROOT / "src", args.calls))
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(wt)],
                check=False,
                capture_output=True,
            )
    micro = [_micro(args.calls * 4) for _ in range(args.rounds)]
    b, a = statistics.median(before), statistics.median(after)
    print(f"{'side':<8} {'median ms/call':>15} {'min':>8} {'max':>8}")
    print(f"{'before':<8} {b:>15.4f} {min(before):>8.4f} {max(before):>8.4f}   ({args.rev})")
    print(f"{'after':<8} {a:>15.4f} {min(after):>8.4f} {max(after):>8.4f}   (this tree)")
    diffs = [x - y for x, y in zip(after, before, strict=True)]
    print(
        f"after - before: median {statistics.median(diffs):+.4f} ms per call "
        f"(rounds: {', '.join(f'{d:+.4f}' for d in diffs)}); end to end, every feature"
    )
    old = statistics.median(m["old_us"] for m in micro)
    new = statistics.median(m["new_us"] for m in micro)
    print()
    print(f"{'lifecycle (memory state)':<36} {'median us/call':>15}")
    print(f"{'reserve + settle once per call':<36} {old:>15.1f}")
    print(f"{'admit + attempt + price + settle':<36} {new:>15.1f}")
    print(f"lifecycle cost: {(new - old) / 1000:+.4f} ms per call; target <= +0.05 ms")


if __name__ == "__main__":
    main()

"""What the benches share beyond ``overhead.py``'s helpers.

Gateways started from config dicts (each in its own temp sub-directory, with its own
store, state file and spill file unless the config says otherwise), interleaved
measurement of any number of sides over a grid of cells (each side's process CPU from
``/proc``), run metadata, a plain-text table, and clean-up of the Redis keys and PostgreSQL
schemas a run created. Other processes (started on a free port, waited for until healthy,
a pinned tool in a venv of its own) are ``procs.py``'s. Not a script: the others import it (``bench/`` is on ``sys.path`` when
they run as ``python bench/NAME.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import platform
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import yaml
from overhead import (
    BASTION,
    Samples,
    Server,
    Target,
    client,
    cpu_times,
    create_key,
    free_port,
    machine_busy,
    pct,
    source_version,
)

REDIS_URL = os.environ.get("BASTION_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_URL = os.environ.get("BASTION_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

__all__ = [
    "PG_URL",
    "REDIS_URL",
    "Cells",
    "Result",
    "added",
    "fmt_ms",
    "interleaved",
    "measure_cells",
    "meta",
    "pct_or_dash",
    "pg_schema",
    "redis_cleanup",
    "render",
    "run_async",
    "share",
    "start_gateway",
    "stopping",
    "unique",
    "write_gateway_config",
]


def unique(kind: str) -> str:
    """A name no other run (or concurrent test suite) uses: Redis prefix, schema, temp dir."""
    return f"bench_{kind}_{os.getpid()}_{uuid.uuid4().hex[:8]}"


def meta() -> dict[str, Any]:
    return {
        "source": source_version(),
        "cpus": os.cpu_count(),
        "loadavg_start": " ".join(f"{v:.2f}" for v in os.getloadavg()),
        "python": platform.python_version(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def meta_line(title: str, m: dict[str, Any]) -> str:
    return (
        f"{title}  ({m['cpus']} CPUs, load avg at start {m['loadavg_start']}, "
        f"python {m['python']}, source {m['source']}, {m['started']})"
    )


# -- processes -------------------------------------------------------------------------------


@contextlib.contextmanager
def stopping() -> Iterator[list[Server]]:
    """Every server appended to the list is stopped by its PID on the way out, newest first."""
    started: list[Server] = []
    try:
        yield started
    finally:
        for proc in reversed(started):
            proc.stop()


def start_sim(tmp: Path, started: list[Server]) -> Server:
    port = free_port()
    sim = Server("simulator", [*BASTION, "sim", "--port", str(port)], port, tmp / "sim.log")
    started.append(sim)
    return sim


def start_gateway(
    name: str,
    cfg: dict[str, Any],
    tmp: Path,
    started: list[Server],
    *,
    launcher: Sequence[str] = BASTION,
) -> tuple[Server, str]:
    """``bastion serve`` (or ``launcher serve``) on a free port with this config; returns it and a key.

    Store, state and spill file default to files in ``tmp/name``, never the working directory.
    """
    d = tmp / name
    d.mkdir(parents=True, exist_ok=True)
    cfg = copy.deepcopy(cfg)
    cfg.setdefault("store", {"url": f"sqlite:///{d / 'bastion.db'}"})
    cfg.setdefault("state", {"url": f"sqlite:///{d / 'bastion-state.db'}"})
    cfg.setdefault("observability", {}).setdefault("spill_path", str(d / "bastion-spill.jsonl"))
    config = d / "bastion.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    key = create_key(config)
    port = free_port()
    gw = Server(
        name,
        [*launcher, "serve", "--config", str(config), "--port", str(port)],
        port,
        d / "gateway.log",
    )
    started.append(gw)
    return gw, key


def write_gateway_config(cfg: dict[str, Any], d: Path) -> Path:
    """``cfg`` with a store, state and spill file of its own in ``d`` (made here, whatever
    ``cfg`` said of them), written to ``d/bastion.yaml``."""
    d.mkdir(parents=True)
    cfg = {
        **cfg,
        "store": {"url": f"sqlite:///{d / 'bastion.db'}"},
        "state": {"url": f"sqlite:///{d / 'bastion-state.db'}"},
        "observability": {"spill_path": str(d / "bastion-spill.jsonl")},
    }
    config = d / "bastion.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return config


def run_async(coro: Any) -> Any:
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        return runner.run(coro)


# -- load ------------------------------------------------------------------------------------


async def one_request(
    session: aiohttp.ClientSession, t: Target, out: Samples, tally: Counter[str]
) -> None:
    """Like ``overhead.one_request``, plus a tally of how Bastion served it (attempts@deployment).

    A degraded (canned) answer counts as a failure, not a success.
    """
    t0 = time.perf_counter()
    t_first = 0.0
    try:
        async with session.post(t.url, data=t.body, headers=t.headers) as resp:
            how = resp.headers.get("x-bastion-attempts")
            if how is not None:
                tally[f"{how}@{resp.headers.get('x-bastion-deployment', '?')}"] += 1
            degraded = "x-bastion-degraded" in resp.headers
            if t.stream:
                data = await resp.content.readany()
                t_first = time.perf_counter()
                bad = b'"error"' in data
                while chunk := await resp.content.readany():
                    data = data[-128:] + chunk
                    bad = bad or b'"error"' in chunk
                ok = resp.status == 200 and not bad and t.end in data[-128:]
            else:
                data = await resp.read()
                ok = resp.status == 200
            ok = ok and not degraded
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        out.fail(repr(exc))
        return
    t_end = time.perf_counter()
    if not ok:
        out.fail(f"HTTP {resp.status}: {data[-300:]!r}")
        return
    out.latencies_ms.append((t_end - t0) * 1000.0)
    if t.stream:
        out.ttfb_ms.append((t_first - t0) * 1000.0)


async def drive(
    session: aiohttp.ClientSession,
    t: Target,
    concurrency: int,
    count: int,
    seconds: float,
    out: Samples,
    tally: Counter[str],
) -> None:
    """A closed loop of ``concurrency`` workers until ``count`` requests or ``seconds`` pass."""
    issued = 0
    start = time.perf_counter()
    deadline = start + seconds

    async def worker() -> None:
        nonlocal issued
        while issued < count and time.perf_counter() < deadline:
            issued += 1
            await one_request(session, t, out, tally)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    out.elapsed_s += time.perf_counter() - start


@dataclass
class Result:
    """One side of one measurement: samples, the CPU of the process behind it, the box's load."""

    name: str
    samples: Samples = field(default_factory=Samples)
    cpu_s: float = 0.0
    busy: int = 0
    total: int = 0
    tally: Counter[str] = field(default_factory=Counter)
    watched_cpu_s: float = 0.0  # a shared server's CPU (Redis, PostgreSQL) over this side's rounds

    @property
    def ok(self) -> int:
        return len(self.samples.latencies_ms)

    @property
    def rps(self) -> float:
        return self.ok / self.samples.elapsed_s if self.samples.elapsed_s else 0.0

    def p(self, q: float) -> float | None:
        return pct(self.samples.latencies_ms, q)

    def ttfb(self, q: float) -> float | None:
        return pct(self.samples.ttfb_ms, q)

    @property
    def cpu_ms_per_req(self) -> float | None:
        n = self.samples.done
        return self.cpu_s * 1000.0 / n if n else None

    @property
    def watched_ms_per_req(self) -> float | None:
        n = self.samples.done
        return self.watched_cpu_s * 1000.0 / n if n else None

    @property
    def busy_pct(self) -> float:
        return 100.0 * self.busy / max(self.total, 1)


async def interleaved(
    sides: Sequence[tuple[str, Target, int | None]],
    concurrency: int,
    *,
    rounds: int,
    requests: int,
    seconds: float,
    warmup: int,
    watch_pid: int | None = None,
    rewarm: bool = True,
) -> dict[str, Result]:
    """Every side in alternating rounds (A, B, C, A, B, C, ...), so noise hits each alike.

    ``requests`` and ``seconds`` cap each side over all rounds; the pid (or None) names
    the process whose CPU is charged to that side; ``watch_pid``'s CPU is charged to every
    side over its own rounds (a shared server such as Redis). ``rewarm`` sends
    ``concurrency`` unmeasured requests before each round, so reconnecting is not measured.
    """

    def watched() -> float:
        if watch_pid is None:
            return 0.0
        with contextlib.suppress(OSError):
            return sum(cpu_times(watch_pid))
        return 0.0

    per_round = -(-requests // rounds)
    secs = seconds / rounds
    results = {name: Result(name) for name, _, _ in sides}
    async with contextlib.AsyncExitStack() as stack:
        sessions = [await stack.enter_async_context(client(concurrency)) for _ in sides]
        for session, (_, t, _) in zip(sessions, sides, strict=True):
            await drive(session, t, concurrency, warmup, 3.0, Samples(), Counter())
        for _ in range(rounds):
            for session, (name, t, pid) in zip(sessions, sides, strict=True):
                r = results[name]
                if rewarm:  # re-open the pool's connections outside the measurement
                    await drive(session, t, concurrency, concurrency, 2.0, Samples(), Counter())
                cpu0 = sum(cpu_times(pid)) if pid else 0.0
                w0 = watched()
                b0, t0 = machine_busy()
                await drive(session, t, concurrency, per_round, secs, r.samples, r.tally)
                b1, t1 = machine_busy()
                r.watched_cpu_s += watched() - w0
                r.cpu_s += (sum(cpu_times(pid)) if pid else 0.0) - cpu0
                r.busy += b1 - b0
                r.total += t1 - t0
    return results


Cells = dict[tuple[str, int, int], dict[str, Result]]  # (mode, concurrency, upstream ms) -> sides


class RunSettings(Protocol):
    @property
    def rounds(self) -> int: ...
    @property
    def requests(self) -> int: ...
    @property
    def seconds(self) -> float: ...
    @property
    def warmup(self) -> int: ...


async def measure_cells(
    sides: Sequence[tuple[str, Callable[[str, int], Target], int | None]],
    modes: Sequence[str],
    grid: Sequence[tuple[int, int]],
    s: RunSettings,
    progress: Callable[[str, int, int, dict[str, Result]], str],
) -> Cells:
    """Every (mode, (concurrency, upstream ms)) cell, its sides ``(name, (mode, ms) -> Target,
    pid whose CPU is theirs)`` interleaved; ``progress`` says a measured cell on stderr."""
    cells: Cells = {}
    total = len(modes) * len(grid)
    for mode in modes:
        for conc, ms in grid:
            plan = [(name, target_for(mode, ms), pid) for name, target_for, pid in sides]
            res = await interleaved(
                plan,
                conc,
                rounds=s.rounds,
                requests=s.requests,
                seconds=s.seconds,
                warmup=s.warmup,
            )
            cells[(mode, conc, ms)] = res
            log(f"[{len(cells)}/{total}] " + progress(mode, conc, ms, res))
    return cells


def share(r: Result, d: Result) -> float | None:
    """A side's requests/s as a share of direct's (None if either has none)."""
    return r.rps / d.rps if d.rps and r.ok else None


def added(r: Result, d: Result) -> float | None:
    """A side's p50 over direct's, ms."""
    a, b = r.p(0.5), d.p(0.5)
    return None if a is None or b is None else a - b


def added_ttfb(r: Result, d: Result) -> float | None:
    """A stream's first body byte, p50, over direct's: less noisy than the whole stream, whose
    32 paced chunks take the simulator's timer slack on a loaded box."""
    a, b = r.ttfb(0.5), d.ttfb(0.5)
    return None if a is None or b is None else a - b


def detail_table(cells: Cells, *, ttfb: bool, cpu_digits: int) -> str:
    """One row per cell and side: rps, share of direct, p50/p99, p50 added over direct,
    (with ``ttfb``: first byte p50 and its part added), CPU per call, how busy the box was."""
    rows = []
    for (mode, conc, ms), res in cells.items():
        d = res["direct"]
        for name, r in res.items():
            sh = share(r, d)
            ad = added(r, d) if name != "direct" else None
            first: list[str] = []
            if ttfb:
                at = added_ttfb(r, d) if name != "direct" else None
                first = [fmt_ms(r.ttfb(0.5)), "-" if at is None else f"{at:+.2f}"]
            rows.append(
                [
                    f"{mode} c{conc} {ms}ms",
                    name,
                    f"{r.rps:.0f}",
                    "-" if sh is None else f"{sh:.0%}",
                    f"{fmt_ms(r.p(0.5))}/{fmt_ms(r.p(0.99))}",
                    "-" if ad is None else f"{ad:+.2f}",
                    *first,
                    fmt_ms(r.cpu_ms_per_req, cpu_digits),
                    f"{r.busy_pct:.0f}",
                    str(r.samples.errors),
                ]
            )
    header = ["cell", "side", "rps", "share", "p50/p99 ms", "added p50"]
    header += ["TTFB p50", "added TTFB"] if ttfb else []
    return render([*header, "CPU ms/call", "busy%", "errors"], rows)


def result_json(r: Result, *, ttfb: bool = False, latencies: bool = False) -> dict[str, Any]:
    """One side of one cell for a run's ``--json`` file."""
    out: dict[str, Any] = {
        "rps": r.rps,
        "ok": r.ok,
        "errors": r.samples.errors,
        "error_examples": r.samples.error_examples,
        "elapsed_s": r.samples.elapsed_s,
        "p50_ms": r.p(0.5),
        "p99_ms": r.p(0.99),
    }
    if ttfb:
        out["ttfb_p50_ms"] = r.ttfb(0.5)
    out["cpu_ms_per_call"] = r.cpu_ms_per_req
    out["busy_pct"] = r.busy_pct
    if latencies:
        out["latencies_ms"] = r.samples.latencies_ms
    return out


def with_headers(t: Target, extra: dict[str, str]) -> Target:
    return Target(t.url, {**t.headers, **extra}, t.body, t.stream, t.end)


# -- output ----------------------------------------------------------------------------------


def fmt_ms(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def pct_or_dash(v: float | None) -> str:
    return "-" if v is None else f"{v:.0%}"


def render(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain table: first two columns left-aligned, the rest right-aligned."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            f"{c:<{w}}" if i < 2 else f"{c:>{w}}"
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


# -- external state ----------------------------------------------------------------------------


def redis_cleanup(prefix: str, url: str = REDIS_URL) -> int:
    """Delete the keys under ``prefix:`` (SCAN, bounded; never FLUSHDB). Returns how many."""
    import redis

    r = redis.Redis.from_url(url, socket_timeout=5)
    deleted = 0
    try:
        for _ in range(1000):  # at most 1000 batches of up to 500 keys
            keys = list(r.scan_iter(match=f"{prefix}:*", count=500))[:500]
            if not keys:
                break
            deleted += int(r.delete(*keys))
    finally:
        r.close()
    return deleted


def find_pid(comm: str) -> int | None:
    """The pid of a process by its command name (``/proc/PID/comm``), to read its CPU; or None."""
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError):
                if (d / "comm").read_text().strip() == comm:
                    return int(d.name)
    return None


def redis_ping(url: str = REDIS_URL) -> None:
    import redis

    r = redis.Redis.from_url(url, socket_timeout=2)
    try:
        r.ping()
    finally:
        r.close()


@contextlib.asynccontextmanager
async def pg_schema(url: str = PG_URL) -> AsyncIterator[str]:
    """A fresh schema for this run and a URL bound to it (``?search_path=``); dropped afterwards."""
    import asyncpg

    schema = unique("rec")
    admin = await asyncpg.connect(url, timeout=5)
    try:
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        yield f"{url}{'&' if '?' in url else '?'}search_path={schema}"
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)

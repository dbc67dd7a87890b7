"""Gateway overhead: the same load sent straight to the simulator, through a bare proxy, and through ``bastion serve``.

Four processes on 127.0.0.1: the provider simulator (``bastion sim``), a minimal
pass-through proxy (``bench/bare_proxy.py``: uvicorn + aiohttp, no Bastion logic),
one ``bastion serve`` worker (default pipeline, SQLite store and state in a temp dir)
whose providers point at the simulator over real HTTP, and this load generator
(aiohttp, keep-alive pool, pre-encoded bodies, uvloop). Every cell of
API x mode x concurrency x upstream latency is measured three ways in the same run,
direct, through the bare proxy and through the gateway, so the figures that matter
are ratios and differences that the noise of a shared machine affects alike on every
side; the bare proxy shows how much of the gateway's overhead is the Python HTTP stack
itself. CPU comes from ``/proc/PID/stat`` and memory from ``/proc/PID/status``. Every
loop is bounded by a request count and a time limit.

    .venv/bin/python bench/overhead.py [--quick] [--soak N] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import asdict, astuple, dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
import orjson
import yaml

APIS = ("anthropic", "openai")
MODES = ("unary", "stream")
CONCURRENCY = (1, 10, 50)
UPSTREAM_MS = (0, 50)
STREAM_CHUNKS = 32
CHUNK_MS = 1
SIM_MODEL = {"anthropic": "claude-sonnet-5", "openai": "gpt-4.1"}
PATH = {"anthropic": "/v1/messages", "openai": "/v1/chat/completions"}
STREAM_END = {"anthropic": b"event: message_stop", "openai": b"data: [DONE]"}
CLK_TCK = os.sysconf("SC_CLK_TCK")
BASTION = (sys.executable, "-m", "bastion.cli")
BARE_PROXY = (sys.executable, str(Path(__file__).resolve().parent / "bare_proxy.py"))
PROMPT = (
    "You are a support assistant for a small online shop. Answer in two short sentences. "
    "Question: my parcel says delivered but I cannot find it; what should I do next?"
)


# -- settings --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """How much load each measurement gets; ``--quick`` shrinks everything for a sanity run."""

    requests_per_cell: int
    seconds_per_cell: float
    warmup_requests: int
    soak_requests: int
    soak_seconds: float
    rounds: int = 3
    soak_concurrency: int = 20


def settings_from(args: argparse.Namespace) -> Settings:
    if args.quick:
        base = Settings(300, 2.0, 20, 2_000, 60.0, rounds=2)
    else:
        base = Settings(2_000, 6.0, 50, 20_000, 300.0)
    soak = args.soak if args.soak is not None else base.soak_requests
    return Settings(
        requests_per_cell=args.requests or base.requests_per_cell,
        seconds_per_cell=args.seconds or base.seconds_per_cell,
        warmup_requests=base.warmup_requests,
        soak_requests=soak,
        soak_seconds=max(base.soak_seconds, soak / 50.0),
        rounds=base.rounds,
    )


# -- processes -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of one process so far (``/proc/PID/stat`` fields 14, 15)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from ``/proc/stat``: other tenants' load shows up here."""
    cols = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = cols[3] + cols[4]  # idle + iowait
    total = sum(cols[:8])  # guest time is already counted in user
    return total - idle, total


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Server:
    """A child process we started, stopped by its own PID (terminate, then kill)."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        port: int,
        log: Path,
        *,
        stop_signal: signal.Signals = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.port = port
        self.log = log
        self._stop_signal = stop_signal
        self._out: IO[bytes] = log.open("wb")
        self.proc = subprocess.Popen(
            list(argv), stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"{self.name} is not listening on 127.0.0.1:{self.port}")

    def tail(self) -> str:
        self._out.flush()
        return self.log.read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(self._stop_signal)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._out.close()


def alias(api: str, mode: str, upstream_ms: int) -> str:
    return f"bench-{api}-{mode}-{upstream_ms}ms"


def pacing_headers(mode: str, upstream_ms: int) -> dict[str, str]:
    """What the simulator is told, identically on both paths: TTFT, chunk gap, reply length.

    A unary answer gets no chunk gap (the simulator would add it per token), so its
    upstream latency is exactly the TTFT; a stream is 32 chunks 1 ms apart after it.
    """
    return {
        "x-sim-ttft-ms": str(upstream_ms),
        "x-sim-chunk-ms": str(CHUNK_MS if mode == "stream" else 0),
        "x-sim-reply-tokens": str(STREAM_CHUNKS),
    }


def gateway_config(tmp: Path, sim_port: int, upstream_ms: Sequence[int]) -> dict[str, Any]:
    sim = f"http://127.0.0.1:{sim_port}"
    models = {
        alias(api, mode, ms): {
            "deployments": [
                {
                    "provider": f"sim-{api}",
                    "model": SIM_MODEL[api],
                    "headers": pacing_headers(mode, ms),
                }
            ]
        }
        for api in APIS
        for mode in MODES
        for ms in upstream_ms
    }
    return {
        "store": {"url": f"sqlite:///{tmp / 'bastion.db'}"},
        # the embedded defaults, but in the temp dir rather than the working directory
        "state": {"url": f"sqlite:///{tmp / 'bastion-state.db'}"},
        "observability": {"spill_path": str(tmp / "bastion-spill.jsonl")},
        "providers": {
            "sim-anthropic": {"kind": "anthropic", "base_url": sim},
            "sim-openai": {"kind": "openai", "base_url": sim + "/v1"},
        },
        "models": models,
    }


def create_key(config: Path) -> str:
    out = subprocess.run(
        [*BASTION, "keys", "create", "--name", "bench", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return next(ln.split()[-1] for ln in out.splitlines() if ln.startswith("secret:"))


# -- requests --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One pre-encoded request: URL, headers and body bytes never change during a run."""

    url: str
    headers: dict[str, str]
    body: bytes
    stream: bool
    end: bytes


def request_body(api: str, model: str, stream: bool) -> bytes:
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": 256,
        "messages": [{"role": "user", "content": PROMPT}],
    }
    if stream:
        body["stream"] = True
        if api == "openai":
            # The gateway asks for usage on every OpenAI stream; ask for it directly too.
            body["stream_options"] = {"include_usage": True}
    return orjson.dumps(body)


def target(api: str, mode: str, upstream_ms: int, *, base: str, key: str | None) -> Target:
    """The direct request (``key`` None: pacing in our headers) or the gateway one (pacing in config)."""
    stream = mode == "stream"
    headers = {"content-type": "application/json"}
    if api == "anthropic":
        headers["anthropic-version"] = "2023-06-01"
    if stream:
        headers["accept"] = "text/event-stream"
    if key is None:
        headers.update(pacing_headers(mode, upstream_ms))
        model = SIM_MODEL[api]
    else:
        model = alias(api, mode, upstream_ms)
        if api == "anthropic":
            headers["x-api-key"] = key
        else:
            headers["authorization"] = "Bearer " + key
    return Target(
        base + PATH[api], headers, request_body(api, model, stream), stream, STREAM_END[api]
    )


@dataclass
class Samples:
    """What one bounded burst of load produced."""

    latencies_ms: list[float] = field(default_factory=list)
    ttfb_ms: list[float] = field(default_factory=list)
    errors: int = 0
    error_examples: list[str] = field(default_factory=list)
    body_bytes: int = 0
    elapsed_s: float = 0.0

    @property
    def done(self) -> int:
        return len(self.latencies_ms) + self.errors

    def fail(self, what: str) -> None:
        self.errors += 1
        if len(self.error_examples) < 3:
            self.error_examples.append(what)


async def one_request(session: aiohttp.ClientSession, t: Target, out: Samples) -> None:
    """Send one request; a stream counts only if it ends with its terminator and no error event."""
    t0 = time.perf_counter()
    t_first = 0.0
    try:
        async with session.post(t.url, data=t.body, headers=t.headers) as resp:
            if t.stream:
                data = await resp.content.readany()
                t_first = time.perf_counter()
                size = len(data)
                bad = b'"error"' in data
                while chunk := await resp.content.readany():
                    size += len(chunk)
                    data = data[-128:] + chunk
                    bad = bad or b'"error"' in chunk
                ok = resp.status == 200 and not bad and t.end in data[-128:]
            else:
                data = await resp.read()
                size = len(data)
                ok = resp.status == 200
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
    out.body_bytes += size


async def drive(
    session: aiohttp.ClientSession,
    targets: Sequence[Target],
    concurrency: int,
    count: int,
    seconds: float,
    out: Samples | None = None,
) -> Samples:
    """A closed loop of ``concurrency`` workers until ``count`` requests or ``seconds`` pass."""
    out = Samples() if out is None else out
    issued = 0
    start = time.perf_counter()
    deadline = start + seconds

    async def worker() -> None:
        nonlocal issued
        while issued < count and time.perf_counter() < deadline:
            t = targets[issued % len(targets)]
            issued += 1
            await one_request(session, t, out)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    out.elapsed_s += time.perf_counter() - start
    return out


@contextlib.asynccontextmanager
async def client(concurrency: int) -> AsyncIterator[aiohttp.ClientSession]:
    """A keep-alive pool of exactly ``concurrency`` connections, reused across rounds.

    Idle connections are dropped after 3 s, before uvicorn's 5 s keep-alive timeout closes
    them from the server side: reusing one the server is closing at that moment fails with
    "Can not write request body" (with three sides, a side idles ~4 s between rounds).
    """
    connector = aiohttp.TCPConnector(limit=concurrency, keepalive_timeout=3)
    async with aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=30),
        skip_auto_headers=("User-Agent",),
        auto_decompress=False,
    ) as session:
        yield session


# -- measurements ----------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float | None:
    """Percentile by linear interpolation (``None`` when there is nothing to rank)."""
    if not values:
        return None
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclass
class Side:
    """One side (direct or bastion) of one cell, summarized; the raw samples stay alongside."""

    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    ttfb_p50_ms: float | None
    ttfb_p99_ms: float | None
    body_bytes_mean: float
    sim_cpu_ms_per_req: float
    loadgen_cpu_ms_per_req: float
    proxy_cpu_ms_per_req: float | None
    gateway_cpu_ms_per_req: float | None
    gateway_user_ms_per_req: float | None
    gateway_sys_ms_per_req: float | None
    machine_busy_pct: float
    error_examples: list[str]
    latencies_ms: list[float]
    ttfb_ms: list[float]


@dataclass
class Cell:
    api: str
    mode: str
    concurrency: int
    upstream_ms: int
    direct: Side
    bare: Side
    bastion: Side

    @property
    def ratio(self) -> float:
        return self.bastion.rps / self.direct.rps if self.direct.rps else 0.0

    @property
    def added_p50_ms(self) -> float | None:
        if self.direct.p50_ms is None or self.bastion.p50_ms is None:
            return None
        return self.bastion.p50_ms - self.direct.p50_ms

    @property
    def added_ttfb_p50_ms(self) -> float | None:
        if self.direct.ttfb_p50_ms is None or self.bastion.ttfb_p50_ms is None:
            return None
        return self.bastion.ttfb_p50_ms - self.direct.ttfb_p50_ms

    @property
    def bare_ratio(self) -> float:
        return self.bare.rps / self.direct.rps if self.direct.rps else 0.0

    @property
    def bare_added_p50_ms(self) -> float | None:
        if self.direct.p50_ms is None or self.bare.p50_ms is None:
            return None
        return self.bare.p50_ms - self.direct.p50_ms


@dataclass(frozen=True)
class Usage:
    """CPU seconds per process, and busy/total jiffies of the whole machine."""

    sim: float = 0.0
    proxy: float = 0.0
    gw_user: float = 0.0
    gw_sys: float = 0.0
    loadgen: float = 0.0
    busy: int = 0
    total: int = 0

    def __add__(self, o: Usage) -> Usage:
        return Usage(*(a + b for a, b in zip(astuple(self), astuple(o), strict=True)))

    def __sub__(self, o: Usage) -> Usage:
        return Usage(*(a - b for a, b in zip(astuple(self), astuple(o), strict=True)))


class Meter:
    """Reads the CPU of the simulator, the bare proxy, the gateway and this process, plus the machine's load."""

    def __init__(self, sim_pid: int, proxy_pid: int, gw_pid: int) -> None:
        self.sim_pid = sim_pid
        self.proxy_pid = proxy_pid
        self.gw_pid = gw_pid

    def read(self) -> Usage:
        gw_user, gw_sys = cpu_times(self.gw_pid)
        busy, total = machine_busy()
        return Usage(
            sum(cpu_times(self.sim_pid)),
            sum(cpu_times(self.proxy_pid)),
            gw_user,
            gw_sys,
            sum(cpu_times(os.getpid())),
            busy,
            total,
        )


def summarize(r: Samples, u: Usage, *, through_gateway: bool, through_proxy: bool = False) -> Side:
    n = max(r.done, 1)
    ok = len(r.latencies_ms)

    def per_req(seconds: float) -> float:
        return seconds * 1000.0 / n

    return Side(
        requests=r.done,
        errors=r.errors,
        seconds=r.elapsed_s,
        rps=ok / r.elapsed_s if r.elapsed_s else 0.0,
        p50_ms=pct(r.latencies_ms, 0.50),
        p99_ms=pct(r.latencies_ms, 0.99),
        ttfb_p50_ms=pct(r.ttfb_ms, 0.50),
        ttfb_p99_ms=pct(r.ttfb_ms, 0.99),
        body_bytes_mean=r.body_bytes / ok if ok else 0.0,
        sim_cpu_ms_per_req=per_req(u.sim),
        loadgen_cpu_ms_per_req=per_req(u.loadgen),
        proxy_cpu_ms_per_req=per_req(u.proxy) if through_proxy else None,
        gateway_cpu_ms_per_req=per_req(u.gw_user + u.gw_sys) if through_gateway else None,
        gateway_user_ms_per_req=per_req(u.gw_user) if through_gateway else None,
        gateway_sys_ms_per_req=per_req(u.gw_sys) if through_gateway else None,
        machine_busy_pct=100.0 * u.busy / max(u.total, 1),
        error_examples=r.error_examples,
        latencies_ms=[round(v, 3) for v in r.latencies_ms],
        ttfb_ms=[round(v, 3) for v in r.ttfb_ms],
    )


async def measure(
    direct: Target, bare: Target, gateway: Target, concurrency: int, s: Settings, meter: Meter
) -> tuple[Side, Side, Side]:
    """All three sides of one cell in alternating rounds, so a burst of noise hits each alike."""
    per_round = -(-s.requests_per_cell // s.rounds)
    seconds = s.seconds_per_cell / s.rounds
    warm = max(s.warmup_requests, 2 * concurrency)
    async with (
        client(concurrency) as d_session,
        client(concurrency) as p_session,
        client(concurrency) as g_session,
    ):
        sides = ((d_session, direct), (p_session, bare), (g_session, gateway))
        for session, t in sides:
            await drive(session, [t], concurrency, warm, min(3.0, s.seconds_per_cell))
        samples = (Samples(), Samples(), Samples())
        usage = [Usage(), Usage(), Usage()]
        for _ in range(s.rounds):
            for i, (session, t) in enumerate(sides):
                # re-open the pool's connections outside the measurement (see ``client``)
                await drive(session, [t], concurrency, concurrency, 2.0)
                before = meter.read()
                await drive(session, [t], concurrency, per_round, seconds, samples[i])
                usage[i] = usage[i] + (meter.read() - before)
    return (
        summarize(samples[0], usage[0], through_gateway=False),
        summarize(samples[1], usage[1], through_gateway=False, through_proxy=True),
        summarize(samples[2], usage[2], through_gateway=True),
    )


@dataclass
class Soak:
    requests: int
    errors: int
    seconds: float
    rss_start_mb: float
    rss_before_mb: float
    rss_after_mb: float
    rss_trace_mb: list[float]

    @property
    def growth(self) -> float:
        return (self.rss_after_mb - self.rss_before_mb) / self.rss_before_mb


async def soak(targets: Sequence[Target], s: Settings, gw_pid: int, rss_start: float) -> Soak:
    """A mix of every API x mode through the gateway, RSS sampled before, during and after."""
    trace: list[float] = []
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            trace.append(round(rss_mb(gw_pid), 1))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    before = rss_mb(gw_pid)
    sampler = asyncio.ensure_future(sample())
    try:
        async with client(s.soak_concurrency) as session:
            r = await drive(session, targets, s.soak_concurrency, s.soak_requests, s.soak_seconds)
    finally:
        stop.set()
        await sampler
    await asyncio.sleep(0.5)
    return Soak(r.done, r.errors, r.elapsed_s, rss_start, before, rss_mb(gw_pid), trace)


# -- report ----------------------------------------------------------------------------------


def fmt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def pair(a: float | None, b: float | None) -> str:
    return "-" if a is None else f"{fmt(a)}/{fmt(b)}"


COLUMNS = (
    ("api", "<", 9),
    ("mode", "<", 6),
    ("conc", ">", 4),
    ("up ms", ">", 5),
    ("direct rps", ">", 10),
    ("bare rps", ">", 8),
    ("bastion rps", ">", 11),
    ("ratio", ">", 5),
    ("direct p50/p99", ">", 14),
    ("bastion p50/p99", ">", 15),
    ("added p50", ">", 9),
    ("bare added p50", ">", 14),
    ("direct TTFB p50/p99", ">", 19),
    ("bastion TTFB p50/p99", ">", 20),
    ("gw CPU ms/req", ">", 13),
    ("bare CPU ms/req", ">", 15),
    ("box busy% d/p/b", ">", 15),
    ("errors d/p/b", ">", 12),
)


def row(values: Sequence[str]) -> str:
    return "  ".join(f"{v:{a}{w}}" for v, (_, a, w) in zip(values, COLUMNS, strict=True))


def table(cells: Sequence[Cell]) -> str:
    lines = [row([c[0] for c in COLUMNS]), row(["-" * w for _, _, w in COLUMNS])]
    for c in cells:
        d, p, b = c.direct, c.bare, c.bastion
        lines.append(
            row(
                [
                    c.api,
                    c.mode,
                    str(c.concurrency),
                    str(c.upstream_ms),
                    f"{d.rps:.0f}",
                    f"{p.rps:.0f}",
                    f"{b.rps:.0f}",
                    f"{c.ratio:.2f}",
                    pair(d.p50_ms, d.p99_ms),
                    pair(b.p50_ms, b.p99_ms),
                    fmt(c.added_p50_ms, 2),
                    fmt(c.bare_added_p50_ms, 2),
                    pair(d.ttfb_p50_ms, d.ttfb_p99_ms),
                    pair(b.ttfb_p50_ms, b.ttfb_p99_ms),
                    fmt(b.gateway_cpu_ms_per_req, 2),
                    fmt(p.proxy_cpu_ms_per_req, 2),
                    f"{d.machine_busy_pct:.0f}/{p.machine_busy_pct:.0f}/{b.machine_busy_pct:.0f}",
                    f"{d.errors}/{p.errors}/{b.errors}",
                ]
            )
        )
    return "\n".join(lines)


@dataclass
class Check:
    name: str
    passed: bool
    measured: str


def worst(
    cells: Sequence[Cell], pick: Callable[[Cell], bool], value: Callable[[Cell], float | None]
) -> tuple[float, Cell] | None:
    """The cell with the highest ``value`` among those ``pick`` selects."""
    scored = [(v, c) for c in cells if pick(c) and (v := value(c)) is not None]
    return max(scored, key=lambda x: x[0]) if scored else None


def where(c: Cell) -> str:
    return f"{c.api} {c.mode} conc {c.concurrency} up {c.upstream_ms} ms"


def added_whole(c: Cell) -> float | None:
    return c.added_p50_ms


def added_first_byte(c: Cell) -> float | None:
    return c.added_ttfb_p50_ms


def checks(cells: Sequence[Cell], s: Soak) -> list[Check]:
    out: list[Check] = []
    conc1 = [c for c in cells if c.concurrency == 1]
    for mode, label, value in (
        ("unary", "non-streaming, whole response", added_whole),
        ("stream", "streams, first byte", added_first_byte),
        ("stream", "streams, whole stream", added_whole),
    ):
        added = worst([c for c in conc1 if c.mode == mode], lambda c: True, value)
        if added:
            out.append(
                Check(
                    f"added latency p50 <= 1 ms at concurrency 1 ({label})",
                    added[0] <= 1.0,
                    f"worst {added[0]:.2f} ms ({where(added[1])})",
                )
            )
    for mode, limit, label in (
        ("unary", 1.0, "non-streaming request"),
        ("stream", 4.0, "32-chunk stream"),
    ):
        same_mode = [c for c in cells if c.mode == mode]
        cpu = worst(same_mode, lambda c: True, lambda c: c.bastion.gateway_cpu_ms_per_req)
        if cpu:
            out.append(
                Check(
                    f"gateway CPU <= {limit:g} ms per {label}",
                    cpu[0] <= limit,
                    f"worst {cpu[0]:.2f} ms ({where(cpu[1])})",
                )
            )
    ratio = worst(cells, lambda c: c.concurrency == 50 and c.upstream_ms == 50, lambda c: -c.ratio)
    if ratio:
        out.append(
            Check(
                "throughput >= 80% of direct at concurrency 50, 50 ms upstream",
                -ratio[0] >= 0.80,
                f"worst {-ratio[0]:.0%} ({where(ratio[1])})",
            )
        )
    if not s.requests:
        return out  # no soak (--soak 0): nothing to judge memory by
    out.append(
        Check("gateway RSS < 150 MB", s.rss_after_mb < 150.0, f"{s.rss_after_mb:.1f} MB after soak")
    )
    out.append(
        Check(
            "gateway RSS flat over the soak (growth < 10%)",
            s.growth < 0.10,
            f"{s.growth:+.1%} ({s.rss_before_mb:.1f} -> {s.rss_after_mb:.1f} MB over {s.requests} requests)",
        )
    )
    return out


def loadgen_share(side: Side) -> float:
    """Percent of one core this process used while measuring ``side``."""
    return (
        side.loadgen_cpu_ms_per_req * side.requests / side.seconds / 10.0 if side.seconds else 0.0
    )


def floor_summary(cells: Sequence[Cell]) -> list[str]:
    """How much of Bastion's added latency and CPU the bare proxy pays too, per mode (medians)."""
    out = []
    for mode in MODES:
        sel = [c for c in cells if c.mode == mode]
        lat = [
            (c.bare_added_p50_ms, c.added_p50_ms - c.bare_added_p50_ms)
            for c in sel
            if c.added_p50_ms is not None and c.bare_added_p50_ms is not None
        ]
        cpu = [
            (c.bare.proxy_cpu_ms_per_req, c.bastion.gateway_cpu_ms_per_req)
            for c in sel
            if c.bare.proxy_cpu_ms_per_req is not None
            and c.bastion.gateway_cpu_ms_per_req is not None
        ]
        if not lat or not cpu:
            continue
        own = [b for _, b in lat]
        out.append(
            f"{mode}: median over cells, the bare proxy adds {pct([a for a, _ in lat], 0.5):.2f} ms"
            f" p50 and Bastion {pct(own, 0.5):.2f} ms more (bastion - bare);"
            f" CPU {pct([a for a, _ in cpu], 0.5):.2f} vs {pct([b for _, b in cpu], 0.5):.2f} ms/req"
            " (bare vs gateway)"
        )
    return out


def report(cells: Sequence[Cell], s: Soak, results: Sequence[Check], meta: dict[str, Any]) -> str:
    lg = worst(
        cells,
        lambda c: True,
        lambda c: max(loadgen_share(c.direct), loadgen_share(c.bare), loadgen_share(c.bastion)),
    )
    lines = [
        f"Bastion gateway overhead  ({meta['cpus']} CPUs, load avg at start {meta['loadavg_start']}, "
        f"python {meta['python']}, {meta['mode']} run, source {meta['source']})",
        "latencies in ms; ratio = bastion rps / direct rps; added p50 = bastion p50 - direct p50;",
        "bare = minimal uvicorn+aiohttp pass-through proxy (bench/bare_proxy.py), bare added p50 =",
        "bare p50 - direct p50; TTFB = first SSE body byte (streams only); gw / bare CPU = that",
        "process's user+sys CPU / requests; busy% and errors are direct/bare/bastion",
        "",
        table(cells),
        "",
        *floor_summary(cells),
        f"gateway RSS: {s.rss_start_mb:.1f} MB after start-up, {s.rss_before_mb:.1f} MB before the soak, "
        f"{s.rss_after_mb:.1f} MB after {s.requests} requests ({s.growth:+.1%}; "
        f"{s.errors} errors, {s.requests / max(s.seconds, 1e-9):.0f} req/s, min/max during "
        f"{min(s.rss_trace_mb, default=0):.1f}/{max(s.rss_trace_mb, default=0):.1f} MB)",
    ]
    if lg:
        lines.append(
            f"load generator: at most {lg[0]:.0f}% of one core in any measurement ({where(lg[1])})"
        )
    lines += ["", "targets:"]
    for c in results:
        lines.append(f"  {'PASS' if c.passed else 'MISS'}  {c.name}: {c.measured}")
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------------


@contextlib.contextmanager
def servers(
    tmp: Path, profile: Path | None, upstream_ms: Sequence[int]
) -> Iterator[tuple[Server, Server, Server, str]]:
    """The simulator, the bare proxy and the gateway, started on free ports and always stopped by PID."""
    started: list[Server] = []
    try:
        sim_port = free_port()
        sim = Server(
            "simulator",
            [*BASTION, "sim", "--port", str(sim_port)],
            sim_port,
            tmp / "sim.log",
        )
        started.append(sim)
        proxy_port = free_port()
        proxy = Server(
            "bare proxy",
            [
                *BARE_PROXY,
                "--port",
                str(proxy_port),
                "--upstream",
                f"http://127.0.0.1:{sim_port}",
            ],
            proxy_port,
            tmp / "bare_proxy.log",
        )
        started.append(proxy)
        config = tmp / "bastion.yaml"
        config.write_text(yaml.safe_dump(gateway_config(tmp, sim_port, upstream_ms)))
        key = create_key(config)
        gw_port = free_port()
        argv = [*BASTION, "serve", "--config", str(config), "--port", str(gw_port)]
        stop_signal = signal.SIGTERM
        if profile is not None:
            # uvicorn re-raises the signal it stopped on; SIGINT ends in KeyboardInterrupt,
            # which lets cProfile write its stats (SIGTERM would kill it before that).
            argv[1:1] = ["-m", "cProfile", "-o", str(profile)]
            stop_signal = signal.SIGINT
        gw = Server("gateway", argv, gw_port, tmp / "gateway.log", stop_signal=stop_signal)
        started.append(gw)
        sim.wait_ready()
        proxy.wait_ready()
        gw.wait_ready()
        yield sim, proxy, gw, key
    finally:
        for proc in reversed(started):
            proc.stop()


def source_version() -> str:
    """The commit measured, and whether ``src/`` had uncommitted changes (read-only git calls)."""
    root = Path(__file__).resolve().parent.parent

    def git(*a: str) -> str:
        return subprocess.run(
            ["git", *a], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        dirty = git("status", "--porcelain", "--", "src")
        return git("rev-parse", "--short", "HEAD") + (" + uncommitted src changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


async def run(args: argparse.Namespace, s: Settings) -> dict[str, Any]:
    meta = {
        "source": source_version(),
        "cpus": os.cpu_count(),
        "loadavg_start": " ".join(f"{v:.2f}" for v in os.getloadavg()),
        "python": platform.python_version(),
        "mode": "quick" if args.quick else "full",
        "settings": asdict(s),
    }
    with (
        tempfile.TemporaryDirectory(prefix="bastion-bench-") as d,
        servers(Path(d), args.profile, args.upstream) as (
            sim,
            proxy,
            gw,
            key,
        ),
    ):
        direct_base = f"http://127.0.0.1:{sim.port}"
        proxy_base = f"http://127.0.0.1:{proxy.port}"
        gw_base = f"http://127.0.0.1:{gw.port}"
        meter = Meter(sim.pid, proxy.pid, gw.pid)
        rss_start = rss_mb(gw.pid)
        print(
            f"simulator pid {sim.pid}, bare proxy pid {proxy.pid}, gateway pid {gw.pid}",
            file=sys.stderr,
            flush=True,
        )
        cells: list[Cell] = []
        matrix = [
            (api, mode, ms, conc)
            for api in args.api
            for mode in args.mode
            for ms in args.upstream
            for conc in args.conc
        ]
        for api, mode, ms, conc in matrix:
            t_direct = target(api, mode, ms, base=direct_base, key=None)
            # the bare proxy forwards our headers, so it gets the direct request, pacing and all
            t_bare = target(api, mode, ms, base=proxy_base, key=None)
            t_gw = target(api, mode, ms, base=gw_base, key=key)
            direct, bare, bastion = await measure(t_direct, t_bare, t_gw, conc, s, meter)
            cell = Cell(api, mode, conc, ms, direct, bare, bastion)
            cells.append(cell)
            print(
                f"[{len(cells):2d}/{len(matrix)}] {where(cell)}: direct {direct.rps:.0f} rps,"
                f" bare {bare.rps:.0f} rps, bastion {bastion.rps:.0f} rps, gw CPU"
                f" {fmt(bastion.gateway_cpu_ms_per_req, 2)} ms/req",
                file=sys.stderr,
                flush=True,
            )
        if s.soak_requests:
            print(f"soak: {s.soak_requests} requests through the gateway ...", file=sys.stderr)
        mix = [target(api, mode, 0, base=gw_base, key=key) for api in APIS for mode in MODES]
        soaked = await soak(mix, s, gw.pid, rss_start)
    results = checks(cells, soaked)
    print(report(cells, soaked, results, meta))
    return {
        "meta": meta,
        "cells": [
            {
                **{k: v for k, v in asdict(c).items() if k not in ("direct", "bare", "bastion")},
                "ratio": c.ratio,
                "added_p50_ms": c.added_p50_ms,
                "bare_ratio": c.bare_ratio,
                "bare_added_p50_ms": c.bare_added_p50_ms,
                "direct": asdict(c.direct),
                "bare": asdict(c.bare),
                "bastion": asdict(c.bastion),
            }
            for c in cells
        ],
        "soak": {**asdict(soaked), "growth": soaked.growth},
        "targets": [asdict(c) for c in results],
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--quick", action="store_true", help="fewer requests per cell, 2,000-request soak"
    )
    p.add_argument("--soak", type=int, help="requests in the RSS soak (default 20,000)")
    p.add_argument("--requests", type=int, help="max measured requests per cell and side")
    p.add_argument("--seconds", type=float, help="max measured seconds per cell and side")
    p.add_argument("--api", nargs="+", choices=APIS, default=APIS, help="only these APIs")
    p.add_argument("--mode", nargs="+", choices=MODES, default=MODES, help="only these modes")
    p.add_argument(
        "--conc", nargs="+", type=int, default=CONCURRENCY, help="only these concurrencies"
    )
    p.add_argument(
        "--upstream",
        nargs="+",
        type=int,
        default=UPSTREAM_MS,
        help="only these upstream TTFTs (ms)",
    )
    p.add_argument("--json", type=Path, help="write the raw numbers to this file")
    p.add_argument(
        "--profile", type=Path, help="run the gateway under cProfile, stats written to this file"
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    s = settings_from(args)
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        data = runner.run(run(args, s))
    if args.json:
        args.json.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
        print(f"\nraw numbers written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

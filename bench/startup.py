"""Start-up to healthy, import time and RSS of ``bastion serve``, against a bare uvicorn app.

Issue 16 asks for start-up <= 1 s to healthy and RSS <= 120 MB, flat over many calls. Every
figure is measured in the same run as its baseline, interleaved (baseline, bastion, baseline,
bastion, ...), because this 2-core machine is shared and its load moves the absolute numbers:

- start-up: from ``Popen`` to the first ``GET /healthz`` answered 200, for ``bastion serve``
  (default pipeline, SQLite store and state in a temp dir, the in-process simulator) and for a
  bare uvicorn app from the same venv (one ASGI callable answering 200, uvloop and httptools:
  the floor of any Python server on this stack); the bare interpreter (``python -c pass``) too;
- import: ``python -c "import bastion.cli"`` wall time, against ``python -c "import uvicorn"``;
- with ``--before DIR`` (a ``src/`` tree of another commit, e.g. from ``git archive``), the same
  start-up and import measured for that source too (``PYTHONPATH=DIR/src``), interleaved with
  the others, so a change is judged against its parent in one run;
- RSS (``VmRSS``): after start-up, then after K unary calls through HTTP (aiohttp, keep-alive,
  concurrency 10), then after K more: flat means the second K adds nothing.

Every process is on 127.0.0.1 on a free port and is stopped by its PID whatever happens;
every loop is bounded by a count and a time limit.

    .venv/bin/python bench/startup.py            # 7 starts per side, 2 x 20,000 calls
    .venv/bin/python bench/startup.py --quick    # 3 starts per side, 2 x 2,000 calls
    mkdir /tmp/before && git archive HEAD~3 src | tar -x -C /tmp/before
    .venv/bin/python bench/startup.py --before /tmp/before
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from harness import meta, meta_line, render, run_async
from overhead import BASTION, Server, create_key, free_port, rss_mb


class EnvServer(Server):
    """``overhead.Server`` with an environment of its own (PYTHONPATH for the --before side)."""

    def __init__(
        self, name: str, argv: Sequence[str], port: int, log: Path, env: dict[str, str] | None
    ) -> None:
        self.name = name
        self.port = port
        self.log = log
        self._stop_signal = signal.SIGTERM
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            list(argv), stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )


BARE_APP = textwrap.dedent(
    """
    import sys
    import uvicorn

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"status":"ok"}'})

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop",
                http="httptools", access_log=False, log_level="warning", lifespan="off")
    """
)
HEALTH_TIMEOUT_S = 30.0
POLL_S = 0.005
CALL_CONCURRENCY = 10
CALL_SECONDS_MAX = 300.0
MODEL = "gpt-4.1"


@dataclass
class Side:
    name: str
    src: Path | None = None  # another source tree to run bastion from (PYTHONPATH)
    starts_s: list[float] = field(default_factory=list)
    rss_start_mb: list[float] = field(default_factory=list)
    imports_s: list[float] = field(default_factory=list)

    def env(self) -> dict[str, str] | None:
        if self.src is None:
            return None
        return {**os.environ, "PYTHONPATH": str(self.src / "src")}


def healthy_after(server: Server, started: float) -> float:
    """Seconds from ``started`` to the first 200 on /healthz (polled every 5 ms)."""
    url = f"http://127.0.0.1:{server.port}/healthz"
    end = started + HEALTH_TIMEOUT_S
    while time.perf_counter() < end:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited {server.proc.returncode}: {server.tail()}")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                if resp.status == 200:
                    return time.perf_counter() - started
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(POLL_S)
    raise TimeoutError(f"{server.name}: /healthz not 200 within {HEALTH_TIMEOUT_S:g}s")


def bastion_config(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    cfg = {
        "store": {"url": f"sqlite:///{d / 'bastion.db'}"},
        "state": {"url": f"sqlite:///{d / 'bastion-state.db'}"},
        "observability": {"spill_path": str(d / "bastion-spill.jsonl")},
    }
    path = d / "bastion.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def start_once(side: Side, tmp: Path, i: int, config: Path) -> Server:
    """One start of this side, timed to healthy; the caller stops it."""
    port = free_port()
    log = tmp / f"{side.name}-{i}.log"
    if side.name.startswith("bastion"):
        argv: Sequence[str] = [*BASTION, "serve", "--config", str(config), "--port", str(port)]
    else:
        argv = [sys.executable, "-c", BARE_APP, str(port)]
    t0 = time.perf_counter()
    server = EnvServer(side.name, argv, port, log, side.env())
    try:
        side.starts_s.append(healthy_after(server, t0))
        side.rss_start_mb.append(rss_mb(server.pid))
    except BaseException:
        server.stop()
        raise
    return server


def wall(argv: Sequence[str], env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run(list(argv), check=True, timeout=60, capture_output=True, env=env)
    return time.perf_counter() - t0


async def calls(port: int, key: str, n: int) -> tuple[int, int]:
    """``n`` unary chat calls through the gateway (bounded by CALL_SECONDS_MAX); (ok, errors)."""
    body = json.dumps(
        {"model": MODEL, "max_tokens": 32, "messages": [{"role": "user", "content": "Hello"}]}
    ).encode()
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    left = n
    ok = errors = 0
    deadline = time.monotonic() + CALL_SECONDS_MAX

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal left, ok, errors
        while left > 0 and time.monotonic() < deadline:
            left -= 1
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                if resp.status == 200:
                    ok += 1
                else:
                    errors += 1

    conn = aiohttp.TCPConnector(limit=CALL_CONCURRENCY)
    async with aiohttp.ClientSession(connector=conn) as session:
        await asyncio.gather(*(worker(session) for _ in range(CALL_CONCURRENCY)))
    return ok, errors


def stats(xs: Sequence[float]) -> tuple[float, float, float]:
    return statistics.median(xs), min(xs), max(xs)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 starts per side, 2 x 2,000 calls")
    ap.add_argument("--starts", type=int, help="starts per side (at most 30)")
    ap.add_argument("--calls", type=int, help="calls per RSS step (at most 100,000)")
    ap.add_argument("--json", type=Path, help="write the raw numbers here")
    ap.add_argument("--before", type=Path, help="also measure bastion from DIR/src (a baseline)")
    args = ap.parse_args(argv)
    starts = min(args.starts or (3 if args.quick else 7), 30)
    k = min(args.calls or (2_000 if args.quick else 20_000), 100_000)
    m = meta()
    bare, bastion = Side("bare-uvicorn"), Side("bastion")
    before = Side("bastion-before", src=args.before.resolve()) if args.before else None
    sides = [bare, bastion] if before is None else [bare, before, bastion]
    out: dict[str, Any] = {"meta": m, "starts": starts, "calls": k}
    with tempfile.TemporaryDirectory(prefix="bastion-startup-") as tmp_s:
        tmp = Path(tmp_s)
        config = bastion_config(tmp / "gw")
        key = create_key(config)  # the store exists before the first timed start
        interp, imp_uv = [], []
        for i in range(starts):
            for side in sides:
                start_once(side, tmp, i, config).stop()
            interp.append(wall([sys.executable, "-c", "pass"]))
            imp_uv.append(wall([sys.executable, "-c", "import uvicorn"]))
            for side in sides[1:]:
                side.imports_s.append(
                    wall([sys.executable, "-c", "import bastion.cli"], side.env())
                )
        # RSS over calls: one more start of each, the bare app gets the same number of GETs
        gw = start_once(bastion, tmp, starts, config)
        try:
            rss0 = rss_mb(gw.pid)
            ok1, err1 = run_async(calls(gw.port, key, k))
            rss1 = rss_mb(gw.pid)
            ok2, err2 = run_async(calls(gw.port, key, k))
            rss2 = rss_mb(gw.pid)
        finally:
            gw.stop()
    table = [("python -c pass", interp), ("import uvicorn", imp_uv)]
    table += [(f"import bastion.cli ({s.name})", s.imports_s) for s in sides[1:]]
    table += [(f"{s.name}: start -> /healthz 200", s.starts_s) for s in sides]
    rows = []
    for name, xs in table:
        p50, lo, hi = stats(xs)
        rows.append([name, f"{p50 * 1000:.0f}", f"{lo * 1000:.0f}", f"{hi * 1000:.0f}"])
    print(meta_line("Bastion start-up and RSS", m))
    print(f"{starts} starts per side, interleaved; times in ms\n")
    print(render(["what", "p50", "min", "max"], rows))
    print()
    for s in sides[1:]:
        ratio = statistics.median(s.starts_s) / statistics.median(bare.starts_s)
        print(f"{s.name} / bare uvicorn start-up (p50): {ratio:.2f}x")
    if before is not None:
        ratio = statistics.median(bastion.starts_s) / statistics.median(before.starts_s)
        print(f"bastion / bastion-before start-up (p50): {ratio:.2f}x")
    print(
        "RSS after start-up (p50): "
        + ", ".join(f"{s.name} {statistics.median(s.rss_start_mb):.1f} MB" for s in sides)
    )
    print(
        f"bastion RSS: {rss0:.1f} MB after start, {rss1:.1f} MB after {ok1:,} calls "
        f"({err1} errors), {rss2:.1f} MB after {ok1 + ok2:,} ({err2} errors): "
        f"second {k:,} {rss2 - rss1:+.1f} MB"
    )
    out.update(
        interp_s=interp,
        import_uvicorn_s=imp_uv,
        sides={
            s.name: {"start_s": s.starts_s, "rss_mb": s.rss_start_mb, "import_s": s.imports_s}
            for s in sides
        },
        rss_calls_mb=[rss0, rss1, rss2],
        calls_ok=[ok1, ok2],
        calls_errors=[err1, err2],
    )
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

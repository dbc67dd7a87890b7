"""A real `bastion serve --workers N` on Redis state, for the test_workers_redis_* tests."""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import redis
from prometheus_client.parser import text_string_to_metric_families
from tests.conftest import BIN, free_port, stop, wait_port, write_config

REDIS_URL = "redis://127.0.0.1:6379/0"
_PIDS = re.compile(r"workers on one port \(.*\), pids ([0-9, ]+)")
_RESTARTED = re.compile(
    r"worker (\d+) \(pid (\d+)\) exited unexpectedly with (-?\d+); restarted as pid (\d+)"
)


@dataclass
class Workers:
    url: str
    key: str  # an admin key that may name end users
    config_path: Path
    proc: subprocess.Popen[bytes]
    log_path: Path
    prefix: str

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def pids(self) -> list[int]:
        """The workers' pids as the supervisor announced them at start."""
        m = _PIDS.search(self.log())
        assert m is not None, self.log()
        return [int(p) for p in m.group(1).split(",")]

    def restarts(self) -> list[tuple[int, int, int, int]]:
        """(worker id, old pid, exit code, new pid) per restart the supervisor logged."""
        return [tuple(int(g) for g in m.groups()) for m in _RESTARTED.finditer(self.log())]  # type: ignore[misc]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "bastion"), *args, "--config", str(self.config_path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def metrics(self) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        """sample name -> labels (sorted, worker included) -> value, from one scrape."""
        r = httpx.get(self.url + "/metrics", headers={"x-api-key": self.key}, timeout=10)
        assert r.status_code == 200, r.text
        out: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
        for fam in text_string_to_metric_families(r.text):
            for s in fam.samples:
                out[s.name][tuple(sorted(s.labels.items()))] = s.value
        return out

    def per_worker(self, sample: str, **match: str) -> dict[str, float]:
        """worker -> the sum of ``sample`` over the series whose labels include ``match``."""
        sums: dict[str, float] = defaultdict(float)
        for labels, value in self.metrics()[sample].items():
            d = dict(labels)
            if all(d.get(k) == v for k, v in match.items()):
                sums[d["worker"]] += value
        return dict(sums)


def key_create(config: Path, *args: str) -> str:
    created = subprocess.run(
        [str(BIN / "bastion"), "keys", "create", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return next(ln.split()[-1] for ln in created.stdout.splitlines() if ln.startswith("secret:"))


def start_workers(tmp: Path, n: int = 2, *extra: str, **sections: Any) -> Workers:
    prefix = "bastiontest-w" + uuid.uuid4().hex[:10]
    state = {"url": REDIS_URL, "prefix": prefix, "settle_journal": str(tmp / "settle")}
    return serve_workers(tmp, n, state, "workers on one port", *extra, prefix=prefix, **sections)


def serve_workers(
    tmp: Path, n: int, state: dict[str, Any], marker: str, *extra: str, prefix: str = "",
    **sections: Any,
) -> Workers:  # fmt: skip
    """``bastion serve --workers n`` on ``state``, once its log says ``marker`` (both backends).

    A start that fails (Redis unreachable, a state file that cannot be opened) raises: the
    test fails, it is never skipped.
    """
    config = write_config(tmp, state=state, **sections)
    name = f"admin-{prefix or tmp.name}"
    key = key_create(config, "--name", name, "--roles", "admin,end_users")
    port = free_port()
    log_path = tmp / f"serve-{port}.log"
    env = {k: v for k, v in os.environ.items() if k not in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY")}
    argv = [str(BIN / "bastion"), "serve", "--config", str(config), "--port", str(port)]
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [*argv, "--workers", str(n), *extra], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    try:
        wait_port(port, proc, timeout=90)
        end = time.monotonic() + 90
        while marker not in log_path.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(log_path.read_text(errors="replace"))
            time.sleep(0.05)
    except Exception:
        proc.kill()
        proc.wait(timeout=5)
        raise
    return Workers(f"http://127.0.0.1:{port}", key, config, proc, log_path, prefix)


def cleanup(w: Workers) -> None:
    stop(w.proc)
    drop_prefix(w.prefix)


def drop_prefix(prefix: str) -> None:
    """Delete the Redis keys a test's gateway made under its prefix."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        for k in client.scan_iter(match=f"{prefix}*", count=1000):
            client.delete(k)
    finally:
        client.close()


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is not running
        return f.read().split(")")[-1].split()[0] != "Z"


def wait_for(cond: Any, within: float, what: str) -> None:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {within}s: {what}")


def fixture(tmp: Path, n: int = 2, *extra: str, **sections: Any) -> Iterator[Workers]:
    w = start_workers(tmp, n, *extra, **sections)
    try:
        yield w
    finally:
        cleanup(w)

"""A real `bastion serve --workers N` on the embedded (SQLite) state, through the state host."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.conftest import BIN, free_port, stop, wait_port, write_config
from tests.server._workers_redis import Workers, key_create

_HOST = re.compile(r"state host pid (\d+)")
_HOST_RESTARTED = re.compile(r"the state host \(pid (\d+)\) ([^\n]*); restarted as pid (\d+)")


def host_pids(w: Workers) -> list[int]:
    """The state host's pid at start, then each restart's new pid, as the supervisor logged."""
    log = w.log()
    m = _HOST.search(log)
    assert m is not None, log
    return [int(m.group(1))] + [int(r.group(3)) for r in _HOST_RESTARTED.finditer(log)]


def start_embedded(tmp: Path, n: int = 2, state_url: str = "", **sections: Any) -> Workers:
    """``bastion serve --workers n`` on ``state_url`` (default ``sqlite:///tmp/state.db``)."""
    url = state_url or f"sqlite:///{tmp / 'state.db'}"
    state = {"url": url, "settle_journal": str(tmp / "settle")}
    config = write_config(tmp, state=state, **sections)
    key = key_create(config, "--name", f"admin-{tmp.name}", "--roles", "admin,end_users")
    port = free_port()
    log_path = tmp / f"serve-{port}.log"
    env = {k: v for k, v in os.environ.items() if k not in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY")}
    argv = [str(BIN / "bastion"), "serve", "--config", str(config), "--port", str(port)]
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [*argv, "--workers", str(n)], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    try:
        wait_port(port, proc, timeout=90)
        end = time.monotonic() + 90
        while "state host pid" not in log_path.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(log_path.read_text(errors="replace"))
            time.sleep(0.05)
    except Exception:
        proc.kill()
        proc.wait(timeout=5)
        raise
    return Workers(f"http://127.0.0.1:{port}", key, config, proc, log_path, "")


def embedded_fixture(tmp: Path, n: int = 2, **sections: Any) -> Iterator[Workers]:
    w = start_embedded(tmp, n, **sections)
    try:
        yield w
    finally:
        stop(w.proc)

"""Issue #16 attacks: a private redis-server (never the shared one) and ``bastion serve
--workers 2`` on it, for the test_attack16_* tests."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.conftest import BIN, free_port, stop, wait_port, write_config
from tests.server._workers_redis import key_create

_NO_DISK = ("--save", "", "--appendonly", "no")


@contextmanager
def private_redis() -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A redis-server on a free port; resumed (SIGCONT) and killed by its own PID at the end."""
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", *_NO_DISK],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, proc, timeout=10)
        yield port, proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait(timeout=5)


def workers_config(tmp: Path, redis_port: int, **sections: Any) -> Path:
    """A config file whose state is that Redis (prefix ``a16``)."""
    state = {"url": f"redis://127.0.0.1:{redis_port}/0", "prefix": "a16"}
    state["settle_journal"] = str(tmp / "settle")
    return write_config(tmp, state=state, **sections)


@contextmanager
def workers_on(tmp: Path, redis_port: int, **sections: Any) -> Iterator[tuple[str, str]]:
    """``bastion serve --workers 2`` on that Redis: (base URL, an admin key)."""
    config = workers_config(tmp, redis_port, **sections)
    key = key_create(config, "--name", "a16-" + uuid.uuid4().hex[:6], "--roles", "admin")
    port = free_port()
    log = tmp / "serve.log"
    argv = [str(BIN / "bastion"), "serve", "--config", str(config), "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen([*argv, "--workers", "2"], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_port(port, proc, timeout=60)
        end = time.monotonic() + 60
        while "workers on one port" not in log.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < end, log.read_text()
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", key
    finally:
        stop(proc)

"""Attack (issue #16): SIGTERM reaches ``bastion serve --workers 2`` while its workers start.

A stop asked for before any worker serves has nothing to drain: the supervisor stops them and
exits 0, as a drain that went well does, and leaves no worker behind. Before, a worker that had
not yet installed its handler died of the SIGTERM (-15) and the supervisor reported "workers
exited uncleanly" with exit 1, so a service manager stopping it during start-up saw a failure.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import psutil
from tests.conftest import BIN, free_port
from tests.server._attack16_support import private_redis, workers_config


def test_sigterm_while_workers_start_stops_them_all_and_exits_0(tmp_path: Path) -> None:
    with private_redis() as (redis_port, _):
        config = workers_config(tmp_path, redis_port)
        argv = [str(BIN / "bastion"), "serve", "--config", str(config)]
        argv += ["--port", str(free_port()), "--workers", "2"]
        log = tmp_path / "serve.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        try:
            sup = psutil.Process(proc.pid)
            end = time.monotonic() + 30
            while len(sup.children()) < 2:  # both workers spawned, neither ready yet
                assert proc.poll() is None and time.monotonic() < end, log.read_text()
                time.sleep(0.01)
            workers = sup.children()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
        text = log.read_text(errors="replace")
        assert code == 0, text
        assert "uncleanly" not in text
        assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)

"""``bastion serve --workers N`` on the embedded state: refused with a reason, before anything
starts, unless N is 1.

Several workers on one port would each hold their own counters on the embedded state and
let through up to N times a cap, so the error points at Redis state, where workers run
(tests/server/test_workers_redis_*.py). Each case runs the real command.
"""

from __future__ import annotations

import os
import subprocess
import urllib.request
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.conftest import BIN, free_port, stop, wait_port, write_config

from bastion.config import load_config
from bastion.server.serve import workers_refusal


def _serve(config: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY")}
    return subprocess.run(
        [str(BIN / "bastion"), "serve", "--config", str(config), "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )


@pytest.mark.parametrize("state", ["sqlite", "memory"])
def test_more_than_one_worker_on_embedded_state_is_refused_before_anything_starts(
    tmp_path: Path, state: str
) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}" if state == "sqlite" else "memory://"
    config = write_config(tmp_path, state={"url": url})
    r = _serve(config, "--workers", "2")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "--workers 2 refused" in r.stderr
    assert "embedded state" in r.stderr and "2 times a spend cap" in r.stderr
    assert "redis://" in r.stderr and "exact across workers" in r.stderr  # what to do instead
    assert "listening" not in r.stdout  # no server, no banner
    # refused before opening anything: no store, no state file was created
    assert not (tmp_path / "bastion.db").exists()
    assert not (tmp_path / "state.db").exists()


def test_zero_workers_is_a_clear_error(tmp_path: Path) -> None:
    r = _serve(write_config(tmp_path), "--workers", "0")
    assert r.returncode == 2
    assert "--workers must be 1 or more (got 0)" in r.stderr


def test_one_worker_serves_as_before(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path)
    log = tmp_path / "serve.log"
    argv = [str(BIN / "bastion"), "serve", "--config", str(config), "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*argv, "--workers", "1"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_port(port, proc, timeout=60)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as resp:
            assert resp.status == 200
    finally:
        stop(proc)
    assert "Bastion is listening" in log.read_text(errors="replace")


_EMBEDDED = st.sampled_from(["memory://", "sqlite:///s.db", "sqlite:////tmp/x.db", "SQLITE:///a"])
_REDIS = st.sampled_from(["redis://127.0.0.1:6379/0", "rediss://h:6380/1", "unix:///tmp/r.sock"])


@settings(max_examples=60, deadline=None)
@given(workers=st.integers(min_value=-5, max_value=256), url=st.one_of(_EMBEDDED, _REDIS))
def test_several_workers_run_only_on_redis_and_every_refusal_names_its_reason(
    workers: int, url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp = tmp_path_factory.mktemp("w")
    cfg = load_config(write_config(tmp, state={"url": url}))
    why = workers_refusal(cfg, workers)
    on_redis = url.partition("://")[0].lower() in ("redis", "rediss", "unix")
    if workers == 1 or (workers > 1 and on_redis):
        assert why is None
        return
    assert why is not None
    if workers < 1:
        assert why.startswith("--workers must be 1 or more")
    else:
        assert "embedded state" in why and f"{workers} times a spend cap" in why

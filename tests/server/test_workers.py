"""``bastion serve --workers N``: what it refuses, with a reason, before anything starts.

Several workers run on every state: on Redis (tests/server/test_workers_redis_*.py) and on the
embedded state through the state host (tests/server/test_workers_statehost_*.py). Refused: a
worker count below 1, and the workers' internal ``statehost://`` URL given in a config. Each
command case runs the real command.
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


@pytest.mark.parametrize("workers", ["1", "2"])
def test_the_workers_internal_state_url_is_refused_in_a_config_before_anything_starts(
    tmp_path: Path, workers: str
) -> None:
    config = write_config(tmp_path, state={"url": f"statehost://{tmp_path / 'x.sock'}"})
    r = _serve(config, "--workers", workers)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "statehost:// is internal" in r.stderr and "sqlite://" in r.stderr
    assert "listening" not in r.stdout  # no server, no banner
    assert not (tmp_path / "bastion.db").exists()  # refused before opening anything


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
_INTERNAL = st.sampled_from(["statehost:///tmp/s.sock", "STATEHOST:///run/x"])


@settings(max_examples=60, deadline=None)
@given(
    workers=st.integers(min_value=-5, max_value=256),
    url=st.one_of(_EMBEDDED, _REDIS, _INTERNAL),
)
def test_workers_run_on_every_state_and_every_refusal_names_its_reason(
    workers: int, url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp = tmp_path_factory.mktemp("w")
    cfg = load_config(write_config(tmp, state={"url": url}))
    why = workers_refusal(cfg, workers)
    if url.lower().startswith("statehost://"):
        assert why is not None and "statehost:// is internal" in why
    elif workers < 1:
        assert why is not None and why.startswith("--workers must be 1 or more")
    else:
        assert why is None

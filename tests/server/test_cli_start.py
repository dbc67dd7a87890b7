"""Starting as a new user does: config discovery, no stray stores, a banner that pastes."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import yaml
from tests.conftest import BIN, free_port, sim_models, stop, wait_port


def _env(**extra: str) -> dict[str, str]:
    e = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "BASTION_CONFIG")
    }
    e.update(extra)
    return e


def _cli(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "bastion"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=_env(**env),
    )


def test_a_command_that_finds_no_store_says_so_and_creates_none(tmp_path: Path) -> None:
    for args in (("keys", "list"), ("keys", "create", "--name", "x"), ("prompts", "list")):
        r = _cli(tmp_path, *args)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert "no record store here" in r.stderr and "--config" in r.stderr
    assert list(tmp_path.iterdir()) == []  # no bastion.db appeared


def _config(dir_: Path, db: Path) -> Path:
    path = dir_ / "bastion.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "store": {"url": f"sqlite:///{db}"},
                "providers": {"sim": {"kind": "sim"}},
                "models": sim_models(),
            }
        )
    )
    return path


def test_config_is_found_by_flag_then_env_then_the_current_folder(tmp_path: Path) -> None:
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    db = tmp_path / "store.db"
    cfg = _config(here, db)

    made = _cli(here, "keys", "create", "--name", "from-cwd")  # ./bastion.yaml
    assert made.returncode == 0, made.stderr
    assert db.exists() and not (here / "bastion.db").exists()
    by_env = _cli(elsewhere, "keys", "list", BASTION_CONFIG=str(cfg))
    assert by_env.returncode == 0 and "from-cwd" in by_env.stdout
    by_flag = _cli(elsewhere, "keys", "list", "--config", str(cfg))
    assert by_flag.returncode == 0 and "from-cwd" in by_flag.stdout
    assert list(elsewhere.iterdir()) == []


def test_the_banner_snippet_pastes_and_runs_and_names_the_urls(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "bastion"), "serve", "--port", str(port)],
            cwd=tmp_path,  # the embedded defaults: SQLite here, the simulator
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_env(),
        )
    try:
        wait_port(port, proc)
        end = time.monotonic() + 10
        while "One line per call" not in log.read_text() and time.monotonic() < end:
            time.sleep(0.05)
        banner = log.read_text()
        assert f"http://127.0.0.1:{port}/dashboard" in banner
        assert f"http://127.0.0.1:{port}/metrics" in banner
        assert "role admin" in banner
        lines = banner.splitlines()
        start = next(i for i, ln in enumerate(lines) if ln.startswith("Try it")) + 1
        stop_at = next(i for i, ln in enumerate(lines) if ln.startswith("One line per call"))
        snippet = "\n".join(lines[start:stop_at])
        ran = subprocess.run(
            [str(BIN / "python"), "-c", snippet],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=_env(),
        )
        assert ran.returncode == 0, ran.stderr  # no IndentationError: it pastes as printed
        assert len([ln for ln in ran.stdout.splitlines() if ln.strip()]) >= 2
        # and both calls showed in the terminal, one line each
        time.sleep(0.2)
        assert len([ln for ln in log.read_text().splitlines() if " 200 key=dev " in ln]) == 2
    finally:
        stop(proc)

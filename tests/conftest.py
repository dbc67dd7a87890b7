"""Shared fixtures: a real `bastion serve` process on 127.0.0.1, and an in-process ASGI driver."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(
    port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 20.0
) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited early with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port}")


def sim_models(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The default simulator aliases plus test aliases that script faults and pacing."""
    models: dict[str, Any] = {
        name: {"deployments": [{"provider": "sim", "model": name}]}
        for name in ("claude-sonnet-5", "claude-haiku-5-5", "gpt-4.1", "gpt-4.1-mini")
    }
    models["slow-stream"] = {
        "deployments": [
            {
                "provider": "sim",
                "model": "slow-stream",
                "headers": {"x-sim-chunk-ms": "150", "x-sim-reply-tokens": "8"},
            }
        ]
    }
    models["sim-*"] = {"deployments": [{"provider": "sim", "model": "{model}"}]}
    if extra:
        models.update(extra)
    return models


@dataclass
class RunningGateway:
    url: str
    key: str
    config_path: Path
    proc: subprocess.Popen[bytes]
    log_path: Path  # the process's stdout and stderr (a file: a pipe nobody reads would fill)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "bastion"), *args, "--config", str(self.config_path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


def write_config(tmp: Path, **sections: Any) -> Path:
    cfg: dict[str, Any] = {
        "store": {"url": f"sqlite:///{tmp / 'bastion.db'}"},
        "state": {"url": f"sqlite:///{tmp / 'state.db'}"},
        "observability": {"spill_path": str(tmp / "spill.jsonl")},
        "providers": {"sim": {"kind": "sim"}},
        "models": sim_models(),
        "server": {"max_body_bytes": 200_000},
    }
    for k, v in sections.items():
        mergeable = k not in ("models", "providers") and isinstance(cfg.get(k), dict)
        cfg[k] = {**cfg[k], **v} if mergeable and isinstance(v, dict) else v
    path = tmp / "bastion.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def start_gateway(
    config_path: Path, *, env: dict[str, str] | None = None, roles: str = "admin,end_users"
) -> RunningGateway:
    """A real `bastion serve`; its key may name end users (`end_users`) unless ``roles`` says not."""
    port = free_port()
    e = {k: v for k, v in os.environ.items() if k not in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY")}
    e.update(env or {})
    created = subprocess.run(
        [
            str(BIN / "bastion"),
            "keys",
            "create",
            "--name",
            f"test-{port}",
            "--roles",
            roles,
            "--config",
            str(config_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=e,
    )
    secret = next(ln.split()[-1] for ln in created.stdout.splitlines() if ln.startswith("secret:"))
    log_path = config_path.parent / f"serve-{port}.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "bastion"), "serve", "--config", str(config_path), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=e,
        )
    try:
        wait_port(port, proc)
    except Exception:
        proc.kill()
        proc.wait(timeout=5)
        raise RuntimeError(
            f"bastion serve failed to start:\n{log_path.read_text(errors='replace')}"
        ) from None
    return RunningGateway(f"http://127.0.0.1:{port}", secret, config_path, proc, log_path)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture(scope="session")
def gateway_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    """One real gateway process for the SDK tests (sim provider, SQLite store)."""
    tmp = tmp_path_factory.mktemp("gw")
    gw = start_gateway(write_config(tmp))
    yield gw
    stop(gw.proc)

"""`bastion config example` prints a complete config that `bastion config check` accepts, and a
bad file fails with the key and line named."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import BIN


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "bastion"), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_the_example_is_valid(tmp_path: Path) -> None:
    example = _run("config", "example")
    assert example.returncode == 0 and "cost:" in example.stdout and "safety:" in example.stdout
    path = tmp_path / "example.yaml"
    path.write_text(example.stdout)
    checked = _run("config", "check", str(path))
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("ok:")


def test_a_bad_key_is_named_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("server:\n  port: 80\ncost:\n  caps:\n    global_daily_usd: -5\n")
    checked = _run("config", "check", str(path))
    assert checked.returncode == 2
    assert "bad.yaml:5: cost.caps.global_daily_usd" in checked.stderr

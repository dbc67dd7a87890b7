"""The README works as written: its code runs, its config loads, its commands exist, its paths too.

A new user copies from the README; every block they can copy is exercised here:
- Python that talks to a gateway runs against a real `bastion serve` (only the URL and key
  placeholders are replaced);
- the library example runs verbatim in an empty folder;
- YAML blocks load as configs;
- every `bastion …` subcommand named in a command block or the command table exists;
- every repository path the README names in backticks exists.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from tests.conftest import BIN, RunningGateway, start_gateway, stop, write_config

from bastion.config import load_config

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.M | re.S)


def _blocks(lang: str) -> list[str]:
    return [body for kind, body in BLOCK.findall(README) if kind == lang]


def _env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if k not in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "BASTION_CONFIG")
    }


def _run_python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "python"), "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=_env(),
    )


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    g = start_gateway(write_config(tmp_path_factory.mktemp("readme")))
    yield g
    stop(g.proc)


def test_the_readme_has_the_blocks_this_test_runs() -> None:
    python = _blocks("python")
    assert any("base_url=" in b for b in python)
    assert any("bastion.Gateway" in b for b in python)
    assert _blocks("yaml") and _blocks("bash")


def test_sdk_snippets_run_against_a_real_gateway(gw: RunningGateway, tmp_path: Path) -> None:
    for code in (b for b in _blocks("python") if "base_url=" in b):
        assert "http://127.0.0.1:8080" in code and "bst-..." in code
        live = code.replace("http://127.0.0.1:8080", gw.url).replace("bst-...", gw.key)
        ran = _run_python(live, tmp_path)
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.strip(), "the snippet printed nothing"


def test_the_library_example_runs_as_written(tmp_path: Path) -> None:
    (code,) = (b for b in _blocks("python") if "bastion.Gateway" in b)
    ran = _run_python(code, tmp_path)
    assert ran.returncode == 0, ran.stderr
    lines = [ln for ln in ran.stdout.splitlines() if ln.strip()]
    assert len(lines) >= 2, ran.stdout  # the unary answer and the streamed one


def test_yaml_blocks_load_as_configs(tmp_path: Path) -> None:
    for i, text in enumerate(_blocks("yaml")):
        path = tmp_path / f"block{i}.yaml"
        path.write_text(text)
        cfg = load_config(path, env={})
        assert cfg.models, f"block {i} configured no model"
        data = yaml.safe_load(text)
        for alias, spec in data.get("models", {}).items():
            for dep in spec["deployments"]:
                assert dep["provider"] in cfg.providers, (alias, dep)


def _subcommands() -> set[tuple[str, ...]]:
    """``bastion`` subcommands the README shows: in bash blocks and in the command table."""
    found: set[tuple[str, ...]] = set()
    texts = [*_blocks("bash"), *re.findall(r"^\| `(bastion [^`]*)`", README, re.M)]
    for text in texts:
        for m in re.finditer(r"\bbastion ((?:[a-z][a-z-]*)(?: [a-z][a-z-]*)?)", text):
            words = tuple(m.group(1).split())
            found.add(words)
    return found


def test_every_bastion_command_the_readme_names_exists() -> None:
    commands = _subcommands()
    assert ("keys", "create") in commands and ("serve",) in commands
    for words in sorted(commands):
        r = subprocess.run(
            [str(BIN / "bastion"), *words, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=_env(),
        )
        if r.returncode != 0 and len(words) == 2:
            # "serve --config" style: the second word was an argument, not a subcommand
            r = subprocess.run(
                [str(BIN / "bastion"), words[0], "--help"],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                env=_env(),
            )
        assert r.returncode == 0, (words, r.stderr)


def test_every_repository_path_the_readme_names_exists() -> None:
    paths = set(
        re.findall(r"`((?:docs|src|bench|deploy|examples|scripts|evals|tests)/[^`\s*]+)`", README)
    )
    assert paths
    missing = sorted(p for p in paths if not (ROOT / p.rstrip("/")).exists())
    assert not missing, missing
    assert "../shared" not in README  # a clone has no such folder

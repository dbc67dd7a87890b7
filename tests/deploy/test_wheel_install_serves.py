"""The wheel, installed into a bare venv, serves every SDK surface on the embedded defaults.

Built with ``pip wheel --no-deps --no-build-isolation .``; the venv gets the locked
dependencies (``pip install --no-compile --require-hashes -r requirements.lock``) and then the
wheel alone
(``--no-deps``), so nothing of the source tree or of the test venv can stand in for a file the
wheel forgot. ``bastion serve`` runs from that venv, in an empty directory (no config: the
embedded defaults, the simulator), and is called through the official SDKs. How long each
step took is printed (``-s``) and bounded.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anthropic
import openai
import pytest
from tests.conftest import free_port, wait_port

ROOT = Path(__file__).resolve().parents[2]
INSTALL_BUDGET_S = 180.0  # wheel + venv + locked deps + the wheel, with pip's cache warm
KEY = re.compile(r"\bbst-[A-Za-z0-9_\-]+")
# the module fixture builds and installs before the first test: past pytest-timeout's default
pytestmark = pytest.mark.timeout(900)


@dataclass
class Served:
    url: str
    key: str
    venv: Path
    timings: dict[str, float]


def _run(args: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False, **kw)  # type: ignore[call-overload]
    assert out.returncode == 0, f"{args[:4]} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
    return out  # type: ignore[no-any-return]


def _clean_env(home: Path) -> dict[str, str]:
    """No provider key (the embedded defaults pick the simulator), no source tree on the path."""
    drop = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "PYTHONPATH", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("BASTION")}
    env["HOME"] = str(home)
    env["PATH"] = os.defpath
    return env


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("wheel")
    timings: dict[str, float] = {}
    t = time.monotonic()
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
          str(ROOT), "-w", str(tmp / "dist")])  # fmt: skip
    [wheel] = (tmp / "dist").glob("bastion-*.whl")
    timings["build wheel"] = time.monotonic() - t
    t = time.monotonic()
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    py = venv / "bin" / "python"
    timings["create venv"] = time.monotonic() - t
    t = time.monotonic()
    # --no-compile: byte-compiling every dependency (botocore's data-heavy tree, the dev tools in
    # the lock) doubled this step; the modules serve imports compile on first use instead
    _run([str(py), "-m", "pip", "install", "-q", "--no-compile", "--require-hashes", "-r",
          str(ROOT / "requirements.lock")])  # fmt: skip
    timings["install requirements.lock"] = time.monotonic() - t
    t = time.monotonic()
    _run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)])
    timings["install the wheel"] = time.monotonic() - t
    home = tmp / "home"
    work = tmp / "run"
    home.mkdir()
    work.mkdir()
    env = _clean_env(home)
    where = _run([str(py), "-c", "import bastion; print(bastion.__file__)"], cwd=work, env=env)
    assert str(venv) in where.stdout and str(ROOT / "src") not in where.stdout
    port = free_port()
    log = tmp / "serve.log"
    t = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(venv / "bin" / "bastion"), "serve", "--port", str(port)],
            cwd=work,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_port(port, proc, timeout=60)
        timings["serve to listening"] = time.monotonic() - t
        # the banner with the first key is written once the server has started, which can be
        # a moment after its port accepts connections
        found = KEY.search(log.read_text(errors="replace"))
        for _ in range(100):
            if found or proc.poll() is not None:
                break
            time.sleep(0.1)
            found = KEY.search(log.read_text(errors="replace"))
        assert found, log.read_text(errors="replace")
        print(
            "\nwheel install timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items())
        )
        yield Served(f"http://127.0.0.1:{port}", found.group(0), venv, timings)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture
def oc(served: Served) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.url + "/v1", api_key=served.key, max_retries=0)


@pytest.fixture
def ac(served: Served) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=served.url, api_key=served.key, max_retries=0)


def test_install_fits_its_budget(served: Served) -> None:
    steps = served.timings
    install = sum(v for k, v in steps.items() if k != "serve to listening")
    assert install < INSTALL_BUDGET_S, steps


def test_chat_completions_create_and_stream(oc: openai.OpenAI) -> None:
    r = oc.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": "Hi"}])
    assert r.choices[0].message.content and r.usage is not None and r.usage.total_tokens > 0
    chunks = list(
        oc.chat.completions.create(
            model="gpt-4.1", messages=[{"role": "user", "content": "Hi"}], stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_messages_create_stream_and_count_tokens(ac: anthropic.Anthropic) -> None:
    msg = [{"role": "user", "content": "Hello"}]
    r = ac.messages.create(model="claude-sonnet-5", max_tokens=100, messages=msg)  # type: ignore[arg-type]
    assert r.content[0].type == "text" and r.usage.output_tokens > 0
    with ac.messages.stream(model="claude-sonnet-5", max_tokens=100, messages=msg) as s:  # type: ignore[arg-type]
        assert s.get_final_text()
    counted = ac.messages.count_tokens(model="claude-sonnet-5", messages=msg)  # type: ignore[arg-type]
    assert counted.input_tokens > 0


def test_responses_create_and_stream(oc: openai.OpenAI) -> None:
    r = oc.responses.create(model="gpt-4.1", instructions="Be brief.", input="Hello")
    assert r.status == "completed" and r.output_text and r.usage is not None
    with oc.responses.stream(model="gpt-4.1", input="Stream please") as s:
        kinds = [e.type for e in s]
        final = s.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert final.output_text


def test_embeddings_and_models_retrieve(oc: openai.OpenAI, ac: anthropic.Anthropic) -> None:
    e = oc.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert [len(d.embedding) for d in e.data] == [1536, 1536]
    assert oc.models.retrieve("gpt-4.1").id == "gpt-4.1"
    assert ac.models.retrieve("claude-sonnet-5").id == "claude-sonnet-5"


def test_wheel_carries_the_built_detector_loops(served: Served) -> None:
    """The detectors' C loops are in the wheel (its platform tag says so) and are what the
    installed package runs, from the venv, not from the source tree."""
    py = served.venv / "bin" / "python"
    code = (
        "from bastion.safety.prompting import classifier as c, _native as n\n"
        "from bastion.safety.pii import _names, _native as m\n"
        "assert c._native_sums is n.stream_sums, c._native_sums\n"
        "assert _names._native_scores is m.tag_scores, _names._native_scores\n"
        "print(n.__file__, m.__file__)\n"
    )
    out = _run([str(py), "-c", code], cwd=served.venv, env=_clean_env(served.venv))
    assert out.stdout.count(str(served.venv)) == 2 and str(ROOT / "src") not in out.stdout

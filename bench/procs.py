"""Processes the benches start beside Bastion, and the tools they install for them.

Any process started on a free port of 127.0.0.1 (``start_process``), waited for until its
health route answers 200 (``wait_healthy``, which also times a start-up), the worker a
supervisor starts (``first_child_pid``), a process tree's CPU and memory, and a pinned tool
installed into a venv of its own under ``bench/`` (``VenvTool``: ``servers.py``'s granian,
``sidebyside.py``'s LiteLLM). Every process is an ``overhead.Server``, stopped by its PID
(terminate, then kill) when the ``harness.stopping`` list it was appended to is left.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil
from overhead import Server, free_port

__all__ = [
    "Unavailable",
    "VenvTool",
    "first_child_pid",
    "run_cmd",
    "start_process",
    "tree_cpu_s",
    "tree_rss_mb",
    "wait_healthy",
]


def start_process(
    name: str,
    argv: Callable[[int], Sequence[str]],
    log: Path,
    started: list[Server],
    *,
    env: dict[str, str] | None = None,
) -> Server:
    """``argv(port)`` on a free port of 127.0.0.1 (with ``env`` as its whole environment if
    given), appended to ``started`` so that it is stopped by its PID (terminate, then kill)."""
    port = free_port()
    if env is None:
        server = Server(name, argv(port), port, log)
    else:
        from startup import EnvServer  # startup imports this module

        server = EnvServer(name, argv(port), port, log, env)
    started.append(server)
    return server


def wait_healthy(
    server: Server,
    path: str,
    *,
    timeout: float,
    started: float | None = None,
    poll_s: float = 0.005,
) -> float:
    """Seconds from ``started`` (``time.perf_counter()``; default now) to the first 200 on
    ``path``, polled every ``poll_s``; bounded by ``timeout`` from ``started``. A server that
    exits is a RuntimeError, one that is not healthy in time a TimeoutError (with its log's tail)."""
    t0 = time.perf_counter() if started is None else started
    url = f"http://127.0.0.1:{server.port}{path}"
    end = t0 + timeout
    while time.perf_counter() < end:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited {server.proc.returncode}: {server.tail()}")
        with (
            contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError),
            urllib.request.urlopen(url, timeout=1.0) as resp,
        ):
            if resp.status == 200:
                return time.perf_counter() - t0
        time.sleep(poll_s)
    raise TimeoutError(f"{server.name}: {path} not 200 within {timeout:g} s: {server.tail()}")


def first_child_pid(server: Server, timeout: float = 10.0) -> int:
    """The pid of the first worker a supervising process starts (granian's, nginx's)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        kids = psutil.Process(server.pid).children()
        if kids:
            return int(kids[0].pid)
        time.sleep(0.05)
    raise RuntimeError(f"{server.name} started no worker process")


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its children, MiB."""
    total = 0
    for p in _tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total / 2**20


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and all its children (a supervisor's workers)."""
    total = 0.0
    for p in _tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            t = p.cpu_times()
            total += t.user + t.system
    return total


# -- a pinned tool in a venv of its own --------------------------------------------------------


class Unavailable(Exception):
    """A tool could not be installed or started: the reason, said once, and the run goes on."""


def run_cmd(argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)


@dataclass(frozen=True)
class VenvTool:
    """A tool pinned in a venv of its own under ``bench/`` (ignored by git), installed once."""

    label: str  # log lines' prefix: "granian", "litellm"
    venv: Path
    requirement: str  # what pip installs, extras and all; ``==PIN`` is appended
    version_code: str  # Python that prints the installed version
    install_timeout_s: float
    title: str = ""  # the tool's name in a reason ("LiteLLM"); the label if empty
    install_note: str = ""  # said after the install line
    latest_if_missing: bool = False  # a pin not on the index: keep what is there, or the latest

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def installed(self) -> str | None:
        if not self.python.exists():
            return None
        out = run_cmd([str(self.python), "-c", self.version_code], 60)
        return out.stdout.strip() if out.returncode == 0 else None

    def ensure(self, pin: str, log: Callable[[str], None]) -> str:
        """The version in the venv, installing ``pin`` first (and the venv) if need be."""
        try:
            have = self.installed()
            if have == pin:
                return have
            if not self.python.exists():
                log(f"{self.label}: creating {self.venv}")
                made = run_cmd([sys.executable, "-m", "venv", str(self.venv)], 300)
                if made.returncode != 0:
                    raise Unavailable(f"python -m venv failed: {made.stderr[-500:]}")
            pip = [str(self.python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
            log(
                f"{self.label}: pip install '{self.requirement}=={pin}' into {self.venv}{self.install_note}"
            )
            got = run_cmd([*pip, f"{self.requirement}=={pin}"], self.install_timeout_s)
            if got.returncode != 0:
                missing = any(
                    m in got.stderr
                    for m in ("No matching distribution", "Could not find a version")
                )
                if not (missing and self.latest_if_missing):
                    why = got.stderr[-800:]
                    raise Unavailable(f"pip install {self.requirement}=={pin} failed: {why}")
                if have is not None:
                    log(f"{self.label}: {pin} is not on the index; keeping the installed {have}")
                    return have
                log(f"{self.label}: {pin} is not on the index; installing the latest release")
                got = run_cmd([*pip, "-U", self.requirement], self.install_timeout_s)
                if got.returncode != 0:
                    why = got.stderr[-800:]
                    raise Unavailable(f"pip install {self.requirement} failed: {why}")
        except subprocess.TimeoutExpired as exc:
            raise Unavailable(
                f"installing {self.title or self.label} took over {exc.timeout:.0f} s"
            ) from None
        except OSError as exc:
            raise Unavailable(f"installing {self.title or self.label}: {exc}") from None
        version = self.installed()
        if version is None:
            raise Unavailable(f"{self.label} is not importable in its venv after pip install")
        return version

"""The supervisor's handle on the state host, for ``bastion serve --workers N`` on embedded state.

On the embedded state (memory://, sqlite://) the counters live in one process, so the
supervisor starts one for them, the state host (``python -m bastion.state.host``), before any
worker, waits until it answers a ping on its socket in the runtime directory, and gives each
worker that socket as its state (``state/remote.py``). It restarts the host if it dies (under
the workers' restart budget) and stops it last, once every worker has exited, so the host's
close flushes every settle the workers made. On Redis there is no host: the workers share Redis.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..config import Config
from ..state.remote import ping_sync, url_for

__all__ = ["HostFailed", "StateHostProcess", "embedded"]

_START_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 15.0
_POLL_S = 0.05


class HostFailed(Exception):
    """The state host did not start, or exited during its start."""


def embedded(cfg: Config) -> bool:
    """Whether the state lives in process (so N workers need a state host)."""
    return cfg.state.url.partition("://")[0].lower() in ("memory", "sqlite")


class StateHostProcess:
    """Start, watch and stop the one state host process."""

    def __init__(self, cfg: Config, runtime_dir: str) -> None:
        self.url = cfg.state.url
        self.prefix = cfg.state.prefix
        self.socket = str(Path(runtime_dir) / "state.sock")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def state_url(self) -> str:
        """The internal URL the workers open (``RemoteCounterStore``)."""
        return url_for(self.socket)

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def start(self) -> None:
        """Start the host and wait until it answers a ping; ``HostFailed`` if it does not."""
        argv = [
            sys.executable, "-m", "bastion.state.host", "--url", self.url, "--socket",
            self.socket, "--prefix", self.prefix, "--parent", str(os.getpid()),
        ]  # fmt: skip
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket)  # a dead predecessor's: its ping must not pass for ours
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not ping_sync(self.socket, 1.0):
            code = self.proc.poll()
            if code is not None:
                raise HostFailed(f"the state host exited with {code} during start-up")
            if time.monotonic() > deadline:
                self.kill()
                raise HostFailed(f"the state host did not answer within {_START_TIMEOUT_S:g}s")
            time.sleep(_POLL_S)

    def exited(self) -> int | None:
        """Its exit code if it has exited (None while it runs)."""
        return None if self.proc is None else self.proc.poll()

    def stop(self) -> int | None:
        """SIGTERM (it closes the store: the snapshot is flushed) and wait; kill past a bound."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.returncode

    def kill(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait()

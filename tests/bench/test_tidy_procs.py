"""``bench/procs.py``: the set-up ``servers.py`` and ``sidebyside.py`` share.

A pinned tool in its own venv is installed only when the venv does not already hold the pin,
and a pin missing from the index falls back (to what is installed, else the latest release)
only for a tool that asks for it; a process started on a free port is waited for until its
health route answers 200 and stopped by its PID; an exited one is said, not waited for.
Offline: the venv's ``python`` is a stub script that plays the probe and pip.
"""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))  # the bench scripts import each other by bare name

from harness import stopping  # noqa: E402
from procs import Unavailable, VenvTool, start_process, wait_healthy  # noqa: E402

STUB = """#!/bin/sh
# the venv's python: "-c CODE" prints the version in ./version (exit 1 if none);
# "-m pip install ... REQ": appends REQ to ./pip.log, answers as ./pip says
here=$(dirname "$0")/..
if [ "$1" = "-c" ]; then
  [ -f "$here/version" ] && cat "$here/version" && exit 0
  exit 1
fi
last=""; for a in "$@"; do last="$a"; done
echo "$last" >> "$here/pip.log"
case "$(cat "$here/pip" 2>/dev/null)" in
  missing) case "$last" in *==*) echo "ERROR: No matching distribution found" >&2; exit 1;; esac
           echo "9.9.9" > "$here/version"; exit 0;;
  broken) echo "ERROR: boom" >&2; exit 1;;
  *) echo "${last##*==}" > "$here/version"; exit 0;;
esac
"""


def _venv(tmp: Path, *, version: str | None, pip: str = "ok") -> Path:
    py = tmp / "venv" / "bin" / "python"
    py.parent.mkdir(parents=True)
    py.write_text(STUB)
    py.chmod(py.stat().st_mode | stat.S_IXUSR)
    if version is not None:
        (tmp / "venv" / "version").write_text(version + "\n")
    (tmp / "venv" / "pip").write_text(pip)
    return tmp / "venv"


def _tool(venv: Path, *, latest: bool) -> VenvTool:
    return VenvTool("tool", venv, "tool[x]", "print(1)", 30.0, latest_if_missing=latest)


def _pip_log(venv: Path) -> list[str]:
    log = venv / "pip.log"
    return log.read_text().split() if log.exists() else []


pins = st.from_regex(r"[0-9]{1,2}\.[0-9]{1,2}\.[0-9]{1,2}", fullmatch=True)


@settings(max_examples=25, deadline=None)
@given(have=st.none() | pins, pin=pins, latest=st.booleans())
def test_the_pin_is_installed_only_when_the_venv_lacks_it(
    tmp_path_factory: pytest.TempPathFactory, have: str | None, pin: str, latest: bool
) -> None:
    venv = _venv(tmp_path_factory.mktemp("v"), version=have)
    logs: list[str] = []
    assert _tool(venv, latest=latest).ensure(pin, logs.append) == pin
    assert _pip_log(venv) == ([] if have == pin else [f"tool[x]=={pin}"])
    assert bool(logs) == (have != pin)


@pytest.mark.parametrize(("have", "expected"), [("1.0.0", "1.0.0"), (None, "9.9.9")])
def test_a_pin_not_on_the_index_falls_back_only_when_asked(
    tmp_path: Path, have: str | None, expected: str
) -> None:
    venv = _venv(tmp_path / "a", version=have, pip="missing")
    assert _tool(venv, latest=True).ensure("2.0.0", lambda _: None) == expected
    assert _pip_log(venv) == ["tool[x]==2.0.0"] + ([] if have else ["tool[x]"])
    strict = _venv(tmp_path / "b", version=have, pip="missing")
    with pytest.raises(Unavailable, match=r"pip install tool\[x\]==2.0.0 failed"):
        _tool(strict, latest=False).ensure("2.0.0", lambda _: None)


def test_a_failed_install_is_unavailable_with_pip_s_words(tmp_path: Path) -> None:
    venv = _venv(tmp_path, version=None, pip="broken")
    with pytest.raises(Unavailable, match="boom"):
        _tool(venv, latest=True).ensure("1.0.0", lambda _: None)


SERVER = """
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/ok" else 404)
        self.end_headers()
    def log_message(self, *a):
        pass

HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def test_a_process_on_a_free_port_is_waited_for_and_stopped_by_its_pid(tmp_path: Path) -> None:
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    with stopping() as started:
        server = start_process(
            "tiny",
            lambda port: [sys.executable, str(script), str(port)],
            tmp_path / "t.log",
            started,
        )
        assert started == [server]
        took = wait_healthy(server, "/ok", timeout=30.0)
        assert 0.0 < took < 30.0
        with pytest.raises(TimeoutError, match="/missing not 200"):
            wait_healthy(server, "/missing", timeout=0.3)
    assert server.proc.poll() is not None  # stopped on the way out


def test_a_process_that_exits_is_said_not_waited_for(tmp_path: Path) -> None:
    with stopping() as started:
        server = start_process(
            "gone",
            lambda port: [sys.executable, "-c", "print('bye'); raise SystemExit(3)"],
            tmp_path / "g.log",
            started,
        )
        with pytest.raises(RuntimeError, match="gone exited 3"):
            wait_healthy(server, "/ok", timeout=30.0)

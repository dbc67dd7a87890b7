"""`bastion serve --workers 2` on a relative SQLite path: the state host opens the file the user
meant (relative to where serve was started, as one process would), and only the host opens it; the
host's socket is private to the user (0600 in the supervisor's 0700 runtime directory).
"""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import anthropic
import pytest
from tests.conftest import sim_models, stop
from tests.server._workers_statehost import host_pids, start_embedded

MSG = [{"role": "user", "content": "hello"}]


def test_a_relative_sqlite_path_is_the_one_beside_where_serve_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # serve starts here (its processes inherit the directory)
    w = start_embedded(
        tmp_path,
        2,
        state_url="sqlite:///rel-state.db",
        models=sim_models(),
        cost={"prices": {"sim-cap": {"input": 0.0, "output": 1000.0}}},
        features={"capped": {"daily_budget_usd": 1.0}},
    )
    try:
        (host,) = host_pids(w)
        assert Path(f"/proc/{host}/cwd").resolve() == tmp_path.resolve()
        # only this user reaches the host: its socket is 0600 in a 0700 directory
        argv = Path(f"/proc/{host}/cmdline").read_bytes().decode().split("\0")
        sock = Path(argv[argv.index("--socket") + 1])
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600 and sock.is_socket()
        assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
        assert sock.parent.stat().st_uid == os.getuid()
        client = anthropic.Anthropic(base_url=w.url, api_key=w.key, max_retries=0, timeout=30)
        for _ in range(3):
            client.messages.create(
                model="sim-cap",
                max_tokens=10,
                messages=MSG,  # type: ignore[arg-type]
                extra_headers={"x-bastion-feature": "capped"},
            )
        for pid in [host, *w.pids()]:  # the host has the file open; no worker opened it
            opened = [str(p.readlink()) for p in Path(f"/proc/{pid}/fd").iterdir()]
            assert any(o == str(tmp_path / "rel-state.db") for o in opened) == (pid == host)
    finally:
        stop(w.proc)  # the host's close flushes the spend
    with sqlite3.connect(tmp_path / "rel-state.db") as db:
        rows = db.execute("SELECT key, settled FROM caps").fetchall()
    spent = [settled for key, settled in rows if "capped" in key]
    assert spent and max(spent) == pytest.approx(0.03)  # 3 calls x 10 tokens x $1000/M

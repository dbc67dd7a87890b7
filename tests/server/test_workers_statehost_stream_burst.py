"""`bastion serve --workers 2` on SQLite: a burst of streams on a small $ cap, half cut off.

Real processes. Twelve streamed calls at once on a cap with room for five, across both
workers; half of the admitted clients hang up after the first event. The cap admits exactly
five, the spend never passes it, and once every call has ended the state host holds no
reservation (every hold was settled or released: none is left to block the cap for its lease).
The host is asked directly, over its socket, as a worker would.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import anthropic
import pytest
from tests.conftest import sim_models, stop
from tests.server._workers_redis import Workers
from tests.server._workers_statehost import host_pids, start_embedded

from bastion.state.remote import RemoteCounterStore

MSG = [{"role": "user", "content": "hello"}]
PER_CALL_USD = 0.01  # max_tokens 10 at $1000 per million output tokens, input free
CAP_CALLS = 5
BURST = 12


def _stream(w: Workers, hang_up: bool) -> Any:
    client = anthropic.Anthropic(base_url=w.url, api_key=w.key, max_retries=0, timeout=30)
    try:
        with client.messages.stream(
            model="slow-stream",
            max_tokens=10,
            messages=MSG,  # type: ignore[arg-type]
            extra_headers={"x-bastion-feature": "capped"},
        ) as stream:
            for _ in stream:
                if hang_up:
                    return "hung up"  # leaving the block closes the connection mid-stream
            return stream.get_final_message()
    except anthropic.APIStatusError as exc:
        return exc


def _socket(host: int) -> str:
    with open(f"/proc/{host}/cmdline", "rb") as f:
        argv = f.read().decode().split("\0")
    return argv[argv.index("--socket") + 1]


def _cap_keys(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [k for (k,) in conn.execute("SELECT key FROM caps") if "capped" in k]


def test_a_burst_of_streams_some_cut_off_keeps_the_cap_and_leaves_no_hold(
    tmp_path: Path,
) -> None:
    w = start_embedded(
        tmp_path,
        2,
        models=sim_models(),
        cost={"prices": {"slow-stream": {"input": 0.0, "output": 1000.0}}},
        features={"capped": {"daily_budget_usd": PER_CALL_USD * CAP_CALLS}},
    )
    try:
        out: list[Any] = [None] * BURST
        go = threading.Barrier(BURST)

        def one(i: int) -> None:
            go.wait()
            out[i] = _stream(w, hang_up=i % 2 == 0)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(BURST)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        refused = [r for r in out if isinstance(r, anthropic.APIStatusError)]
        admitted = [r for r in out if not isinstance(r, anthropic.APIStatusError)]
        assert len(admitted) == CAP_CALLS, out
        assert all(r.status_code == 429 for r in refused), refused
        assert any(r == "hung up" for r in admitted), out
        spent = w.per_worker("bastion_cost_usd_total", feature="capped")
        assert len(spent) == 2, spent  # both workers served the burst
        assert sum(spent.values()) <= PER_CALL_USD * CAP_CALLS + 1e-9

        async def holds() -> tuple[float, float]:
            (host,) = host_pids(w)
            remote = RemoteCounterStore(_socket(host))
            try:
                await asyncio.sleep(1.0)  # past the write-behind: the caps are in the file
                keys = _cap_keys(tmp_path / "state.db")
                assert keys
                usages = [await remote.usage(k) for k in keys]
            finally:
                await remote.close()
            return sum(u.reserved for u in usages), max(u.settled for u in usages)

        reserved, settled = asyncio.run(holds())
        assert reserved == 0.0  # every hold settled or released: nothing waits for a lease
        assert settled == pytest.approx(sum(spent.values()))
        assert settled <= PER_CALL_USD * CAP_CALLS + 1e-9
    finally:
        stop(w.proc)

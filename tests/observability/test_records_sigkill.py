"""A gateway killed with SIGKILL mid-load loses no record of a call it answered: the records it
still held in memory are in its journal, which the restarted process replays, exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
from pathlib import Path

import httpx2 as httpx
from tests.conftest import start_gateway, stop, write_config

CALLS = 150


def _counts(db: Path, ids: list[str]) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        marks = ",".join("?" * len(ids))
        rows = conn.execute(
            f"SELECT request_id, count(*) FROM calls WHERE request_id IN ({marks}) GROUP BY 1",
            ids,
        ).fetchall()
    return {r[0]: r[1] for r in rows}


async def _load(url: str, key: str, pid: int, kill_after: int) -> list[str]:
    """Send CALLS calls at once (unary and streaming); SIGKILL the server once ``kill_after``
    have been answered. Returns the request ids of the calls answered completely."""
    answered: list[str] = []
    killed = asyncio.Event()
    limits = httpx.Limits(max_connections=CALLS, max_keepalive_connections=CALLS)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def one(i: int) -> None:
            stream = i % 3 == 0
            body = {
                "model": "claude-sonnet-5",
                "max_tokens": 30,
                "stream": stream,
                "messages": [{"role": "user", "content": f"call {i}"}],
            }
            headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
            try:
                async with client.stream("POST", "/v1/messages", json=body, headers=headers) as r:
                    data = await r.aread()
            except httpx.HTTPError:
                return  # cut by the kill: no complete answer, no promise of a record
            complete = r.status_code == 200 and (not stream or b"message_stop" in data)
            if complete:
                answered.append(r.headers["x-request-id"])
                if len(answered) >= kill_after and not killed.is_set():
                    killed.set()
                    os.kill(pid, signal.SIGKILL)

        await asyncio.gather(*(one(i) for i in range(CALLS)))
    assert killed.is_set(), "the server was never killed"
    return answered


async def test_sigkill_mid_load_loses_no_record_of_an_answered_call(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, simulator={"ttft_ms": 5.0, "chunk_ms": 2.0})
    db = tmp_path / "bastion.db"
    gw = start_gateway(cfg)
    # A writer elsewhere holds the database for a moment (a slow disk, a long backup): the
    # gateway's batches wait, so answered calls' records are in its memory when it dies.
    blocker = sqlite3.connect(db, timeout=10, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        t0 = time.monotonic()
        answered = await _load(gw.url, gw.key, gw.proc.pid, kill_after=CALLS // 2)
        print(f"killed after {time.monotonic() - t0:.2f}s")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        gw.proc.wait(timeout=10)
        stop(gw.proc)
    assert len(answered) >= CALLS // 2 and len(set(answered)) == len(answered)
    before = _counts(db, answered)
    lost_without_journal = len(answered) - len(before)

    again = start_gateway(cfg)  # same store, spill and journal directory
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            after = _counts(db, answered)
            if len(after) == len(answered):
                break
            await asyncio.sleep(0.1)
    finally:
        stop(again.proc)
    after = _counts(db, answered)
    missing = sorted(set(answered) - set(after))
    assert not missing, f"{len(missing)} answered calls have no record, e.g. {missing[:3]}"
    assert set(after.values()) == {1}
    # the kill did land while records were still in memory (else this test proves nothing)
    print(f"records only in the journal at the kill: {lost_without_journal} of {len(answered)}")
    assert lost_without_journal > 0
    journal = tmp_path / "spill.journal"
    assert not any(p.suffix == ".jsonl" and p.stat().st_size for p in journal.iterdir())

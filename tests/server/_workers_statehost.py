"""A real `bastion serve --workers N` on the embedded (SQLite) state, through the state host."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
from tests.conftest import stop
from tests.server._workers_redis import Workers, serve_workers

MSG = [{"role": "user", "content": "hello"}]
PER_CALL_USD = 0.01  # 10 output tokens at $1000 per million, input free (the tests' prices)

_HOST = re.compile(r"state host pid (\d+)")
_HOST_RESTARTED = re.compile(r"the state host \(pid (\d+)\) ([^\n]*); restarted as pid (\d+)")


def host_pids(w: Workers) -> list[int]:
    """The state host's pid at start, then each restart's new pid, as the supervisor logged."""
    log = w.log()
    m = _HOST.search(log)
    assert m is not None, log
    return [int(m.group(1))] + [int(r.group(3)) for r in _HOST_RESTARTED.finditer(log)]


def start_embedded(tmp: Path, n: int = 2, state_url: str = "", **sections: Any) -> Workers:
    """``bastion serve --workers n`` on ``state_url`` (default ``sqlite:///tmp/state.db``)."""
    url = state_url or f"sqlite:///{tmp / 'state.db'}"
    state = {"url": url, "settle_journal": str(tmp / "settle")}
    return serve_workers(tmp, n, state, "state host pid", **sections)


def embedded_fixture(tmp: Path, n: int = 2, **sections: Any) -> Iterator[Workers]:
    w = start_embedded(tmp, n, **sections)
    try:
        yield w
    finally:
        stop(w.proc)


def capped_call(w: Workers, model: str, timeout: float = 60) -> Any:
    """One call under the ``capped`` feature on its own connection: the answer, or the SDK's
    error (a status, or a connection error: a timeout, a worker killed under it)."""
    client = anthropic.Anthropic(base_url=w.url, api_key=w.key, max_retries=0, timeout=timeout)
    try:
        return client.messages.create(
            model=model,
            max_tokens=10,
            messages=MSG,  # type: ignore[arg-type]
            extra_headers={"x-bastion-feature": "capped", "connection": "close"},
        )
    except (anthropic.APIStatusError, anthropic.APIConnectionError) as exc:
        return exc


def in_flight(
    w: Workers, n: int, model: str = "sim-slow"
) -> tuple[list[threading.Thread], list[Any]]:
    """``n`` calls started at once, each from its own thread: the threads, and the list their
    results are appended to as they end."""
    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda: results.append(capped_call(w, model))) for _ in range(n)
    ]
    for t in threads:
        t.start()
    return threads, results

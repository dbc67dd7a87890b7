"""A stream's per-key slot is free by the time its closing write goes out.

A client that reads a stream to its end may start its next one at once; under load the
request task's own wind-down (the relay task, the disconnect watcher) can take longer than
that, so a key running exactly its limit of streams back to back got spurious 429s (seen at
concurrency 50 in bench/overhead.py). The slot is given back once the relay has finished
(upstream closed, call settled), before the closing write.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from tests.conftest import sim_models

from bastion.auth import new_key
from bastion.config import load_config
from bastion.errors import BastionError
from bastion.gateway import Gateway
from bastion.server.app import create_app


@pytest.fixture
async def one_stream_app(tmp_path: Path) -> AsyncIterator[tuple[Any, str, str]]:
    cfg = load_config(
        None,
        overrides={
            "store": {"url": f"sqlite:///{tmp_path / 's.db'}"},
            "state": {"url": "memory://"},
            "observability": {"spill_path": str(tmp_path / "spill.jsonl")},
            "providers": {"sim": {"kind": "sim"}},
            "models": sim_models(),
            "server": {"max_concurrent_streams_per_key": 1},
        },
    )
    gw = Gateway(cfg)
    await gw.start()
    secret, rec = new_key("one-stream")
    await gw.store.create_key(rec)
    try:
        yield create_app(gw), secret, rec.id
    finally:
        await gw.aclose()


async def _stream(app: Any, key: str, key_id: str) -> tuple[int, bytes, list[bool]]:
    """One streaming call through the ASGI app; at each write, whether the key's slot was free."""
    body = orjson.dumps(
        {
            "model": "claude-sonnet-5",
            "max_tokens": 50,
            "stream": True,
            "messages": [{"role": "user", "content": "hello there"}],
        }
    )
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "path": "/v1/messages",
        "raw_path": b"/v1/messages",
        "query_string": b"",
        "headers": [
            (b"x-api-key", key.encode()),
            (b"anthropic-version", b"2023-06-01"),
            (b"content-type", b"application/json"),
        ],
        "scheme": "http",
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 1),
    }
    sent = False
    status = 0
    chunks: list[bytes] = []
    free_at: list[bool] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client stays connected
        raise AssertionError("unreachable")

    def slot_free() -> bool:
        try:
            lease = app.streams.acquire(key_id, None)
        except BastionError:
            return False
        lease.release()
        return True

    async def send(msg: dict[str, Any]) -> None:
        nonlocal status
        if msg["type"] == "http.response.start":
            status = msg["status"]
        elif msg["type"] == "http.response.body":
            chunks.append(msg.get("body", b""))
            free_at.append(slot_free())

    await app(scope, receive, send)
    return status, b"".join(chunks), free_at


async def test_the_slot_is_free_when_the_closing_write_goes_out(
    one_stream_app: tuple[Any, str, str],
) -> None:
    app, key, key_id = one_stream_app
    for _ in range(3):  # back to back, at the key's limit of one
        status, out, free_at = await _stream(app, key, key_id)
        assert status == 200, out[-300:]
        assert b"message_stop" in out
        # held while events flow, free for the closing (empty) write
        assert free_at[-1] is True
        assert not any(free_at[:-1])

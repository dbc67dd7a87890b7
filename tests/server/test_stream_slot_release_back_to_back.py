"""A key running exactly its limit of streams back to back is never refused.

The per-key slot (``server.max_concurrent_streams_per_key``) comes back once the stream's last
event is out, before its closing write: a client that opens its next stream as soon as it has
read the previous one to its end finds its slot free. It came back only after the request
task wound down, so under load such a client got 429s with fewer streams open than its limit
(bench/sidebyside.py: 63 refusals at 50 streams in flight, limit 64). The count never drops
below the streams really open: with the limit held by open streams, one more is refused.
Real ``bastion serve`` over HTTP, both API formats.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from tests.conftest import RunningGateway, start_gateway, stop, write_config

LIMIT = 12
ROUNDS = 20


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[RunningGateway]:
    gw = start_gateway(write_config(tmp_path, server={"max_concurrent_streams_per_key": LIMIT}))
    try:
        yield gw
    finally:
        stop(gw.proc)


def _request(
    gw: RunningGateway, i: int, model: str | None = None
) -> tuple[str, dict[str, Any], dict[str, str]]:
    messages = [{"role": "user", "content": f"stream number {i}"}]
    if i % 2 == 0:
        body: dict[str, Any] = {
            "model": model or "claude-sonnet-5",
            "max_tokens": 40,
            "stream": True,
        }
        headers = {"x-api-key": gw.key, "anthropic-version": "2023-06-01"}
        return "/v1/messages", {**body, "messages": messages}, headers
    body = {"model": model or "gpt-4.1-mini", "max_tokens": 40, "stream": True}
    return (
        "/v1/chat/completions",
        {**body, "messages": messages},
        {"authorization": f"Bearer {gw.key}"},
    )


async def _one(client: httpx.AsyncClient, gw: RunningGateway, i: int) -> tuple[int, bytes]:
    path, body, headers = _request(gw, i)
    async with client.stream("POST", path, json=body, headers=headers) as r:
        out = b"".join([c async for c in r.aiter_bytes()])  # to the stream's very end
    return r.status_code, out


async def _lane(
    client: httpx.AsyncClient, gw: RunningGateway, lane: int
) -> list[tuple[int, bytes]]:
    """ROUNDS streams one after another, each opened the moment the previous one ended."""
    return [await _one(client, gw, lane * ROUNDS + n) for n in range(ROUNDS)]


@pytest.mark.timeout(90)
async def test_limit_streams_at_a_time_back_to_back_are_never_refused(
    gateway: RunningGateway,
) -> None:
    limits = httpx.Limits(max_connections=LIMIT, max_keepalive_connections=LIMIT)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30, limits=limits) as client:
        lanes = await asyncio.wait_for(
            asyncio.gather(*(_lane(client, gateway, lane) for lane in range(LIMIT))), 80
        )
    results = [r for lane in lanes for r in lane]
    statuses = Counter(status for status, _ in results)
    assert statuses == {200: LIMIT * ROUNDS}, (
        statuses,
        [o[:300] for s, o in results if s != 200][:3],
    )
    for _, out in results:  # every stream ran to its end
        assert b"message_stop" in out or b"data: [DONE]" in out, out[-300:]


@pytest.mark.timeout(60)
async def test_the_count_never_drops_below_the_streams_open(gateway: RunningGateway) -> None:
    limits = httpx.Limits(max_connections=LIMIT + 1)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30, limits=limits) as client:
        started = asyncio.Event()
        opened = 0

        async def held(i: int) -> int:
            nonlocal opened
            path, body, headers = _request(gateway, i, "slow-stream")  # 8 chunks 150 ms apart
            async with client.stream("POST", path, json=body, headers=headers) as r:
                it = r.aiter_bytes()
                await anext(it)  # its first event is in: the stream is open
                opened += 1
                if opened == LIMIT:
                    started.set()
                async for _ in it:
                    pass
            return r.status_code

        streams = [asyncio.ensure_future(held(i)) for i in range(LIMIT)]
        await asyncio.wait_for(started.wait(), 20)
        path, body, headers = _request(gateway, 0)
        extra = await client.post(path, json=body, headers=headers)
        assert extra.status_code == 429, extra.text[:300]
        assert "limit" in extra.text
        assert await asyncio.gather(*streams) == [200] * LIMIT
        # all of them over: the key's slots are all free again
        again = await asyncio.gather(*(_one(client, gateway, i) for i in range(LIMIT)))
        assert [s for s, _ in again] == [200] * LIMIT

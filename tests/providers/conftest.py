"""Fixtures for provider tests: a simulator served by a real uvicorn on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pytest
import uvicorn

from bastion.providers.sim import Simulator, create_app
from bastion.providers.sse import SSEDecoder, SSEEvent


@dataclass
class SimServer:
    """A running simulator: the instance (to inspect state) and its base URL."""

    sim: Simulator
    url: str


StartSim = Callable[..., Awaitable[SimServer]]


@pytest.fixture
async def start_sim() -> AsyncIterator[StartSim]:
    """Start simulators over HTTP on free ports (``Simulator`` options as kwargs); stop them after."""
    servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def start(**options: Any) -> SimServer:
        sim = Simulator(**options)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            create_app(sim),
            http="httptools",
            lifespan="off",
            access_log=False,
            log_level="warning",
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        servers.append((server, task))
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.01)
        return SimServer(sim=sim, url=f"http://127.0.0.1:{port}")

    yield start
    for server, _ in servers:
        server.should_exit = True
    for _, task in servers:
        await asyncio.wait_for(task, timeout=5)


@pytest.fixture
async def sim_server(start_sim: StartSim) -> SimServer:
    """A default simulator over HTTP (no latency, 24-token replies)."""
    return await start_sim()


@dataclass
class RawReply:
    """A raw HTTP answer: what a client without an SDK would see."""

    status: int
    headers: dict[str, str]
    body: bytes
    error: BaseException | None = None  # set when the connection broke mid-body

    def json(self) -> Any:
        return orjson.loads(self.body)

    def events(self) -> list[SSEEvent]:
        return SSEDecoder().feed(self.body)


RawPost = Callable[..., Awaitable[RawReply]]


@pytest.fixture
async def raw_post() -> AsyncIterator[RawPost]:
    """POST (or GET) with aiohttp, keeping whatever body arrived before a broken connection."""
    async with aiohttp.ClientSession() as session:

        async def post(
            url: str,
            body: Any = None,
            *,
            headers: dict[str, str] | None = None,
            method: str = "POST",
            data: bytes | None = None,
        ) -> RawReply:
            payload = data if data is not None else (orjson.dumps(body) if body is not None else b"")
            async with session.request(method, url, data=payload, headers=headers or {}) as resp:
                chunks: list[bytes] = []
                error: BaseException | None = None
                try:
                    async for chunk in resp.content.iter_any():
                        chunks.append(chunk)
                except (aiohttp.ClientError, ConnectionError) as exc:
                    error = exc
                return RawReply(
                    status=resp.status,
                    headers={k.lower(): v for k, v in resp.headers.items()},
                    body=b"".join(chunks),
                    error=error,
                )

        yield post

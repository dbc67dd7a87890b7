"""Fixtures for provider tests: a simulator served by a real uvicorn on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import anthropic
import openai
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
    servers: list[uvicorn.Server] = []

    async def start(**options: Any) -> SimServer:
        sim = Simulator(**options)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            create_app(sim), http="httptools", lifespan="off", access_log=False, log_level="warning"
        )
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[sock])
        servers.append(server)
        return SimServer(sim=sim, url=f"http://127.0.0.1:{port}")

    yield start
    # Faster than Server.shutdown (which polls): stalled streams are expected here.
    for server in servers:
        for listener in server.servers:
            listener.close()
        for task in list(server.server_state.tasks):
            task.cancel()
        for conn in list(server.server_state.connections):
            conn.transport.abort()
    await asyncio.sleep(0)


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
            payload = (
                data if data is not None else (orjson.dumps(body) if body is not None else b"")
            )
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


class Clients:
    """Official SDK clients pointed at a simulator, closed when the test ends."""

    def __init__(self) -> None:
        self._open: list[anthropic.AsyncAnthropic | openai.AsyncOpenAI] = []

    def anthropic(self, server: SimServer, **kw: Any) -> anthropic.AsyncAnthropic:
        kw.setdefault("max_retries", 0)
        c = anthropic.AsyncAnthropic(base_url=server.url, api_key="x", **kw)
        self._open.append(c)
        return c

    def openai(self, server: SimServer, **kw: Any) -> openai.AsyncOpenAI:
        kw.setdefault("max_retries", 0)
        c = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x", **kw)
        self._open.append(c)
        return c

    async def aclose(self) -> None:
        for c in self._open:
            await c.close()


@pytest.fixture
async def sdk() -> AsyncIterator[Clients]:
    """Make official SDK clients (no retries unless asked) that are closed after the test."""
    clients = Clients()
    yield clients
    await clients.aclose()

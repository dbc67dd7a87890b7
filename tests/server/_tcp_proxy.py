"""A loopback TCP forwarder on its own thread that can be cut and restored: a real outage.

Cutting it closes the listener and aborts every forwarded connection, so a gateway process
pointed at it sees exactly what a dead PostgreSQL or Redis shows: refused connects and
reset sockets. Restoring it listens again on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Coroutine
from typing import Any


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to 127.0.0.1:``target`` while up."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = _free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()

    def _run(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    def up(self) -> None:
        self._run(self._up())

    def down(self) -> None:
        self._run(self._down())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.down()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    async def _up(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._serve, "127.0.0.1", self.port, reuse_address=True
            )

    async def _down(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._conns):
            w.transport.abort()
        self._conns.clear()

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            w.transport.abort()
            return
        self._conns.update((w, uw))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(r, uw), pipe(ur, w))
        self._conns.difference_update((w, uw))

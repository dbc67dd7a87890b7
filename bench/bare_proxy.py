"""A minimal pass-through HTTP proxy: the floor any Python gateway on this stack pays.

Same server stack as ``bastion serve`` (uvicorn with httptools on a uvloop loop, access
log off) and the same upstream client (one pooled aiohttp session), but no Bastion logic:
no auth, no parsing, no guards, no records. Each request is forwarded to ``--upstream``
with its path and headers (minus hop-by-hop ones); a unary answer is read whole and sent
on, an SSE answer is relayed chunk by chunk as it arrives, like the gateway does.
``bench/overhead.py`` measures it as a third path next to direct and Bastion, so the
difference between ``bare`` and ``bastion`` is what Bastion's own code costs.

    .venv/bin/python bench/bare_proxy.py --port 9200 --upstream http://127.0.0.1:9100
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp
import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Not forwarded in either direction: connection-level headers and ones aiohttp recomputes.
HOP_BY_HOP = frozenset(
    {
        "host",
        "connection",
        "keep-alive",
        "content-length",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "proxy-connection",
        "content-encoding",
    }
)
# Set by our own server on the way out; forwarding the upstream's would send them twice.
NOT_RELAYED = HOP_BY_HOP | {"date", "server"}


def create_app(upstream: str) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    base = upstream.rstrip("/")
    session: aiohttp.ClientSession | None = None

    async def lifespan(receive: Receive, send: Send) -> None:
        nonlocal session
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=60),
                    timeout=aiohttp.ClientTimeout(total=None, connect=5.0),
                    auto_decompress=True,
                    skip_auto_headers=("User-Agent",),
                )
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                if session is not None:
                    await session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http" or session is None:
            return
        chunks = []
        while True:
            msg = await receive()
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        headers = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in scope["headers"]
            if k.decode("latin-1").lower() not in HOP_BY_HOP
        }
        url = base + scope["path"]
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        try:
            resp = await session.request(
                scope["method"], url, data=b"".join(chunks), headers=headers
            )
        except (aiohttp.ClientError, OSError) as exc:
            body = f'{{"error": "upstream unreachable: {type(exc).__name__}"}}'.encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 502,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        async with resp:
            out = [
                (k.encode("latin-1"), v.encode("latin-1"))
                for k, v in resp.headers.items()
                if k.lower() not in NOT_RELAYED
            ]
            await send({"type": "http.response.start", "status": resp.status, "headers": out})
            if resp.content_type == "text/event-stream":
                async for chunk in resp.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
            else:
                await send({"type": "http.response.body", "body": await resp.read()})

    return app


async def serve(host: str, port: int, upstream: str) -> None:
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(upstream),
            host=host,
            port=port,
            loop="none",
            http="httptools",
            lifespan="on",
            access_log=False,
            log_level="warning",
        )
    )
    await server.serve()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:9100")
    args = p.parse_args(argv)
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        runner.run(serve(args.host, args.port, args.upstream))
    return 0


if __name__ == "__main__":
    sys.exit(main())

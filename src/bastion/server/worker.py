"""One worker process of ``bastion serve --workers N``, started by the supervisor (workers.py).

    python -m bastion.server.worker --id I (--fd FD | --host H --port P) --ready-fd R < config.json

It reads the supervisor's final config as JSON on stdin (no second config lookup that could
find another file or environment), serves the gateway on the listening socket it inherited
(``--fd``) or on its own ``SO_REUSEPORT`` socket bound to the same port (``--host/--port``),
and writes one byte to ``--ready-fd`` once it accepts calls. It drains on SIGTERM like a single
server (``DrainingServer``), and asks the kernel for a SIGTERM if the supervisor dies first, so
a killed supervisor never leaves workers serving without one. On embedded state
(``--state-socket``) its counters are the state host's, reached through ``RemoteCounterStore``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from pydantic import ValidationError

from ..config import Config
from ..errors import ConfigError
from ..state.remote import url_for
from .serve import serve_gateway
from .worker_metrics import WorkerPeers

_PR_SET_PDEATHSIG = 1


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bastion.server.worker")
    p.add_argument("--id", type=int, required=True)
    p.add_argument("--fd", type=int, help="the inherited listening socket")
    p.add_argument("--host", help="with --port: bind an own SO_REUSEPORT socket")
    p.add_argument("--port", type=int)
    p.add_argument("--ready-fd", type=int, required=True)
    p.add_argument("--parent", type=int, required=True, help="the supervisor's pid")
    p.add_argument("--count", type=int, required=True, help="how many workers there are")
    p.add_argument("--runtime-dir", required=True, help="the workers' private sockets")
    p.add_argument("--state-socket", help="the state host's socket (embedded state)")
    return p.parse_args(argv)


def die_with_parent(parent: int) -> None:
    """SIGTERM (a drain) when the supervisor dies, so no worker outlives it (Linux only)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def listening_socket(args: argparse.Namespace, backlog: int = 2048) -> socket.socket:
    if args.fd is not None:
        return socket.socket(fileno=args.fd)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    return socket.create_server(
        (args.host, args.port), family=family, backlog=backlog, reuse_port=True
    )


def _run(coro: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(coro)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    die_with_parent(args.parent)
    try:
        cfg = Config.model_validate_json(sys.stdin.buffer.read())
    except ValidationError as exc:
        print(f"error: worker {args.id}: bad config from the supervisor: {exc}", file=sys.stderr)
        return 2
    if args.state_socket:  # the counters live in the state host, not in this process
        state = cfg.state.model_copy(update={"url": url_for(args.state_socket)})
        cfg = cfg.model_copy(update={"state": state})
    sock = listening_socket(args)
    host, port = sock.getsockname()[:2]

    def ready() -> None:
        with contextlib.suppress(OSError):
            os.write(args.ready_fd, b"1")
            os.close(args.ready_fd)

    try:
        peers = WorkerPeers(args.id, args.count, args.runtime_dir)
        _run(serve_gateway(cfg, host=host, port=port, sockets=[sock], ready=ready, peers=peers))
    except ConfigError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

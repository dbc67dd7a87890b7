"""Running the gateway under uvicorn: the start-up banner, and a shutdown with a bound.

uvicorn's own graceful shutdown waits for every open connection with no time limit
(``timeout_graceful_shutdown`` defaults to None), so one long SSE stream held a SIGTERM for
minutes; it ignores a second SIGTERM (only SIGINT forces it); and once done it re-raises the
signal, so even a clean drain ended as "killed by SIGTERM" instead of status 0. Setting
``timeout_graceful_shutdown`` alone fixes only the first (and in whole seconds): the calls it
cancels then race the record flush. ``DrainingServer`` bounds the drain by
``server.shutdown_drain_seconds``, lets cut calls record themselves before the flush, exits at
once on a second signal, and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import typer
import uvicorn

from ..auth import new_key
from ..config import Config
from ..gateway import Gateway
from ..observability.access import ACCESS_LOGGER, configure_logging
from ..safety.pii import Scrubber
from ..safety.pii.guard import PiiLogFilter
from ..store import RecordStore
from .app import create_app
from .protocol import HeaderLimits, limited_protocol
from .worker_metrics import WorkerPeers, bind_private

log = logging.getLogger("bastion.server")

BANNER = """\
Bastion is listening on {url}
  providers: {providers}
  dashboard: {url}/dashboard   metrics: {url}/metrics (admin key)
{key_line}
Try it: paste into python3 (pip install anthropic openai)

from anthropic import Anthropic
c = Anthropic(base_url="{url}", api_key="{key}")
print(c.messages.create(model="{amodel}", max_tokens=200,
      messages=[{{"role": "user", "content": "Hello"}}]).content[0].text)

from openai import OpenAI
c = OpenAI(base_url="{url}/v1", api_key="{key}")
print(c.chat.completions.create(model="{omodel}",
      messages=[{{"role": "user", "content": "Hello"}}]).choices[0].message.content)

One line per call follows (--log-format json for JSON, --log-level warning for none).
"""

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_POLL_S = 0.05  # how often the drain looks for connections still open
_CUT_GRACE_S = 1.0  # calls cut at the drain's end: time to settle their budget and submit a record
_FLUSH_GRACE_S = 15.0  # after the drain: the record flush; past it the watchdog ends the process


def install_log_scrubbing(scrubber: Scrubber) -> None:
    """Log lines are a place PII leaks to: every handler of the process scrubs what it writes."""
    root = logging.getLogger()
    if not root.handlers:
        configure_logging("info", "text")
    log_filter = PiiLogFilter(scrubber)
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access", ACCESS_LOGGER):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(log_filter)


def workers_refusal(cfg: Config, workers: int) -> str | None:
    """Why ``bastion serve --workers N`` cannot run as asked, or None when it can.

    One worker always runs. Several share one set of counters (``server/workers.py``), so caps,
    rate limits, breakers, the kill switch and idempotency hold exactly as in one process: on
    Redis, the workers are replicas; on the embedded state (memory, SQLite), one state host
    process owns the counters and serves them to the workers. ``statehost://`` is the workers'
    internal URL for it, never a user's: refused in a config.
    """
    scheme = cfg.state.url.partition("://")[0].lower()
    if scheme == "statehost":
        return (
            f"state.url {cfg.state.url!r}: statehost:// is internal to `bastion serve "
            "--workers N`; use sqlite://, memory:// or redis://"
        )
    if workers < 1:
        return f"--workers must be 1 or more (got {workers})"
    return None


def pool_warnings(cfg: Config) -> list[str]:
    """Providers whose connection pool one key's streams could fill on their own."""
    per_key = cfg.server.max_concurrent_streams_per_key
    return [
        f"provider {name!r}: max_connections {p.max_connections} <= "
        f"server.max_concurrent_streams_per_key {per_key if per_key is not None else '(none)'}; "
        "one key's open streams can hold every connection to it"
        for name, p in cfg.providers.items()
        if p.kind != "sim"
        and not p.resolved_base_url().startswith("sim://")  # in-process: no pool
        and (per_key is None or per_key >= p.max_connections)
    ]


class DrainingServer(uvicorn.Server):
    """uvicorn's server with a shutdown an orchestrator can rely on.

    The first SIGTERM or SIGINT closes the listener (new connections are refused), closes idle
    keep-alive connections, and lets the calls in flight, streams included, finish for at most
    ``drain_s`` seconds. Calls still running then are cancelled: a stream's client sees its
    connection close without the final event, never a clean end of a truncated answer, and each
    cut call gets a moment to settle its budget and submit its record. Then the lifespan
    shutdown flushes the records (``Gateway.aclose``) and ``serve`` returns, so the process
    exits 0. A second signal exits at once with 128 + its number: what was submitted is in the
    record journal, which the next start replays. The first signal also arms a watchdog thread
    that ends the process if the flush or the event loop's teardown outlives its grace, so no
    signal is ever held without bound; it stays armed, since the process is on its way out.
    """

    def __init__(self, config: uvicorn.Config, *, drain_s: float) -> None:
        super().__init__(config)
        self.drain_s = drain_s
        self._watchdog: threading.Timer | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn's, minus re-raising the signal at the end (which turned exit 0 into -15)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in _SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """First signal: drain. Second: exit now, whatever is in flight."""
        if self.should_exit:
            _say(f"bastion: second {signal.Signals(sig).name}: exiting now\n")
            os._exit(128 + sig)
        self.should_exit = True
        _say(
            f"bastion: {signal.Signals(sig).name}: refusing new connections, draining calls "
            f"in flight for up to {self.drain_s:g}s (signal again to exit now)\n"
        )
        self._watchdog = threading.Timer(self.drain_s + _FLUSH_GRACE_S, _overdue)
        self._watchdog.daemon = True
        self._watchdog.start()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Stop listening, drain with a bound, cut what is left, then run the lifespan shutdown."""
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        state = self.server_state
        for connection in list(state.connections):
            connection.shutdown()  # idle: closed now; busy: closed after its response
        drain = self.drain_s
        if not await self._drained(drain):
            tasks = list(state.tasks)
            log.warning(
                "shutdown: %d call(s) still running after the %gs drain; cutting them",
                len(tasks),
                drain,
            )
            # uvicorn logs each one as an "Exception in ASGI application" traceback: said above
            logging.getLogger("uvicorn.error").addFilter(_not_cancelled)
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=_CUT_GRACE_S)
            for connection in list(state.connections):
                connection.transport.abort()
        await self.lifespan.shutdown()

    async def _drained(self, seconds: float) -> bool:
        """Wait until no connection or request task is left, for at most ``seconds``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        state = self.server_state
        while state.connections or state.tasks:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(min(_POLL_S, max(0.0, deadline - loop.time())))
        return True


def _not_cancelled(record: logging.LogRecord) -> bool:
    """A log filter dropping the tracebacks of calls the shutdown cut on purpose."""
    return not (record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError))


def _say(text: str) -> None:
    """One line to stderr from a signal handler or a thread: a raw write, no logging locks."""
    with contextlib.suppress(OSError):
        os.write(2, text.encode())


def _overdue() -> None:
    _say("bastion: shutdown outlived the drain and flush bound; exiting now\n")
    os._exit(1)


def server_config(app: Any, cfg: Config, *, host: str, port: int) -> uvicorn.Config:
    """uvicorn's config for the gateway: httptools with the header limits uvicorn lacks."""
    srv = cfg.server
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="none",
        # httptools, plus limits on header size, count and time that uvicorn lacks
        http=limited_protocol(
            HeaderLimits(
                max_bytes=srv.max_header_bytes,
                max_count=srv.max_header_count,
                timeout=srv.header_timeout_seconds,
            ),
            getattr(getattr(app, "gateway", None), "refusals", None),  # counted like any refusal
        ),
        lifespan="on",
        access_log=False,
        log_level="warning",
    )


async def first_key(store: RecordStore) -> tuple[str, str]:
    """An admin key when the store has none: (the key for the banner, the banner's key line).

    One process does this: the single server, or the workers' supervisor before it starts any
    worker, so N workers never race to make N first keys.
    """
    if await store.list_keys():
        return "<your key>", "  keys: create one with `bastion keys create --name NAME`"
    secret, record = new_key("dev", roles=("admin",))
    await store.create_key(record)
    return secret, (
        f"  a first key was created, role admin (dashboard, metrics, kill switch; shown "
        f"once, stored hashed):\n  {secret}\n  make app keys with `bastion keys create "
        "--name NAME` (scripts/dev bastion keys create … from a clone)"
    )


async def serve_gateway(
    cfg: Config,
    *,
    host: str,
    port: int,
    sockets: list[socket.socket] | None = None,
    ready: Callable[[], None] | None = None,
    peers: WorkerPeers | None = None,
) -> None:
    """Serve until a signal drains the server.

    As a worker (``sockets`` given: the listening socket its supervisor opened, see
    ``workers.py``) there is no first-key bootstrap and no banner, both the supervisor's; the
    worker calls ``ready`` once it accepts calls, and with ``peers`` also serves a private Unix
    socket its siblings fetch its metrics from (``worker_metrics.py``).
    """
    worker = sockets is not None
    configure_logging(cfg.server.log_level, cfg.server.log_format)
    collecting = gc.isenabled()
    gc.disable()  # start-up builds weights and tables that live forever: no pass until frozen
    gateway = Gateway(cfg)
    app = create_app(gateway)
    if peers is not None and sockets is not None:  # /metrics answers for every worker
        app.peers = peers
        sockets = [*sockets, bind_private(peers)]
    server = DrainingServer(
        server_config(app, cfg, host=host, port=port),
        drain_s=cfg.server.shutdown_drain_seconds,
    )
    with server.capture_signals():  # a SIGTERM during start-up drains too (there is nothing yet)
        await gateway.start()
        key, key_line = ("", "") if worker else await first_key(gateway.store)
        if not worker:
            for w in pool_warnings(cfg):
                typer.echo(f"warning: {w}", err=True)
        install_log_scrubbing(gateway.scrubber)
        gc.freeze()  # start-up objects live forever: keep them out of every collection
        if collecting:
            gc.enable()
        task = asyncio.ensure_future(server.serve(sockets=sockets))
        while not server.started and not task.done():
            await asyncio.sleep(0.02)
        if server.started:
            if ready is not None:
                ready()
            if not worker:
                _banner(server, gateway, key=key, key_line=key_line)
        await task


def _banner(server: uvicorn.Server, gateway: Gateway, *, key: str, key_line: str) -> None:
    sock = server.servers[0].sockets[0].getsockname()
    typer.echo(banner_text(gateway.config, f"http://{sock[0]}:{sock[1]}", key, key_line), nl=False)


def banner_text(cfg: Config, url: str, key: str, key_line: str) -> str:
    """The start-up banner: where it listens, the providers, the first key, a call to try."""
    aliases = [a for a in cfg.models if not any(c in a for c in "*?[")]  # as Router.aliases
    return BANNER.format(
        url=url,
        providers=", ".join(f"{n} ({p.kind})" for n, p in cfg.providers.items()),
        key_line=key_line,
        key=key,
        amodel=next(
            (a for a in aliases if a.startswith("claude")),
            aliases[0] if aliases else "MODEL",
        ),
        omodel=next(
            (a for a in aliases if a.startswith("gpt")), aliases[0] if aliases else "MODEL"
        ),
    )

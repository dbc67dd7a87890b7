"""Running the gateway under uvicorn, with the start-up banner a new user copies from."""

from __future__ import annotations

import gc
import logging

import typer
import uvicorn

from ..auth import new_key
from ..config import Config
from ..gateway import Gateway
from ..safety.pii import Scrubber
from ..safety.pii.guard import PiiLogFilter
from .app import create_app
from .protocol import HeaderLimits, limited_protocol

BANNER = """\
Bastion is listening on {url}
  providers: {providers}
{key_line}
Try it with the official SDKs:

  from anthropic import Anthropic
  c = Anthropic(base_url="{url}", api_key="{key}")
  print(c.messages.create(model="{amodel}", max_tokens=200,
        messages=[{{"role": "user", "content": "Hello"}}]).content[0].text)

  from openai import OpenAI
  c = OpenAI(base_url="{url}/v1", api_key="{key}")
  print(c.chat.completions.create(model="{omodel}",
        messages=[{{"role": "user", "content": "Hello"}}]).choices[0].message.content)
"""


def install_log_scrubbing(scrubber: Scrubber) -> None:
    """Log lines are a place PII leaks to: every handler of the process scrubs what it writes."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    log_filter = PiiLogFilter(scrubber)
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(log_filter)


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


async def serve_gateway(cfg: Config, *, host: str, port: int) -> None:
    gateway = Gateway(cfg)
    await gateway.start()
    key = "<your key>"
    key_line = "  keys: create one with `bastion keys create --name NAME`"
    if not await gateway.store.list_keys():
        secret, record = new_key("dev", roles=("admin",))
        await gateway.store.create_key(record)
        key = secret
        key_line = f"  a first key was created (shown once, stored hashed): {secret}"
    app = create_app(gateway)
    for w in pool_warnings(cfg):
        typer.echo(f"warning: {w}", err=True)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            loop="none",
            # httptools, plus limits on header size, count and time that uvicorn lacks
            http=limited_protocol(
                HeaderLimits(
                    max_bytes=cfg.server.max_header_bytes,
                    max_count=cfg.server.max_header_count,
                    timeout=cfg.server.header_timeout_seconds,
                )
            ),
            lifespan="on",
            access_log=False,
            log_level="warning",
        )
    )
    install_log_scrubbing(gateway.scrubber)
    gc.freeze()  # start-up objects live forever: keep them out of every collection
    serve_task = server.serve()
    import asyncio

    task = asyncio.ensure_future(serve_task)
    while not server.started and not task.done():
        await asyncio.sleep(0.02)
    if server.started:
        sock = server.servers[0].sockets[0].getsockname()
        url = f"http://{sock[0]}:{sock[1]}"
        aliases = gateway.router.aliases()
        typer.echo(
            BANNER.format(
                url=url,
                providers=", ".join(f"{n} ({e.kind})" for n, e in gateway.endpoints.items()),
                key_line=key_line,
                key=key,
                amodel=next(
                    (a for a in aliases if a.startswith("claude")),
                    aliases[0] if aliases else "MODEL",
                ),
                omodel=next(
                    (a for a in aliases if a.startswith("gpt")), aliases[0] if aliases else "MODEL"
                ),
            ),
            nl=False,
        )
    await task

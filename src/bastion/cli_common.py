"""What every ``bastion`` command starts from: its config, an event loop and the record store.

A command finds its config the way ``bastion serve`` does (``--config``, then
``$BASTION_CONFIG``, then ./bastion.yaml), so an operator's command reads the same store and
state as the gateway beside it; a bad config is one line on stderr and exit 2. A command's async
work runs on uvloop where it is installed, and a store is opened, migrated and closed around one
piece of work. ``cli.py`` and the command modules it loads lazily (``spend``) use these.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

from .config import Config, find_config, load_config
from .errors import ConfigError

__all__ = ["ConfigOpt", "command_config", "run_coroutine", "state_where", "with_store"]

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config file", envvar="BASTION_CONFIG")
]


def command_config(path: Path | None, *, need_store: bool = False) -> Config:
    """The config: ``--config``, then ``$BASTION_CONFIG`` (typer reads it), then ./bastion.yaml.

    With ``need_store``, a command run with no config file where no record store exists says
    so and exits 1, instead of silently creating an empty ``bastion.db`` in this folder.
    """
    found = find_config(path)
    try:
        cfg = load_config(found)
    except ConfigError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    if need_store and found is None:
        _, missing = state_where(cfg.store.url, "")
        if missing is not None:
            typer.echo(
                f"error: no record store here ({missing} does not exist) and no config file "
                "found. Run this from the folder where `bastion serve` runs, or pass its config "
                "with --config or $BASTION_CONFIG.",
                err=True,
            )
            raise typer.Exit(1)
    return cfg


def run_coroutine(coro: Any) -> Any:
    """Run a command's async work to its end, on uvloop where it is installed."""
    try:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
    except ImportError:
        return asyncio.run(coro)


async def with_store(cfg: Config, fn: Any) -> Any:
    """``fn(store)`` on the config's record store, migrated first (a new file is made usable)."""
    from .store import open_store

    store = open_store(cfg.store.url)
    try:
        await store.migrate()
        return await fn(store)
    finally:
        await store.close()


def state_where(url: str, prefix: str) -> tuple[str, Path | None]:
    """The state a URL names, readable and without its password; and the file if it is missing."""
    from urllib.parse import urlsplit, urlunsplit

    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower() if sep else ""
    if scheme == "memory" or (scheme == "sqlite" and rest in (":memory:", "/:memory:")):
        return "memory (inside each process)", None
    if scheme == "sqlite" and rest.startswith("/") and rest[1:].partition("?")[0]:
        path = Path(rest[1:].partition("?")[0]).resolve()
        return f"sqlite file {path}", None if path.exists() else path
    parts = urlsplit(url)
    if parts.password is not None:
        netloc = parts.netloc.rpartition("@")
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{netloc[2]}")
    return f"{urlunsplit(parts)} (key prefix {prefix!r})", None

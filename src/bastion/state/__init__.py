"""Counters behind every cross-call guarantee, in process (default) or in Redis, by URL.

    open_state("memory://")                    # one process, nothing survives a restart
    open_state("sqlite:///relative/state.db")  # one process, persisted (write-behind)
    open_state("sqlite:////abs/state.db")
    open_state("redis://127.0.0.1:6379/0")     # many replicas (also rediss://, unix://)
    open_state("redis+cluster://10.0.0.1:7000,10.0.0.2:7000")  # Redis Cluster (rediss+cluster)

Opening is synchronous and connects nothing: the memory store loads its file on first use,
Redis connects on first command. Outages then raise ``StateUnavailable``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.errors import ConfigError
from bastion.state.base import (
    BreakerDecision,
    BreakerPolicy,
    BreakerState,
    Cap,
    CounterStore,
    IdemBegin,
    IdemOutcome,
    IncrResult,
    ReserveResult,
    TakeResult,
    Usage,
)
from bastion.state.memory import MemoryCounterStore

if TYPE_CHECKING:  # redis-py costs ~0.1 s to import: only a redis:// state URL loads it
    from bastion.state.redis import RedisCounterStore

__all__ = [
    "BreakerDecision",
    "BreakerPolicy",
    "BreakerState",
    "Cap",
    "CounterStore",
    "IdemBegin",
    "IdemOutcome",
    "IncrResult",
    "MemoryCounterStore",
    "RedisCounterStore",
    "ReserveResult",
    "TakeResult",
    "Usage",
    "open_state",
]


def open_state(url: str, *, prefix: str = "bastion") -> CounterStore:
    """Pick the backend from the URL scheme; ``prefix`` namespaces Redis keys per deployment."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower() if sep else ""
    if scheme == "memory":
        if rest.strip("/"):
            raise ConfigError(f"counter state URL {url!r}: memory:// takes no path")
        return MemoryCounterStore()
    if scheme == "sqlite":
        if rest in (":memory:", "/:memory:"):
            return MemoryCounterStore()
        path = rest[1:].partition("?")[0] if rest.startswith("/") else ""
        if not path:
            raise ConfigError(
                f"counter state URL {url!r} has no file path: use sqlite:///relative.db "
                "or sqlite:////absolute.db"
            )
        return MemoryCounterStore(path)
    if scheme == "statehost":  # internal: a worker's view of the state host (state/remote.py)
        from bastion.state.remote import RemoteCounterStore

        return RemoteCounterStore(rest)
    if scheme in ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster"):
        from bastion.state.redis import RedisCounterStore

        return RedisCounterStore(url, prefix=prefix)
    shown = scheme or "(none)"
    raise ConfigError(
        f"unknown counter state URL scheme {shown!r}: use memory://, sqlite://, redis:// "
        "or redis+cluster://"
    )


def __getattr__(name: str) -> object:
    """``RedisCounterStore`` is imported on first use, so embedded state never loads redis-py."""
    if name == "RedisCounterStore":
        from bastion.state.redis import RedisCounterStore

        return RedisCounterStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

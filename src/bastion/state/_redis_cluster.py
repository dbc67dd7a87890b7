"""The Redis Cluster client behind ``state.url: redis+cluster://host:port[,host:port...]``.

Imported only for such a URL (redis-py's cluster module is not needed otherwise). The store
itself (``state/redis.py``) is the same for one Redis and for a cluster: it names every key
with ``redis_key``, whose hash tags put all the keys of one script in one slot.

Redirections and failover:

- ``MOVED``, ``ASK`` and ``TRYAGAIN`` replies mean the node did not run the command; redis-py
  follows them (patching its slot map, re-reading the topology), so a resharding or a
  finished failover costs a redirect, not a failed call.
- ``CLUSTERDOWN`` and a slot no node covers (during a failover, before a replica is promoted)
  also mean nothing ran; those are retried a few times (redis-py waits 0.25 s and re-reads
  the topology before each retry).
- A connection error or a timeout is never retried: the script may have run with its reply
  lost, and running ``take``, ``incr`` or ``idem_begin`` twice would double count. The call
  fails with ``StateUnavailable`` (fail closed, as with one Redis down), and redis-py re-reads
  the topology before the next command, which finds the promoted replica.

A promoted replica may lack the scripts (redis-py loads them on the masters it knows, and
its map may be stale): a ``NOSCRIPT`` reply (nothing ran) is answered by sending the script's
text with ``EVAL`` to the same slot, which also caches it on that node.

Two redis-py habits would fail calls that did nothing wrong, so the client here avoids them:
a command issued before the topology is known goes to a random node (and is redirected), and
every fifth redirection closes every connection, in-flight ones included. The topology is
read before the first command (and again after an outage), and a redirection only patches
the slot map.

A failed node's connections are all closed at once, in-flight ones too; a command caught
mid-send or mid-read then fails inside redis-py with an ``AttributeError`` on the closed
stream. That is not mapped here: the store's one outage mapping (``redis._outage``) turns it
into ``StateUnavailable`` for one Redis and a cluster alike (the command may have run, so it
is not retried).

What a failover keeps (replication is asynchronous; no ``WAIT``, which would add a round trip
per phase and still not make a crash lossless): a manual ``CLUSTER FAILOVER`` is coordinated
(the master pauses writes until its replica has them all), so nothing acknowledged is lost.
A crashed master is replaced after ``cluster-node-timeout`` plus an election (about 3 s with
1 s); calls on its slot fail closed meanwhile, and writes it acknowledged but had not yet
replicated are gone. What the promoted replica holds is a prefix of what happened, so no
phantom hold and no cap exceeded there, but a lost hold or settle lets that much more spend
through later (``tests/state/test_cluster_failover.py`` measures it).

redis-py's cluster client raises at once when a node's connections are all busy; a gate
(one semaphore per client, at most ``max_connections`` commands in flight) makes a burst wait
for a free connection as the one-Redis ``BlockingConnectionPool`` does, for up to the timeout.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import (
    ClusterDownError,
    ConnectionError,
    MaxConnectionsError,
    NoScriptError,
    RedisClusterException,
    SlotNotCoveredError,
)

from bastion.errors import ConfigError

__all__ = [
    "CLUSTER_SCHEMES",
    "ClusterUnreachable",
    "ClusterUrl",
    "open_cluster",
    "parse_cluster_url",
]

CLUSTER_SCHEMES: Final = ("redis+cluster", "rediss+cluster")

# CLUSTERDOWN / uncovered slot: redis-py sleeps 0.25 s and re-reads the topology per retry
_CLUSTER_DOWN_RETRIES: Final = 3
# connections per node beyond the gate, for the few pipelines that do not pass through it
_PIPELINE_HEADROOM: Final = 8


@dataclass(frozen=True, slots=True)
class ClusterUrl:
    """Where the cluster is: startup nodes (any reachable one reveals the rest) and login."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None
    tls: bool


def _node(text: str, url: str) -> tuple[str, int]:
    host, port = text, "6379"
    if text.startswith("["):  # [ipv6]:port
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ConfigError(f"counter state URL {url!r}: bad node {text!r}")
            port = rest[1:]
    elif ":" in text:
        host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"counter state URL {url!r}: bad node {text!r}, expected host:port (port 1-65535)"
        )
    return host, int(port)


def parse_cluster_url(url: str) -> ClusterUrl:
    """``redis+cluster://[user[:password]@]host:port[,host:port...][/0]`` (rediss+ for TLS)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in CLUSTER_SCHEMES:
        raise ConfigError(f"counter state URL {url!r}: expected redis+cluster://host:port,...")
    netloc, _, tail = rest.partition("/")
    netloc, _, query = netloc.partition("?")
    path, _, query2 = tail.partition("?")
    if query or query2:
        raise ConfigError(f"counter state URL {url!r}: redis+cluster:// takes no ?options")
    if path not in ("", "0"):
        raise ConfigError(f"counter state URL {url!r}: a Redis Cluster has only database 0")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, pw = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(pw) if colon else None
    nodes = tuple(_node(h.strip(), url) for h in hosts.split(",") if h.strip())
    if not nodes:
        raise ConfigError(f"counter state URL {url!r} names no node: use host:port[,host:port]")
    return ClusterUrl(nodes, username, password, scheme.lower() == "rediss+cluster")


class ClusterUnreachable(ConnectionError):
    """No node answers, or the slot has no master yet: the store maps it to StateUnavailable."""


class _GatedCluster(RedisCluster):
    """Retries only what surely did not run; waits for a connection instead of failing."""

    ERRORS_ALLOW_RETRY = (ClusterDownError, SlotNotCoveredError)  # type: ignore[assignment]

    def __init__(self, *, gate: int, gate_timeout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._gate = asyncio.Semaphore(gate)
        self._gate_timeout = gate_timeout
        self._scripts: dict[str, Any] = {}  # sha -> text, for a node that lacks a script

    def register_script(self, script: Any) -> AsyncScript:  # type: ignore[override]
        registered = AsyncScript(self, script)
        self._scripts[registered.sha] = script
        return registered

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            async with asyncio.timeout(self._gate_timeout):
                await self._gate.acquire()
        except TimeoutError:
            raise MaxConnectionsError("every connection to the cluster is busy") from None
        try:
            if self._initialize:  # redis-py routes a command planned before the topology
                await self.initialize()  # is known to a random node: know it first
            try:
                return await super().execute_command(*args, **kwargs)
            except NoScriptError:  # nothing ran: send the text (the node then caches it)
                body = self._scripts.get(str(args[1])) if args[0] == "EVALSHA" else None
                if body is None:
                    raise
                return await super().execute_command("EVAL", body, *args[2:], **kwargs)
        except (ClusterDownError, SlotNotCoveredError) as exc:  # still down after the retries
            raise ClusterUnreachable(f"the Redis Cluster cannot serve: {exc}") from exc
        finally:
            self._gate.release()

    async def initialize(self, *args: Any, **kwargs: Any) -> RedisCluster:
        """Reading the topology fails while no node answers or during a failover: an outage."""
        try:
            return await super().initialize(*args, **kwargs)
        except RedisClusterException as exc:
            raise ClusterUnreachable(f"the Redis Cluster cannot be reached: {exc}") from exc


def open_cluster(url: str, *, max_connections: int, timeout_seconds: float) -> RedisCluster:
    """A cluster client; it connects on first command (and finds every node then)."""
    where = parse_cluster_url(url)
    return _GatedCluster(
        gate=max_connections,
        gate_timeout=timeout_seconds,
        startup_nodes=[ClusterNode(host, port) for host, port in where.nodes],
        username=where.username,
        password=where.password,
        ssl=where.tls,
        max_connections=max_connections + _PIPELINE_HEADROOM,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        retry=Retry(NoBackoff(), _CLUSTER_DOWN_RETRIES),
        # on MOVED patch the slot map; never drop every connection (in-flight ones included)
        reinitialize_steps=0,
    )

"""A real Redis Cluster for tests: 3 masters + 3 replicas of Debian's redis-server on loopback.

Each node is its own ``redis-server`` process on a free port (its cluster bus port, +10000,
free too), without persistence, in a private directory; ``redis-cli --cluster create`` joins
them. ``cluster-node-timeout`` is 1 s so a killed master is replaced in a few seconds.
Processes are stopped by PID, never by name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis
from redis.crc import key_slot

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
NODE_TIMEOUT_MS = 1000


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ports(n: int) -> list[int]:
    """``n`` free ports whose cluster bus ports (+10000) are free as well."""
    found: list[int] = []
    while len(found) < n:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port < 55000 and port not in found and _free(port + 10000):
            found.append(port)
    return found


def _wait(what: str, check: object, timeout: float) -> None:
    end = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < end:
        try:
            if check():  # type: ignore[operator]
                return
        except (redis.RedisError, OSError) as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"redis cluster: {what} not within {timeout} s (last error: {last})")


@dataclass
class RedisClusterProcs:
    """Six redis-server processes forming one cluster; ``url`` is the state URL for Bastion."""

    root: Path
    ports: list[int]
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports[:3])

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5, socket_connect_timeout=2)

    def ping(self, port: int) -> bool:
        with self.node(port) as r:
            return bool(r.ping())

    def alive(self) -> list[int]:
        return [p for p, proc in self.procs.items() if proc.poll() is None]

    def cluster_info(self, port: int) -> dict[str, str]:
        with self.node(port) as r:
            raw = r.execute_command("CLUSTER", "INFO")
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        return dict(line.strip().split(":", 1) for line in text.splitlines() if ":" in line)

    def role(self, port: int) -> str:
        with self.node(port) as r:
            return str(r.execute_command("ROLE")[0].decode())

    def master_of_slot(self, slot: int) -> int:
        """The port of the master serving ``slot``, as the live nodes agree it."""
        with self.node(self.alive()[0]) as r:
            for start, end, master, *_ in r.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return int(master[1])
        raise LookupError(f"slot {slot} is not served")

    def master_of(self, key: str) -> int:
        return self.master_of_slot(key_slot(key.encode()))

    def replica_of(self, master_port: int) -> int:
        with self.node(master_port) as r:
            role = r.execute_command("ROLE")
        replicas = [int(rep[1]) for rep in role[2]]
        if not replicas:
            raise LookupError(f"master {master_port} has no replica")
        return replicas[0]

    def healthy(self) -> bool:
        """Every live node sees the cluster OK with every slot served; replicas are in sync."""
        for port in self.alive():
            info = self.cluster_info(port)
            if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != "16384":
                return False
            with self.node(port) as r:
                repl = r.info("replication")
            if repl.get("role") == "slave" and repl.get("master_link_status") != "up":
                return False
        return True

    def wait_healthy(self, timeout: float = 30.0) -> None:
        _wait("cluster_state:ok with synced replicas", self.healthy, timeout)

    def failover(self, replica_port: int, timeout: float = 20.0) -> float:
        """``CLUSTER FAILOVER`` on a replica (coordinated: no write lost); seconds it took."""
        t0 = time.monotonic()
        with self.node(replica_port) as r:
            assert r.execute_command("CLUSTER", "FAILOVER") in (b"OK", "OK", True)
        _wait("manual failover", lambda: self.role(replica_port) == "master", timeout)
        return time.monotonic() - t0

    def kill(self, port: int) -> None:
        """SIGKILL one node, as a crash would (no goodbye, no last replication)."""
        proc = self.procs[port]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def _start_node(root: Path, port: int) -> subprocess.Popen[bytes]:
    work = root / str(port)
    work.mkdir()
    options = {
        "port": str(port),
        "bind": "127.0.0.1",
        "cluster-enabled": "yes",
        "cluster-config-file": str(work / "nodes.conf"),
        "cluster-node-timeout": str(NODE_TIMEOUT_MS),
        "save": "",
        "appendonly": "no",
        "dir": str(work),
        "repl-diskless-sync-delay": "0",  # replicas sync at once (the default waits 5 s)
    }
    with (work / "redis.log").open("wb") as log:
        return subprocess.Popen(
            [REDIS_SERVER, *(arg for k, v in options.items() for arg in (f"--{k}", v))],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=work,
        )


def start_cluster(root: Path) -> RedisClusterProcs:
    """Start 6 nodes, join them as 3 masters with one replica each, wait until healthy."""
    root.mkdir(parents=True, exist_ok=True)
    cluster = RedisClusterProcs(root, _ports(6))
    try:
        for port in cluster.ports:
            cluster.procs[port] = _start_node(root, port)
        for port in cluster.ports:
            _wait(f"node {port} answering", lambda p=port: cluster.ping(p), 15)
        created = subprocess.run(
            [REDIS_CLI, "--cluster", "create"]
            + [f"127.0.0.1:{p}" for p in cluster.ports]
            + ["--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{created.stdout}")
        cluster.wait_healthy()
    except BaseException:
        cluster.stop()
        raise
    return cluster


@contextlib.contextmanager
def running_cluster(root: Path) -> Iterator[RedisClusterProcs]:
    cluster = start_cluster(root)
    try:
        yield cluster
    finally:
        cluster.stop()


@contextlib.contextmanager
def running_sim() -> Iterator[str]:
    """A ``bastion sim`` upstream process (20 ms to first token); its URL."""
    from tests.conftest import BIN, free_port, stop, wait_port

    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "bastion"), "sim", "--port", str(port), "--ttft-ms", "20"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)

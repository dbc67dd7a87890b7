"""Helpers for the cost-track tests: private Redis, simulator process, in-process gateways."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import redis
from tests.asgi import asgi_request
from tests.conftest import BIN, free_port, stop, wait_port

from bastion.call import Principal
from bastion.config import Config, load_config
from bastion.gateway import Gateway
from bastion.state import Cap, CounterStore, ReserveResult, Usage
from bastion.state.plan import AdmitOp, AdmitResult, FinishOp, Reserve, Settle

SHARED_REDIS = "redis://127.0.0.1:6379/0"
PRINCIPAL = Principal(key_id="k-cost-test", name="cost-test")
AV = {"anthropic-version": "2023-06-01"}


def unique_prefix() -> str:
    return "bastiontest-" + uuid.uuid4().hex[:12]


def delete_prefix(prefix: str, url: str = SHARED_REDIS) -> None:
    """Remove only this test's keys from the shared Redis (never FLUSHDB)."""
    assert prefix.startswith("bastiontest-")
    r = redis.Redis.from_url(url)
    try:
        for k in r.scan_iter(match=f"{prefix}:*", count=1000):
            r.delete(k)
    finally:
        r.close()


class PrivateRedis:
    """A throwaway redis-server on a free port, killed and restarted by its own PID."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port, self.proc, timeout=10)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        # the port must really be closed before the test relies on the outage
        end = time.monotonic() + 5
        while time.monotonic() < end:
            try:
                wait_port(self.port, timeout=0.05)
            except TimeoutError:
                return
        raise AssertionError("private redis still listening after kill")


@contextmanager
def private_redis() -> Iterator[PrivateRedis]:
    r = PrivateRedis()
    r.start()
    try:
        yield r
    finally:
        r.kill()


@contextmanager
def sim_process(*args: str) -> Iterator[str]:
    """A separate `bastion sim` process: its own request log is the upstream ground truth."""
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "bastion"), "sim", "--port", str(port), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


async def upstream_calls(sim_url: str) -> int:
    """How many LLM requests the simulator process has received."""
    async with aiohttp.ClientSession() as s, s.get(sim_url + "/_sim/requests") as r:
        recs = await r.json()
    return sum(1 for rec in recs if rec["method"] == "POST")


async def post(
    url: str, path: str, key: str, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    """One HTTP call to a gateway process; returns (status, headers, parsed JSON body)."""
    hs = {"x-api-key": key, "content-type": "application/json", **AV, **(headers or {})}
    timeout = aiohttp.ClientTimeout(total=20)
    async with (
        aiohttp.ClientSession(timeout=timeout) as s,
        s.post(url + path, data=json.dumps(body), headers=hs) as r,
    ):
        raw = await r.read()
        return r.status, {k.lower(): v for k, v in r.headers.items()}, json.loads(raw)


async def open_stream(
    url: str, key: str, body: Mapping[str, Any]
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """Start an Anthropic stream over a raw socket and read until its first event arrived."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    data = json.dumps(body).encode()
    writer.write(
        b"POST /v1/messages HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n"
        + f"x-api-key: {key}\r\nanthropic-version: 2023-06-01\r\n".encode()
        + f"content-length: {len(data)}\r\n\r\n".encode()
        + data
    )
    await writer.drain()
    got = b""
    async with asyncio.timeout(10):
        while b"event: content_block_delta" not in got:
            chunk = await reader.read(4096)
            assert chunk, f"stream closed before any output: {got!r}"
            got += chunk
    assert got.startswith(b"HTTP/1.1 200"), got[:200]
    return reader, writer, got


# -- in-process gateways --------------------------------------------------------------------


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def inproc_config(tmp: Path, **sections: Any) -> Config:
    """A config for an in-process gateway: in-process simulator, memory counters, SQLite records."""
    base: dict[str, Any] = {
        "store": {"url": f"sqlite:///{tmp / 'bastion.db'}"},
        "state": {"url": "memory://"},
        "observability": {"spill_path": str(tmp / "spill.jsonl")},
        "providers": {"sim": {"kind": "sim"}},
        "models": {
            "claude-sonnet-5": {"deployments": [{"provider": "sim", "model": "claude-sonnet-5"}]}
        },
    }
    models = sections.pop("models", None)
    providers = sections.pop("providers", None)
    data = _merge(base, sections)
    if models is not None:
        data["models"] = models
    if providers is not None:
        data["providers"] = providers
    return load_config(None, env={}, overrides=data)


class RecordingState:
    """Wraps a counter store and logs every budget operation, so tests see reserve/settle/release."""

    def __init__(self, inner: CounterStore) -> None:
        self.inner = inner
        self.log: list[tuple[str, str, float | None]] = []

    async def reserve(
        self, reservation_id: str, caps: Sequence[Cap], amount: float, lease_seconds: float
    ) -> ReserveResult:
        res = await self.inner.reserve(reservation_id, caps, amount, lease_seconds)
        self.log.append(("reserve" if res.ok else "refused", reservation_id, amount))
        return res

    async def settle(self, reservation_id: str, actual: float) -> bool:
        self.log.append(("settle", reservation_id, actual))
        return await self.inner.settle(reservation_id, actual)

    async def release(self, reservation_id: str) -> bool:
        self.log.append(("release", reservation_id, None))
        return await self.inner.release(reservation_id)

    async def usage(self, cap_key: str) -> Usage:
        return await self.inner.usage(cap_key)

    async def admit(self, ops: Sequence[AdmitOp]) -> AdmitResult:
        """A call's reservation batch (state_batch.py): its reserve is logged like one alone."""
        res = await self.inner.admit(ops)
        for i, op in enumerate(ops):
            if isinstance(op, Reserve) and i < len(res.results):
                ok = res.ok
                self.log.append(("reserve" if ok else "refused", op.reservation_id, op.amount))
        return res

    async def finish(self, ops: Sequence[FinishOp]) -> tuple[Any, ...]:
        """A call's settle batch: each settle or release is logged like one alone."""
        for op in ops:
            if isinstance(op, Settle):
                kind = "release" if op.actual is None else "settle"
                self.log.append((kind, op.reservation_id, op.actual))
        return await self.inner.finish(ops)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def asgi_call(
    gw: Gateway,
    key: str,
    path: str,
    body: Mapping[str, Any],
    headers: Mapping[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    """One call through the real ASGI app of an in-process gateway (errors rendered as served)."""
    from bastion.server.app import create_app

    hs = {"x-api-key": key, "content-type": "application/json", **AV, **(headers or {})}
    status, out_headers, raw = await asgi_request(
        create_app(gw), "POST", path, json.dumps(body).encode(), hs
    )
    return status, out_headers, json.loads(raw)


async def make_key(gw: Gateway, name: str = "cost-test") -> str:
    """Mint a real virtual key in the gateway's record store (the gateway must be started)."""
    from bastion.auth import new_key

    secret, record = new_key(name, roles=("admin", "end_users"))
    await gw.store.create_key(record)
    return secret

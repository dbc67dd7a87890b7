"""``/metrics`` under ``bastion serve --workers N``: every worker's numbers, each labelled.

A scrape of the shared port reaches one worker, chosen by the kernel. Answering with that
worker's registry alone would show 1/N of the calls as if they were all of them, and a different
1/N at each scrape. So the worker that takes the scrape asks each sibling for its own metrics,
over a private Unix socket in the supervisor's runtime directory (mode 0700; the same app, the
same admin key, which is forwarded), and answers with every worker's series, each with a
``worker`` label: sum by everything but ``worker`` for the whole gateway
(``sum without (worker) (rate(bastion_requests_total[1m]))``). Gauges read from the shared
state (budget left, breakers, kill switch) are the same in every worker's series.
``bastion_worker_up{worker}`` says which workers answered; a worker that did not is 0 there,
never silently missing. The answer is always the Prometheus text format.

Per-process metrics (prometheus_client's multiprocess mode) were the alternative: it sums
counters in mmap files, but charges a file write and a lock to every increment on the hot path,
and cannot merge the collectors read at scrape time (the recorder's queue and spill counts).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import aiohttp
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

log = logging.getLogger("bastion.server")

WORKER_ONLY = "x-bastion-metrics-worker"  # a sibling's request: this worker's metrics alone
_FORWARD = ("authorization", "x-api-key")
_TIMEOUT_S = 3.0


def socket_path(directory: str | Path, wid: int) -> Path:
    """Where worker ``wid`` serves its private socket."""
    return Path(directory) / f"worker-{wid}.sock"


class _Merged(Collector):
    def __init__(self, families: Sequence[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


def merge(by_worker: Mapping[int, str | None]) -> bytes:
    """Text expositions by worker id (None: it did not answer) as one, with a ``worker`` label."""
    families: dict[str, Metric] = {}
    up = GaugeMetricFamily(
        "bastion_worker_up", "1 if the worker answered this scrape, 0 if not.", labels=["worker"]
    )
    for wid in sorted(by_worker):
        text = by_worker[wid]
        up.add_metric([str(wid)], 0.0 if text is None else 1.0)
        if text is None:
            continue
        for fam in text_string_to_metric_families(text):
            into = families.get(fam.name)
            if into is None:
                into = families[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
            for s in fam.samples:
                into.add_sample(
                    s.name, {**s.labels, "worker": str(wid)}, s.value, s.timestamp, s.exemplar
                )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged([up, *families.values()]))
    return generate_latest(registry)


class WorkerPeers:
    """This worker's id and how to reach its siblings' metrics."""

    def __init__(self, wid: int, count: int, directory: str | Path) -> None:
        self.wid = wid
        self.count = count
        self.directory = Path(directory)

    @property
    def own_socket(self) -> Path:
        return socket_path(self.directory, self.wid)

    async def gather(self, own: bytes, headers: Mapping[str, str]) -> tuple[bytes, str]:
        """Every worker's metrics (``own`` is this one's text exposition), as one answer."""
        forward = {h: headers[h] for h in _FORWARD if h in headers}
        forward[WORKER_ONLY] = "1"
        forward["accept"] = "text/plain"
        others = [w for w in range(self.count) if w != self.wid]
        texts = await asyncio.gather(*(self._fetch(w, forward) for w in others))
        by_worker: dict[int, str | None] = dict(zip(others, texts, strict=True))
        by_worker[self.wid] = own.decode()
        return merge(by_worker), CONTENT_TYPE_LATEST

    async def _fetch(self, wid: int, headers: Mapping[str, str]) -> str | None:
        path = socket_path(self.directory, wid)
        try:
            async with (
                asyncio.timeout(_TIMEOUT_S),
                aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(path))) as session,
                session.get("http://worker/metrics", headers=dict(headers)) as resp,
            ):
                body = await resp.text()
                if resp.status == 200:
                    return body
                log.warning("metrics: worker %d answered %d", wid, resp.status)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.warning("metrics: worker %d did not answer: %s", wid, type(exc).__name__)
        return None


def bind_private(peers: WorkerPeers) -> socket.socket:
    """The worker's private Unix socket (a stale file from a dead predecessor is replaced)."""
    path = peers.own_socket
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(64)
    return sock

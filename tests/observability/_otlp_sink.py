"""A local OTLP/HTTP trace receiver: ``POST /v1/traces`` decoded with ``opentelemetry.proto``.

It runs aiohttp on 127.0.0.1 in a thread of its own (its own event loop), so module-scoped
fixtures and synchronous SDK clients can share it, and keeps every span it was sent with
its resource and the request's headers, as a backend such as Langfuse or Phoenix sees them.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

SERVER = 2  # opentelemetry.proto.trace.v1.Span.SPAN_KIND_SERVER
CLIENT = 3  # opentelemetry.proto.trace.v1.Span.SPAN_KIND_CLIENT


def any_value(v: AnyValue) -> Any:
    """An OTLP attribute value as the Python value the exporter was given."""
    which = v.WhichOneof("value")
    if which == "array_value":
        return tuple(any_value(x) for x in v.array_value.values)
    if which == "kvlist_value":
        return attributes(v.kvlist_value.values)
    return None if which is None else getattr(v, which)


def attributes(kvs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    kv: KeyValue
    for kv in kvs:
        out[kv.key] = any_value(kv.value)
    return out


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    status_code: int
    headers: dict[str, str] = field(default_factory=dict)  # of the export request


class OtlpSink:
    """Start, point an exporter at ``endpoint``, read ``spans()``; ``stop`` when done."""

    def __init__(self) -> None:
        self._spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.requests = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    async def _traces(self, request: web.Request) -> web.Response:
        if request.content_type != "application/x-protobuf":
            return web.Response(status=415, text="protobuf only")
        msg = ExportTraceServiceRequest()
        msg.ParseFromString(await request.read())
        headers = {k.lower(): v for k, v in request.headers.items()}
        got = [
            ReceivedSpan(
                name=s.name,
                kind=s.kind,
                trace_id=s.trace_id.hex(),
                span_id=s.span_id.hex(),
                parent_span_id=s.parent_span_id.hex(),
                attributes=attributes(s.attributes),
                resource=attributes(rs.resource.attributes),
                status_code=s.status.code,
                headers=headers,
            )
            for rs in msg.resource_spans
            for ss in rs.scope_spans
            for s in ss.spans
        ]
        with self._lock:
            self._spans.extend(got)
            self.requests += 1
        body = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=body, content_type="application/x-protobuf")

    async def _serve(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/traces", self._traces)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = int(sock.getsockname()[1])
        await web.SockSite(runner, sock).start()
        self._stop = asyncio.Event()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def start(self) -> None:
        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._serve())
            self._loop.close()

        self._thread = threading.Thread(target=run, name="otlp-sink", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise TimeoutError("the OTLP sink did not start")

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def wait_for(
        self, ready: Callable[[list[ReceivedSpan]], bool], timeout: float = 20.0
    ) -> list[ReceivedSpan]:
        """The spans once ``ready`` says they are all there (bounded in time)."""
        end = time.monotonic() + timeout
        while True:
            spans = self.spans()
            if ready(spans):
                return spans
            if time.monotonic() > end:
                raise TimeoutError(f"spans not received in {timeout}s; got {len(spans)}")
            time.sleep(0.05)

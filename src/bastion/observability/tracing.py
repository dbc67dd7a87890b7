"""OpenTelemetry spans for every call, with the call's own W3C ids, on a private TracerProvider.

The gateway mints ``call.span_id`` before the call goes upstream and sends it in the
``traceparent`` header, so the exported span must carry exactly that id (and ``call.trace_id``),
or a provider-side trace would point at a span nobody exported. The SDK has no API to start a
span with a given id, so the provider gets an id generator that hands out a pinned id for the
one ``start_span`` made under a lock; every other span (the attempts) gets random ids, drawn
under the same lock, since spans with content are built on worker threads.

Spans are built after the call from its recorded timestamps (monotonic offsets added to the
wall-clock start), so tracing costs nothing on the hot path. Attribute names follow the OTel
GenAI semantic conventions (inference span, semconv 1.41): every call span says why the answer
ended (``gen_ai.response.finish_reasons``, ``error`` for a failed or cut call) and, where a
provider answered, its id (``gen_ai.response.id``); an embeddings call is an ``embeddings``
span with the attributes the conventions give that operation. The user (``user.id``) is recorded only
when the operator allows it, and the prompt and answer only on request (``capture_content``,
see ``genai_content``); both pass through the PII scrubber first, since a trace backend is
often someone else's service.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace import TraceFlags as OTelTraceFlags

from ..call import Call, Usage
from ..store import CallRecord, RecordStore
from .genai_content import ContentCapture, finish_reason
from .metrics import attempt_summary

__all__ = ["Tracing", "TracingGuard", "call_attributes", "format_call", "print_trace"]

log = logging.getLogger("bastion.tracing")

# Endpoint kinds (config ``providers.*.kind``) to ``gen_ai.provider.name`` well-known values;
# other kinds report the endpoint's own name.
GENAI_PROVIDERS: Final[Mapping[str, str]] = {
    "anthropic": "anthropic",
    "openai": "openai",
    "azure-openai": "azure.ai.openai",
    "bedrock": "aws.bedrock",
}
_MAX_FLAG_CHARS: Final = 256
# calls whose spans wait for a content worker; past this, a call's spans go without content
_MAX_PENDING: Final = 1000
Scrub = Callable[[str], str]


class _PinnedIds(IdGenerator):
    """Random ids, except the trace and span id pinned for the next span (under the caller's lock)."""

    def __init__(self) -> None:
        self._trace: int | None = None
        self._span: int | None = None
        self._rand = random.SystemRandom()

    def pin(self, trace_id: int | None, span_id: int | None) -> None:
        self._trace, self._span = trace_id, span_id

    def generate_trace_id(self) -> int:
        if self._trace is not None:
            t, self._trace = self._trace, None
            return t
        return self._rand.getrandbits(128) or 1

    def generate_span_id(self) -> int:
        if self._span is not None:
            s, self._span = self._span, None
            return s
        return self._rand.getrandbits(64) or 1

    def is_trace_id_random(self) -> bool:
        return True


def _hex_id(value: str | None, bits: int) -> int | None:
    """A W3C hex id as an int, or None when absent, malformed or all zeros."""
    if not value:
        return None
    try:
        n = int(value, 16)
    except ValueError:
        return None
    return n if 0 < n < (1 << bits) else None


def _flag_value(value: Any) -> str | bool | int | float | None:
    """A guard verdict as a span attribute: scalars as they are, the rest as bounded JSON."""
    if isinstance(value, bool | int | float):
        return value
    if value is None:
        return None
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    return text[:_MAX_FLAG_CHARS]


def _max_tokens(body: Mapping[str, Any]) -> int | None:
    v = body.get("max_tokens") or body.get("max_completion_tokens")
    return v if isinstance(v, int) and not isinstance(v, bool) else None


_SAMPLING: Final = (
    ("temperature", "gen_ai.request.temperature"),
    ("top_p", "gen_ai.request.top_p"),
    ("top_k", "gen_ai.request.top_k"),
    ("frequency_penalty", "gen_ai.request.frequency_penalty"),
    ("presence_penalty", "gen_ai.request.presence_penalty"),
)


def _chat_request(body: Mapping[str, Any]) -> dict[str, Any]:
    """The request settings the conventions name, as the client sent them (both formats)."""
    out: dict[str, Any] = {}
    if (mt := _max_tokens(body)) is not None:
        out["gen_ai.request.max_tokens"] = mt
    for key, name in _SAMPLING:
        v = body.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool):
            out[name] = float(v)
    if isinstance(seed := body.get("seed"), int) and not isinstance(seed, bool):
        out["gen_ai.request.seed"] = seed
    stop = body.get("stop_sequences", body.get("stop"))
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    if stops and all(isinstance(x, str) for x in stops):
        out["gen_ai.request.stop_sequences"] = tuple(stops)
    if isinstance(n := body.get("n"), int) and not isinstance(n, bool) and n != 1:
        out["gen_ai.request.choice.count"] = n
    fmt = body.get("response_format")
    if isinstance(fmt, Mapping) and fmt.get("type") in ("json_object", "json_schema", "text"):
        out["gen_ai.output.type"] = "text" if fmt.get("type") == "text" else "json"
    return out


def operation(call: Call) -> str:
    """``gen_ai.operation.name``: embeddings calls are their own operation, the rest is chat."""
    return "embeddings" if call.flags.get("endpoint") == "embeddings" else "chat"


def failed(call: Call, error: BaseException | None) -> bool:
    """Whether the call ended without a whole answer (refused, failed, cut or abandoned)."""
    f = call.flags
    return (
        error is not None
        or call.status >= 400
        or call.error_type is not None
        or "stream_error" in f
        or "client_disconnected" in f
    )


def _usage(u: Usage) -> dict[str, int]:
    # the conventions count cached tokens inside input_tokens; Bastion keeps them apart
    return {
        "gen_ai.usage.input_tokens": u.input_tokens + u.cache_read_tokens + u.cache_write_tokens,
        "gen_ai.usage.output_tokens": u.output_tokens,
        "gen_ai.usage.cache_read.input_tokens": u.cache_read_tokens,
        "gen_ai.usage.cache_creation.input_tokens": u.cache_write_tokens,
    }


def call_attributes(
    call: Call,
    provider_name: str | None,
    *,
    include_user_id: bool = False,
    scrub: Scrub | None = None,
    error: BaseException | None = None,
) -> dict[str, Any]:
    """The call span's attributes: GenAI conventions plus ``bastion.*``; no prompt or answer text."""
    op = operation(call)
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": op,
        "gen_ai.request.model": call.requested_model,
        "bastion.request_id": call.request_id,
        "bastion.api_format": call.client_format.value,
        "bastion.feature": call.feature or "default",
        "bastion.key_id": call.principal.key_id,
        "bastion.cost_usd": call.cost_usd,
        "bastion.attempts": len(call.attempts),
    }
    if provider_name:
        attrs["gen_ai.provider.name"] = provider_name
    if call.served_model:
        attrs["gen_ai.response.model"] = call.served_model
    if op == "chat":
        attrs |= _usage(call.usage) | _chat_request(call.body)
        reason = finish_reason(call.finish_reason, failed=failed(call, error))
        attrs["gen_ai.response.finish_reasons"] = (reason,)
    else:  # embeddings: what the conventions name for them
        attrs["gen_ai.usage.input_tokens"] = call.usage.input_tokens
        if isinstance(enc := call.body.get("encoding_format"), str):
            attrs["gen_ai.request.encoding_formats"] = (enc,)
        if isinstance(dims := call.body.get("dimensions"), int) and not isinstance(dims, bool):
            attrs["gen_ai.embeddings.dimension.count"] = dims
    if call.stream:
        attrs["gen_ai.request.stream"] = True
        if call.ttft_ms is not None:
            attrs["gen_ai.response.time_to_first_chunk"] = call.ttft_ms / 1000.0
    if call.finish_reason:
        attrs["bastion.provider_finish_reason"] = call.finish_reason
    if call.response_id:
        attrs["gen_ai.response.id"] = call.response_id
    if call.conversation_id:
        attrs["gen_ai.conversation.id"] = call.conversation_id
    prompt_name = call.flags.get("prompt_name")
    if isinstance(prompt_name, str) and prompt_name:
        attrs["gen_ai.prompt.name"] = prompt_name
        if call.prompt_version:
            attrs["gen_ai.prompt.version"] = call.prompt_version
    if call.prompt_version:
        attrs["bastion.prompt_version"] = call.prompt_version
    if call.deployment:
        attrs["bastion.deployment"] = call.deployment
    if call.status:
        attrs["http.response.status_code"] = call.status
    if call.ttft_ms is not None:
        attrs["bastion.ttft_ms"] = call.ttft_ms
    if call.latency_ms is not None:
        attrs["bastion.latency_ms"] = call.latency_ms
    retried, failover = attempt_summary(call)
    attrs["bastion.retried"] = retried
    attrs["bastion.failover"] = failover
    if include_user_id and call.user_id:
        attrs["user.id"] = scrub(call.user_id) if scrub is not None else call.user_id
    for key, value in call.flags.items():
        v = _flag_value(value)
        if v is not None:
            attrs[f"bastion.flag.{key}"] = v
    for f in call.findings:  # per detector (its last finding): action, score and version
        attrs[f"bastion.finding.{f.detector}"] = f.action
        if f.score is not None:
            attrs[f"bastion.finding.{f.detector}.score"] = f.score
        attrs[f"bastion.finding.{f.detector}.version"] = f.version
    return attrs


class Tracing:
    """A private TracerProvider and exporter; nothing here touches the global OTel state."""

    def __init__(
        self,
        *,
        endpoint: str | None = None,
        headers: Mapping[str, str] | None = None,
        exporter: SpanExporter | None = None,
        service_name: str = "bastion",
        sample_ratio: float = 1.0,
        include_user_id: bool = False,
        provider_kinds: Mapping[str, str] | None = None,
        batch: bool | None = None,
        capture_content: bool = False,
        content_max_chars: int = 16_000,
        scrub: Scrub | None = None,
    ) -> None:
        """``endpoint`` is the OTLP/HTTP traces URL; ``exporter`` overrides it (tests pass an
        in-memory one). With neither, tracing is off and ``enabled`` is False.

        ``scrub`` (the gateway's PII scrubber) cleans the user id and, with ``capture_content``,
        the prompt and answer; content is never captured without it."""
        if not 0.0 <= sample_ratio <= 1.0:
            raise ValueError("sample_ratio must be within [0, 1]")
        if capture_content and scrub is None:
            raise ValueError("capture_content needs a scrub function: nothing raw is written")
        if exporter is None and endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=endpoint, headers=dict(headers or {}))
        self.enabled = exporter is not None
        self.include_user_id = include_user_id
        self._scrub = scrub
        self.content = (
            ContentCapture(scrub, content_max_chars)
            if capture_content and scrub is not None
            else None
        )
        # spans with content are built on these workers, never on the event loop, and never
        # cancelled with the request whose stream ended them
        self._workers = (
            ThreadPoolExecutor(max_workers=2, thread_name_prefix="bastion-trace")
            if self.content is not None and self.enabled
            else None
        )
        self._pending = 0
        self._pending_lock = threading.Condition()
        self._kinds = dict(provider_kinds or {})
        self._ids = _PinnedIds()
        self._lock = threading.Lock()
        self.provider = TracerProvider(
            sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
            resource=Resource.create({"service.name": service_name}),
            id_generator=self._ids,
            shutdown_on_exit=False,
        )
        if exporter is not None:
            use_batch = bool(endpoint) if batch is None else batch
            self.provider.add_span_processor(
                BatchSpanProcessor(exporter) if use_batch else SimpleSpanProcessor(exporter)
            )
        self._tracer = self.provider.get_tracer("bastion")

    def provider_name(self, endpoint: str | None) -> str | None:
        """``gen_ai.provider.name`` for a provider endpoint name (``call.provider``)."""
        if not endpoint:
            return None
        kind = self._kinds.get(endpoint, endpoint)
        return GENAI_PROVIDERS.get(kind, endpoint)

    def submit(self, call: Call, error: BaseException | None) -> None:
        """Record the call now, or on a content worker when its spans carry content (a backlog
        past ``_MAX_PENDING`` calls records the rest without content, marked so)."""
        if self._workers is None:
            self.record_call(call, error)
            return
        with self._pending_lock:
            busy = self._pending >= _MAX_PENDING
            if not busy:
                self._pending += 1
        if busy:
            self.record_call(call, error, content=False)
            return
        self._workers.submit(self.record_call, call, error).add_done_callback(self._done)

    def _done(self, job: Future[None]) -> None:
        with self._pending_lock:
            self._pending -= 1
            self._pending_lock.notify_all()
        if not job.cancelled() and (exc := job.exception()) is not None:
            log.error("tracing: could not export a call", exc_info=exc)

    def record_call(self, call: Call, error: BaseException | None, *, content: bool = True) -> None:
        """Export the call span (ids = the call's own) and one child span per upstream attempt."""
        if not self.enabled:
            return
        trace_id = _hex_id(call.trace_id, 128)
        span_id = _hex_id(call.span_id, 64)
        parent_id = _hex_id(getattr(call, "parent_span_id", None), 64)
        context = None
        if trace_id is not None and parent_id is not None:
            flags = _hex_id(getattr(call, "trace_flags", None), 8)
            parent = SpanContext(
                trace_id,
                parent_id,
                is_remote=True,
                trace_flags=OTelTraceFlags(flags if flags is not None else 1),
            )
            context = trace.set_span_in_context(NonRecordingSpan(parent))
        start_ns = int(call.wall_started * 1e9)
        end = call.ended if call.ended is not None else time.monotonic()
        end_ns = start_ns + int(max(0.0, end - call.started) * 1e9)
        provider = self.provider_name(call.provider)
        attrs = call_attributes(
            call, provider, include_user_id=self.include_user_id, scrub=self._scrub, error=error
        )
        op = attrs["gen_ai.operation.name"]
        if self.content is not None and op == "chat":
            if content:
                finishes = attrs["gen_ai.response.finish_reasons"]
                attrs |= self.content.attributes(call, finishes[0], failed=failed(call, error))
            else:
                attrs["bastion.content_skipped"] = True  # the content workers were behind
        # the call span starts on pinned ids: no other span (a child, another call on another
        # thread) may draw an id meanwhile, so the whole tree is built under the lock
        with self._lock:
            self._ids.pin(trace_id, span_id)
            try:
                span = self._tracer.start_span(
                    f"{op} {call.requested_model}",
                    context=context,
                    kind=SpanKind.SERVER,
                    attributes=attrs,
                    start_time=start_ns,
                )
            finally:
                self._ids.pin(None, None)
            status = call.status or (200 if error is None else 500)
            if error is not None or status >= 400 or call.flags.get("stream_error"):
                etype = call.error_type or (type(error).__name__ if error else None)
                span.set_attribute("error.type", etype or str(status))
                if status >= 500 or call.flags.get("stream_error"):
                    span.set_status(Status(StatusCode.ERROR, etype))
            parent_ctx = trace.set_span_in_context(span)
            for i in range(len(call.attempts)):
                self._attempt_span(call, i, parent_ctx, attrs, start_ns, end)
            span.end(end_time=end_ns)

    def _attempt_span(
        self, call: Call, i: int, parent: Any, attrs: Mapping[str, Any], start_ns: int, end: float
    ) -> None:
        """One upstream attempt as a client span under the call span (the caller holds the lock)."""
        a = call.attempts[i]
        last = i == len(call.attempts) - 1
        a_start = start_ns + int(max(0.0, a.started - call.started) * 1e9)
        a_end_mono = a.ended if a.ended else end
        if call.stream and last and a.error is None:
            a_end_mono = end  # a streamed answer lasts until its last chunk, not its headers
        a_end = start_ns + int(max(0.0, a_end_mono - call.started) * 1e9)
        a_attrs: dict[str, Any] = {
            "gen_ai.operation.name": attrs["gen_ai.operation.name"],
            "gen_ai.request.model": a.model,
            "bastion.deployment": a.deployment,
            "bastion.attempt": i + 1,
        }
        if (pname := self.provider_name(a.provider)) is not None:
            a_attrs["gen_ai.provider.name"] = pname
        if a.status is not None:
            a_attrs["http.response.status_code"] = a.status
        chat = attrs["gen_ai.operation.name"] == "chat"
        if a.usage is not None and chat:
            a_attrs |= _usage(a.usage)
        if "user.id" in attrs:
            a_attrs["user.id"] = attrs["user.id"]
        answered = max(
            (j for j, x in enumerate(call.attempts) if x.status == 200 and x.error is None),
            default=None,
        )
        if a.error is not None:
            a_attrs["error.type"] = a.error
            if chat:
                a_attrs["gen_ai.response.finish_reasons"] = ("error",)
        elif i == answered and chat:  # the attempt whose answer the client got
            a_attrs["gen_ai.response.finish_reasons"] = attrs["gen_ai.response.finish_reasons"]
            if call.response_id:
                a_attrs["gen_ai.response.id"] = call.response_id
        if a.error is None and last and call.served_model:
            a_attrs["gen_ai.response.model"] = call.served_model
        child = self._tracer.start_span(
            f"{attrs['gen_ai.operation.name']} {a.model}",
            context=parent,
            kind=SpanKind.CLIENT,
            attributes=a_attrs,
            start_time=a_start,
        )
        if a.error is not None:
            child.set_status(Status(StatusCode.ERROR, a.error))
        child.end(end_time=max(a_start, a_end))

    def force_flush(self, timeout_millis: int = 5000) -> bool:
        """Wait for the calls on content workers, then export everything queued."""
        with self._pending_lock:
            idle = self._pending_lock.wait_for(lambda: self._pending == 0, timeout_millis / 1000)
        return idle and self.provider.force_flush(timeout_millis)

    def shutdown(self) -> None:
        """Finish the calls waiting for a content worker, flush, and stop the exporter (blocking)."""
        if self._workers is not None:
            self._workers.shutdown(wait=True)
        self.provider.shutdown()

    async def aclose(self) -> None:
        """Shut down off the event loop: the final export is a blocking HTTP request."""
        await asyncio.to_thread(self.shutdown)


class TracingGuard:
    """Emits the call's spans once it has ended; a tracing fault never fails the call."""

    name = "tracing"
    after_send = True  # only reads the finished call: may run once the response is out

    def __init__(self, tracing: Tracing) -> None:
        self._tracing = tracing
        self.active = tracing.enabled

    async def after(self, call: Call, error: BaseException | None) -> None:
        try:
            self._tracing.submit(call, error)  # nothing awaited: a cancelled stream loses no span
        except Exception:
            log.exception("tracing: could not export call %s", call.request_id)


# -- `bastion trace TRACE_ID` ----------------------------------------------------------------


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f} ms"


def format_call(r: CallRecord) -> str:
    """One line per call: what an operator needs to reconstruct a complaint, no user content."""
    when = datetime.fromtimestamp(r.ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    model = r.requested_model
    if r.served_model and r.served_model != r.requested_model:
        model += f" -> {r.served_model}"
    where = f" via {r.deployment}" if r.deployment else ""
    status = str(r.status) + (f" {r.error_type}" if r.error_type else "")
    tokens = f"in={r.input_tokens} out={r.output_tokens}"
    if r.cache_read_tokens or r.cache_write_tokens:
        tokens += f" cache_read={r.cache_read_tokens} cache_write={r.cache_write_tokens}"
    how = [k for k in ("retried", "failover", "hedged", "degraded") if getattr(r, k)]
    attempts = f"attempts={r.attempts}" + (f" ({', '.join(how)})" if how else "")
    flags = ",".join(sorted(r.flags)) or "-"
    found = ",".join(sorted({f"{f.detector}:{f.action}" for f in r.findings})) or "-"
    return (
        f"{when}  {r.request_id}  {r.feature or 'default'}  {model}{where}  {status}  {tokens}  "
        f"${r.cost_usd:.6f}  latency={_ms(r.latency_ms)}  ttft={_ms(r.ttft_ms)}  {attempts}  "
        f"prompt={r.prompt_version or '-'}  flags={flags}  findings={found}"
    )


async def print_trace(store: RecordStore, trace_id: str) -> list[str]:
    """Every recorded call of one trace, oldest first, plus a summary line."""
    calls: Sequence[CallRecord] = await store.get_calls_by_trace(trace_id)
    if not calls:
        return [f"no calls recorded for trace {trace_id}"]
    cost = sum(c.cost_usd for c in calls)
    tin = sum(c.input_tokens for c in calls)
    tout = sum(c.output_tokens for c in calls)
    head = (
        f"trace {trace_id}: {len(calls)} call{'s' if len(calls) != 1 else ''}, "
        f"${cost:.6f}, in={tin} out={tout}"
    )
    return [head, *(format_call(c) for c in calls)]

"""OTel spans: the call span carries the call's own W3C ids, GenAI attributes, and attempt children."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from bastion.call import Attempt, Call, Principal
from bastion.errors import UpstreamError
from bastion.observability.tracecontext import format_traceparent, new_id, parse_traceparent
from bastion.observability.tracing import Tracing, TracingGuard, print_trace
from bastion.providers.base import Format
from bastion.store import CallRecord, open_store

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"
PARENT = "00f067aa0ba902b7"
WALL = 1_700_000_000.0
PROMPT = "My card is 4111 1111 1111 1111, SECRET PROMPT"
ANSWER = "SECRET ANSWER text"


class ClientCall(Call):
    """A Call that also knows the client's parent span (the field the gateway is asked to add)."""


def make_call(*, parent: str | None = None, **fields: Any) -> Call:
    call = ClientCall(
        request_id="req_t1",
        trace_id=TRACE,
        span_id=SPAN,
        client_format=Format.ANTHROPIC,
        principal=Principal(key_id="key_abc", name="app"),
        body={
            "model": "claude-fast",
            "max_tokens": 256,
            "messages": [{"role": "user", "content": PROMPT}],
        },
        requested_model="claude-fast",
        stream=True,
        user_id="user-77",
        feature="support",
        conversation_id="conv-9",
        prompt_version="v3",
        started=500.0,
        wall_started=WALL,
    )
    call.parent_span_id = parent  # type: ignore[attr-defined]
    call.first_byte = 500.35
    call.ended = 502.0
    call.served_model = "claude-haiku-20250101"
    call.provider = "anth"
    call.deployment = "anth-primary"
    call.status = 200
    call.usage.input_tokens = 120
    call.usage.output_tokens = 45
    call.usage.cache_read_tokens = 1000
    call.usage.cache_write_tokens = 30
    call.cost_usd = 0.0042
    call.output_text.append(ANSWER)
    call.flags.update({"pii": {"card": 1}, "max_tokens_clamped": 256})
    call.attempts.append(
        Attempt("anth-primary", "anth", "claude-haiku", 529, "UpstreamStatusError", 500.0, 500.2)
    )
    call.attempts.append(Attempt("anth-primary", "anth", "claude-haiku", 200, None, 500.25, 500.3))
    for k, v in fields.items():
        setattr(call, k, v)
    return call


def span_hex(span: ReadableSpan) -> str:
    ctx = span.get_span_context()
    assert ctx is not None
    return format(ctx.span_id, "016x")


def trace_hex(span: ReadableSpan) -> str:
    ctx = span.get_span_context()
    assert ctx is not None
    return format(ctx.trace_id, "032x")


@pytest.fixture
def exported() -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    return Tracing(exporter=exporter, provider_kinds={"anth": "anthropic"}), exporter


def spans_of(exporter: InMemorySpanExporter) -> tuple[ReadableSpan, list[ReadableSpan]]:
    spans = list(exporter.get_finished_spans())
    roots = [s for s in spans if s.kind is SpanKind.SERVER]
    assert len(roots) == 1
    return roots[0], [s for s in spans if s is not roots[0]]


async def test_call_span_ids_equal_the_calls_w3c_trace_and_span_ids(
    exported: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = exported
    call = make_call()
    await TracingGuard(tracing).after(call, None)
    root, _ = spans_of(exporter)
    assert root.context is not None
    assert format(root.context.trace_id, "032x") == call.trace_id
    assert format(root.context.span_id, "016x") == call.span_id
    assert root.parent is None
    # the traceparent the gateway sent upstream names exactly this span
    sent = format_traceparent(call.trace_id, call.span_id)
    assert parse_traceparent(sent)[:2] == (
        format(root.context.trace_id, "032x"),
        format(root.context.span_id, "016x"),
    )


async def test_call_span_is_a_child_of_the_clients_remote_parent_span(
    exported: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = exported
    call = make_call(parent=PARENT)
    tracing.record_call(call, None)
    root, _ = spans_of(exporter)
    assert root.parent is not None and root.parent.is_remote
    assert format(root.parent.span_id, "016x") == PARENT
    assert format(root.parent.trace_id, "032x") == TRACE
    assert root.context is not None and format(root.context.span_id, "016x") == SPAN


async def test_ids_are_pinned_per_call_and_never_leak_into_the_next_span(
    exported: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = exported
    ids = [(new_id(16), new_id(8)) for _ in range(20)]
    for i, (t, s) in enumerate(ids):
        tracing.record_call(
            make_call(trace_id=t, span_id=s, parent=PARENT if i % 2 else None), None
        )
    roots = [x for x in exporter.get_finished_spans() if x.kind is SpanKind.SERVER]
    got = [(trace_hex(r), span_hex(r)) for r in roots]
    assert got == ids
    children = [x for x in exporter.get_finished_spans() if x.kind is SpanKind.CLIENT]
    assert {span_hex(c) for c in children}.isdisjoint({s for _, s in ids})


async def test_call_span_has_genai_attributes_and_bastion_fields(
    exported: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = exported
    tracing.record_call(make_call(), None)
    root, _ = spans_of(exporter)
    a = dict(root.attributes or {})
    assert root.name == "chat claude-fast"
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "anthropic"
    assert a["gen_ai.request.model"] == "claude-fast"
    assert a["gen_ai.response.model"] == "claude-haiku-20250101"
    assert a["gen_ai.request.max_tokens"] == 256
    assert a["gen_ai.request.stream"] is True
    # the conventions count cached tokens inside input_tokens
    assert a["gen_ai.usage.input_tokens"] == 120 + 1000 + 30
    assert a["gen_ai.usage.output_tokens"] == 45
    assert a["gen_ai.usage.cache_read.input_tokens"] == 1000
    assert a["gen_ai.usage.cache_write.input_tokens"] == 30
    assert a["gen_ai.response.time_to_first_chunk"] == pytest.approx(0.35)
    assert a["gen_ai.conversation.id"] == "conv-9"
    assert a["bastion.cost_usd"] == pytest.approx(0.0042)
    assert a["bastion.feature"] == "support"
    assert a["bastion.prompt_version"] == "v3"
    assert a["bastion.retried"] is True and a["bastion.failover"] is False
    assert a["bastion.flag.pii"] == '{"card":1}'
    assert a["bastion.flag.max_tokens_clamped"] == 256
    assert "bastion.user_id" not in a
    assert root.status.status_code is StatusCode.UNSET


async def test_span_times_come_from_the_calls_wall_and_monotonic_clocks(
    exported: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = exported
    tracing.record_call(make_call(), None)
    root, children = spans_of(exporter)
    assert root.start_time == int(WALL * 1e9)
    assert root.end_time is not None and root.end_time - root.start_time == pytest.approx(2e9)
    first, second = sorted(children, key=lambda s: s.start_time or 0)
    assert first.start_time == int(WALL * 1e9)
    assert first.end_time == pytest.approx(int(WALL * 1e9) + 0.2e9, abs=1000)
    assert second.start_time == pytest.approx(int(WALL * 1e9) + 0.25e9, abs=1000)
    # the streamed answer's attempt lasts until the stream ended, not until its headers
    assert second.end_time == root.end_time


async def test_each_upstream_attempt_is_a_client_child_span(
    exported: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = exported
    tracing.record_call(make_call(), None)
    root, children = spans_of(exporter)
    assert len(children) == 2
    assert root.context is not None
    for c in children:
        assert c.kind is SpanKind.CLIENT
        assert c.parent is not None and c.parent.span_id == root.context.span_id
        assert c.context is not None and c.context.trace_id == root.context.trace_id
        assert c.name == "chat claude-haiku"
    failed, ok = sorted(children, key=lambda s: s.start_time or 0)
    fa, oa = dict(failed.attributes or {}), dict(ok.attributes or {})
    assert fa["bastion.attempt"] == 1 and oa["bastion.attempt"] == 2
    assert fa["gen_ai.provider.name"] == "anthropic"
    assert fa["bastion.deployment"] == "anth-primary"
    assert fa["http.response.status_code"] == 529
    assert fa["error.type"] == "UpstreamStatusError"
    assert failed.status.status_code is StatusCode.ERROR
    assert oa["gen_ai.response.model"] == "claude-haiku-20250101"
    assert "error.type" not in oa


async def test_no_prompt_or_answer_text_reaches_any_span(
    exported: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = exported
    tracing.record_call(make_call(), None)
    values = [str(v) for s in exporter.get_finished_spans() for v in (s.attributes or {}).values()]
    assert values
    for v in values:
        assert "SECRET" not in v and "4111" not in v


async def test_user_id_is_recorded_only_when_config_allows() -> None:
    exporter = InMemorySpanExporter()
    Tracing(exporter=exporter, include_user_id=True).record_call(make_call(), None)
    root = next(s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER)
    assert (root.attributes or {})["bastion.user_id"] == "user-77"


async def test_a_failed_call_sets_error_type_and_status(
    exported: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = exported
    call = make_call(status=502, error_type="UpstreamError")
    tracing.record_call(call, UpstreamError("boom"))
    root, _ = spans_of(exporter)
    assert (root.attributes or {})["error.type"] == "UpstreamError"
    assert (root.attributes or {})["http.response.status_code"] == 502
    assert root.status.status_code is StatusCode.ERROR


async def test_without_endpoint_or_exporter_tracing_is_off_and_the_guard_inactive() -> None:
    tracing = Tracing()
    assert not tracing.enabled
    assert TracingGuard(tracing).active is False
    tracing.record_call(make_call(), None)  # a no-op, not an error


async def test_sample_ratio_zero_exports_nothing() -> None:
    exporter = InMemorySpanExporter()
    Tracing(exporter=exporter, sample_ratio=0.0).record_call(make_call(), None)
    assert exporter.get_finished_spans() == ()


async def test_print_trace_lists_every_call_of_the_trace(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'r.db'}")
    await store.migrate()
    try:
        base: dict[str, Any] = {
            "trace_id": TRACE,
            "api_format": "anthropic",
            "requested_model": "claude-fast",
        }
        await store.insert_calls(
            [
                CallRecord(
                    request_id="req_a", ts=WALL, served_model="claude-haiku", deployment="d1",
                    input_tokens=10, output_tokens=5, cost_usd=0.001, latency_ms=812.4,
                    ttft_ms=201.0, attempts=2, retried=True, flags={"pii": 1},
                    user_id="user-77", input_text=PROMPT, **base,
                ),
                CallRecord(
                    request_id="req_b", ts=WALL + 3, status=429, error_type="BudgetExceeded",
                    **base,
                ),
                CallRecord(request_id="req_other", ts=WALL, **{**base, "trace_id": "f" * 32}),
            ]
        )  # fmt: skip
        lines = await print_trace(store, TRACE)
    finally:
        await store.close()
    assert lines[0].startswith(f"trace {TRACE}: 2 calls, $0.001000")
    first, second = lines[1:]
    assert "2023-11-14T22:13:20.000Z" in first and "req_a" in first
    assert "claude-fast -> claude-haiku via d1" in first
    assert "in=10 out=5" in first and "$0.001000" in first
    assert "latency=812 ms" in first and "ttft=201 ms" in first
    assert "attempts=2 (retried)" in first and "flags=pii" in first
    assert "429 BudgetExceeded" in second and "ttft=-" in second
    assert all("user-77" not in ln and "SECRET" not in ln for ln in lines)
    assert "req_other" not in "\n".join(lines)

"""OTel spans: the call span carries the call's own W3C ids, GenAI attributes, and attempt children."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from tests.observability._trace_support import (
    ANTHROPIC_BODY,
    CARD,
    CONTENT,
    PARENT,
    PROMPT,
    SPAN,
    TRACE,
    WALL,
    content_tracing,
    make_call,
    root_attrs,
    span_hex,
    spans_of,
    trace_hex,
)

from bastion.call import Call
from bastion.errors import UpstreamError
from bastion.observability.genai_content import FINISH_REASONS, finish_reason
from bastion.observability.tracecontext import format_traceparent, new_id, parse_traceparent
from bastion.observability.tracing import Tracing, TracingGuard, print_trace
from bastion.providers.base import Format
from bastion.safety.pii import Scrubber, ScrubberConfig
from bastion.store import CallRecord, open_store


@pytest.fixture(scope="module")
def scrubber() -> Scrubber:
    return Scrubber(ScrubberConfig())


@pytest.fixture
def exported() -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    return Tracing(exporter=exporter, provider_kinds={"anth": "anthropic"}), exporter


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


def test_spans_built_on_worker_threads_keep_each_calls_own_ids() -> None:
    """With content on, spans are built on worker threads: a call span's pinned ids must not
    be drawn by another thread's span (without the lock, ~1 in 2000 calls lost its id)."""
    exporter = InMemorySpanExporter()
    tracing = Tracing(exporter=exporter)
    calls = [make_call(trace_id=new_id(16), span_id=new_id(8), parent=PARENT) for _ in range(6000)]

    def record(part: list[Call]) -> None:
        for c in part:
            tracing.record_call(c, None)

    workers = [threading.Thread(target=record, args=(calls[i::8],)) for i in range(8)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch all the time: a race shows
    try:
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    finally:
        sys.setswitchinterval(interval)
    spans = exporter.get_finished_spans()
    roots = {trace_hex(r): span_hex(r) for r in spans if r.kind is SpanKind.SERVER}
    assert roots == {c.trace_id: c.span_id for c in calls}
    children = [x for x in spans if x.kind is SpanKind.CLIENT]
    assert len(children) == 2 * len(calls)
    assert {span_hex(c) for c in children}.isdisjoint({c.span_id for c in calls})


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
    assert a["gen_ai.usage.cache_creation.input_tokens"] == 30
    assert not [k for k in a if "cache_write" in k]  # the non-standard name is gone
    assert a["gen_ai.response.finish_reasons"] == ("stop",)  # Anthropic's end_turn, mapped
    assert a["bastion.provider_finish_reason"] == "end_turn"
    assert a["gen_ai.response.id"] == "msg_01XFDUDYJgAACzvnptvVoYEL"
    assert a["gen_ai.response.time_to_first_chunk"] == pytest.approx(0.35)
    assert a["gen_ai.conversation.id"] == "conv-9"
    assert a["bastion.cost_usd"] == pytest.approx(0.0042)
    assert a["bastion.feature"] == "support"
    assert a["bastion.prompt_version"] == "v3"
    assert a["bastion.retried"] is True and a["bastion.failover"] is False
    assert a["bastion.flag.pii"] == '{"card":1}'
    assert a["bastion.flag.max_tokens_clamped"] == 256
    assert "user.id" not in a and "bastion.user_id" not in a
    assert not [k for k in a if k.startswith(("gen_ai.input", "gen_ai.output", "gen_ai.system"))]
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
    assert fa["gen_ai.response.finish_reasons"] == ("error",)
    assert "gen_ai.response.id" not in fa
    assert failed.status.status_code is StatusCode.ERROR
    assert oa["gen_ai.response.model"] == "claude-haiku-20250101"
    assert oa["gen_ai.response.finish_reasons"] == ("stop",)
    assert oa["gen_ai.response.id"] == "msg_01XFDUDYJgAACzvnptvVoYEL"
    # the attempt's own usage, under the conventions' names
    assert oa["gen_ai.usage.input_tokens"] == 1150 and oa["gen_ai.usage.output_tokens"] == 45
    assert oa["gen_ai.usage.cache_creation.input_tokens"] == 30
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


async def test_user_id_is_on_every_span_when_config_allows_and_scrubbed(
    scrubber: Scrubber,
) -> None:
    exporter = InMemorySpanExporter()
    tracing = Tracing(exporter=exporter, include_user_id=True, scrub=scrubber.redact)
    tracing.record_call(make_call(), None)
    tracing.record_call(make_call(user_id="jane.doe@example.com"), None)
    spans = exporter.get_finished_spans()
    assert len(spans) == 6
    users = [(s.attributes or {})["user.id"] for s in spans]
    assert users[:3] == ["user-77"] * 3  # an opaque id passes as it is
    assert all(u == "[EMAIL_1]" for u in users[3:])  # an email never leaves the gateway


@settings(max_examples=40, deadline=None)
@given(
    email=st.from_regex(r"[a-z]{2,10}\.[a-z]{2,10}@[a-z]{2,10}\.(com|org|net)", fullmatch=True),
    opaque=st.from_regex(r"(user|u|acct)-[0-9a-f]{1,12}", fullmatch=True),
)
def test_user_id_never_carries_an_email_and_keeps_an_opaque_id(
    scrubber: Scrubber, email: str, opaque: str
) -> None:
    exporter = InMemorySpanExporter()
    tracing = Tracing(exporter=exporter, include_user_id=True, scrub=scrubber.redact)
    tracing.record_call(make_call(user_id=email), None)
    tracing.record_call(make_call(user_id=opaque), None)
    users = [str((x.attributes or {})["user.id"]) for x in exporter.get_finished_spans()]
    assert all(email.split("@")[0] not in u for u in users[:3])
    assert users[3:] == [opaque] * 3


async def test_a_failed_call_sets_error_type_and_status(
    exported: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = exported
    call = make_call(status=502, error_type="UpstreamError")
    tracing.record_call(call, UpstreamError("boom"))
    root, _ = spans_of(exporter)
    assert (root.attributes or {})["error.type"] == "UpstreamError"
    assert (root.attributes or {})["http.response.status_code"] == 502
    assert (root.attributes or {})["gen_ai.response.finish_reasons"] == ("error",)
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


# -- finish reasons on every call span -------------------------------------------------------

OUTCOMES = {"stop", "length", "content_filter", "tool_call", "error"}


@pytest.mark.parametrize(
    ("fmt", "raw", "want"),
    [
        (Format.ANTHROPIC, "end_turn", "stop"),
        (Format.ANTHROPIC, "stop_sequence", "stop"),
        (Format.ANTHROPIC, "max_tokens", "length"),
        (Format.ANTHROPIC, "tool_use", "tool_call"),
        (Format.ANTHROPIC, "refusal", "content_filter"),
        (Format.ANTHROPIC, "pause_turn", "pause_turn"),  # no convention value: as it was said
        (Format.OPENAI, "stop", "stop"),
        (Format.OPENAI, "length", "length"),
        (Format.OPENAI, "tool_calls", "tool_call"),
        (Format.OPENAI, "function_call", "tool_call"),
        (Format.OPENAI, "content_filter", "content_filter"),
        (Format.OPENAI, None, "stop"),  # the degraded stand-in or a replay: ended normally
    ],
)
async def test_finish_reasons_map_both_formats_to_the_conventions_values(
    exported: tuple[Tracing, InMemorySpanExporter], fmt: Format, raw: str | None, want: str
) -> None:
    tracing, exporter = exported
    tracing.record_call(make_call(client_format=fmt, finish_reason=raw), None)
    root, _ = spans_of(exporter)
    assert (root.attributes or {})["gen_ai.response.finish_reasons"] == (want,)


@pytest.mark.parametrize(
    "fields",
    [
        {"status": 429, "error_type": "BudgetExceeded", "attempts": [], "finish_reason": None},
        {"flags": {"stream_error": "upstream stream cut"}},  # cut after end_turn was not seen
        {"status": 499, "flags": {"client_disconnected": True}},
        {"error_type": "UpstreamOverloaded"},  # an error event relayed to the client
    ],
)
async def test_a_call_without_a_whole_answer_finishes_with_error(
    exported: tuple[Tracing, InMemorySpanExporter], fields: dict[str, Any]
) -> None:
    tracing, exporter = exported
    tracing.record_call(make_call(**fields), None)
    root, _ = spans_of(exporter)
    assert (root.attributes or {})["gen_ai.response.finish_reasons"] == ("error",)


@given(
    raw=st.one_of(st.none(), st.sampled_from(sorted(FINISH_REASONS)), st.text(max_size=20)),
    broke=st.booleans(),
)
def test_finish_reason_is_error_exactly_when_the_call_failed(raw: str | None, broke: bool) -> None:
    got = finish_reason(raw, failed=broke)
    assert (got == "error") is (broke or raw == "error")
    if raw is None or raw in FINISH_REASONS:
        assert got in OUTCOMES
    else:
        assert got == raw or broke


async def test_the_request_settings_the_conventions_name_are_on_the_call_span(
    exported: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = exported
    body = {
        "model": "gpt-x",
        "messages": [{"role": "user", "content": "hi"}],
        "max_completion_tokens": 64,
        "temperature": 0,
        "top_p": 0.9,
        "frequency_penalty": 0.5,
        "presence_penalty": -0.5,
        "seed": 7,
        "stop": "END",
        "n": 2,
        "response_format": {"type": "json_object"},
    }
    tracing.record_call(make_call(client_format=Format.OPENAI, body=body), None)
    a = root_attrs(exporter)
    assert a["gen_ai.request.max_tokens"] == 64
    assert a["gen_ai.request.temperature"] == 0.0 and a["gen_ai.request.top_p"] == 0.9
    assert a["gen_ai.request.frequency_penalty"] == 0.5
    assert a["gen_ai.request.presence_penalty"] == -0.5
    assert a["gen_ai.request.seed"] == 7
    assert a["gen_ai.request.stop_sequences"] == ("END",)
    assert a["gen_ai.request.choice.count"] == 2
    assert a["gen_ai.output.type"] == "json"
    exporter.clear()
    anthropic_body = {**ANTHROPIC_BODY, "top_k": 5, "stop_sequences": ["###", "END"]}
    tracing.record_call(make_call(body=anthropic_body), None)
    a = root_attrs(exporter)
    assert a["gen_ai.request.top_k"] == 5.0
    assert a["gen_ai.request.stop_sequences"] == ("###", "END")
    assert "gen_ai.request.choice.count" not in a and "gen_ai.output.type" not in a


async def test_an_embeddings_call_is_an_embeddings_span_without_chat_attributes(
    scrubber: Scrubber,
) -> None:
    tracing, exporter = content_tracing(scrubber)  # content on: embeddings have none to show
    body = {"model": "embed-x", "input": [f"card {CARD}"], "encoding_format": "base64",
            "dimensions": 256}  # fmt: skip
    call = make_call(client_format=Format.OPENAI, body=body, requested_model="embed-x",
                     finish_reason=None, response_id=None, output_text=[], stream=False)  # fmt: skip
    call.flags["endpoint"] = "embeddings"
    tracing.record_call(call, None)
    root, children = spans_of(exporter)
    a = dict(root.attributes or {})
    assert root.name == "embeddings embed-x"
    assert a["gen_ai.operation.name"] == "embeddings"
    assert a["gen_ai.usage.input_tokens"] == 120
    assert a["gen_ai.request.encoding_formats"] == ("base64",)
    assert a["gen_ai.embeddings.dimension.count"] == 256
    chat_only = ("gen_ai.response.finish_reasons", "gen_ai.usage.output_tokens", *CONTENT)
    assert not [k for k in a if k in chat_only]
    for c in children:
        assert c.name == "embeddings claude-haiku"
        assert not [k for k in (c.attributes or {}) if k in chat_only]
    assert "4111" not in repr([s.attributes for s in exporter.get_finished_spans()])

"""OTel spans: the call span carries the call's own W3C ids, GenAI attributes, and attempt children."""

from __future__ import annotations

import itertools
import sys
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from bastion.call import Attempt, Call, Principal, ToolCallOut, Usage
from bastion.errors import UpstreamError
from bastion.observability import tracing as tracing_module
from bastion.observability.genai_content import (
    FINISH_REASONS,
    ContentCapture,
    finish_reason,
    fit,
)
from bastion.observability.tracecontext import format_traceparent, new_id, parse_traceparent
from bastion.observability.tracing import Tracing, TracingGuard, print_trace
from bastion.providers.base import Format
from bastion.providers.sse import SSEEvent
from bastion.safety.pii import Scrubber, ScrubberConfig
from bastion.store import CallRecord, open_store
from bastion.watch import StreamWatcher, observe_body

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"
PARENT = "00f067aa0ba902b7"
WALL = 1_700_000_000.0
PROMPT = "My card is 4111 1111 1111 1111, SECRET PROMPT"
ANSWER = "SECRET ANSWER text"


def make_call(*, parent: str | None = None, **fields: Any) -> Call:
    call = Call(
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
    call.parent_span_id = parent
    call.first_byte = 500.35
    call.ended = 502.0
    call.served_model = "claude-haiku-20250101"
    call.provider = "anth"
    call.deployment = "anth-primary"
    call.status = 200
    call.finish_reason = "end_turn"
    call.response_id = "msg_01XFDUDYJgAACzvnptvVoYEL"
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
    ok = Attempt("anth-primary", "anth", "claude-haiku", 200, None, 500.25, 500.3)
    ok.usage = Usage(120, 45, 1000, 30)
    call.attempts.append(ok)
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


@pytest.fixture(scope="module")
def scrubber() -> Scrubber:
    return Scrubber(ScrubberConfig())


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


# -- content on request: scrubbed, in the conventions' parts structure, bounded ----------------

CARD = "4111 1111 1111 1111"
CONTENT = ("gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions")
ANTHROPIC_BODY: dict[str, Any] = {
    "model": "claude-fast",
    "max_tokens": 256,
    "system": [{"type": "text", "text": "You are the support agent of ACME."}],
    "messages": [
        {"role": "user", "content": f"My card is {CARD}, I am John Smith"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me look."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "lookup",
                    "input": {"email": "jane.doe@example.com", "n": 4111111111111111},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [{"type": "text", "text": "owner: jane.doe@example.com"}],
                }
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": "iVBORw0KGgoAAAANSUhEUg"}},
                {"type": "text", "text": "What is this?"},
            ],
        },
    ],
}  # fmt: skip


def content_tracing(scrubber: Scrubber, max_chars: int = 16_000) -> tuple[Tracing, Any]:
    exporter = InMemorySpanExporter()
    tracing = Tracing(
        exporter=exporter, capture_content=True, content_max_chars=max_chars, scrub=scrubber.redact
    )
    return tracing, exporter


def root_attrs(exporter: InMemorySpanExporter) -> dict[str, Any]:
    root, _ = spans_of(exporter)
    return dict(root.attributes or {})


async def test_anthropic_content_is_scrubbed_in_the_conventions_parts_structure(
    scrubber: Scrubber,
) -> None:
    tracing, exporter = content_tracing(scrubber)
    call = make_call(body=ANTHROPIC_BODY, output_text=["Your card ", f"{CARD} is fine"])
    await TracingGuard(tracing).after(call, None)  # content: built on a worker thread
    assert tracing.force_flush()
    a = root_attrs(exporter)
    assert orjson.loads(a["gen_ai.system_instructions"]) == [
        {"type": "text", "content": "You are the support agent of ACME."}
    ]
    user, assistant, tool, image = orjson.loads(a["gen_ai.input.messages"])
    assert user == {
        "role": "user",
        "parts": [{"type": "text", "content": "My card is [CARD_1], I am [PERSON_1]"}],
    }
    assert assistant["role"] == "assistant"
    assert assistant["parts"][1] == {
        "type": "tool_call",
        "id": "toolu_1",
        "name": "lookup",
        "arguments": {"email": "[EMAIL_1]", "n": "[CARD_1]"},
    }
    assert tool == {
        "role": "tool",
        "parts": [{"type": "tool_call_response", "id": "toolu_1", "response": "owner: [EMAIL_1]"}],
    }
    assert image["parts"][0] == {"type": "image", "modality": "image"}  # never inlined
    assert orjson.loads(a["gen_ai.output.messages"]) == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "Your card [CARD_1] is fine"}],
            "finish_reason": "stop",
        }
    ]
    assert "bastion.content_truncated" not in a
    every = " ".join(str(v) for s in exporter.get_finished_spans() for v in s.attributes.values())
    for raw in ("4111", "John Smith", "jane.doe", "iVBOR"):
        assert raw not in every


async def test_openai_instructions_stay_in_the_history_and_tool_arguments_are_objects(
    scrubber: Scrubber,
) -> None:
    tracing, exporter = content_tracing(scrubber)
    body = {
        "model": "gpt-x",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in English."}]},
            {"role": "user", "content": "Mail jane.doe@example.com"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "send", "arguments": '{"to": "jane.doe@example.com"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sent"},
        ],
    }
    call = make_call(client_format=Format.OPENAI, body=body, finish_reason="tool_calls")
    call.output_text.clear()
    tracing.record_call(call, None)
    a = root_attrs(exporter)
    assert "gen_ai.system_instructions" not in a  # part of the chat history in this API
    msgs = orjson.loads(a["gen_ai.input.messages"])
    assert [m["role"] for m in msgs] == ["system", "system", "user", "assistant", "tool"]
    assert msgs[2]["parts"] == [{"type": "text", "content": "Mail [EMAIL_1]"}]
    assert msgs[3]["parts"] == [
        {"type": "tool_call", "id": "call_1", "name": "send", "arguments": {"to": "[EMAIL_1]"}}
    ]
    assert msgs[4]["parts"] == [{"type": "tool_call_response", "id": "call_1", "response": "sent"}]
    out = orjson.loads(a["gen_ai.output.messages"])
    assert out == [{"role": "assistant", "parts": [], "finish_reason": "tool_call"}]


async def test_a_failed_call_without_output_has_no_output_messages(scrubber: Scrubber) -> None:
    tracing, exporter = content_tracing(scrubber)
    call = make_call(status=429, error_type="BudgetExceeded", attempts=[], output_text=[])
    tracing.record_call(call, None)
    a = root_attrs(exporter)
    assert "gen_ai.output.messages" not in a
    assert orjson.loads(a["gen_ai.input.messages"])[0]["role"] == "user"


async def test_content_is_bounded_oldest_messages_first_and_stays_valid_json(
    scrubber: Scrubber,
) -> None:
    tracing, exporter = content_tracing(scrubber, max_chars=2000)
    history = [{"role": "user", "content": f"turn {i} " + "x" * 400} for i in range(30)]
    history.append({"role": "user", "content": "last " + "y" * 5000 + f" {CARD}"})
    body = {"model": "claude-fast", "max_tokens": 8, "messages": history}
    tracing.record_call(make_call(body=body, output_text=["z" * 9000]), None)
    a = root_attrs(exporter)
    for key in ("gen_ai.input.messages", "gen_ai.output.messages"):
        assert len(a[key]) <= 2000
    msgs = orjson.loads(a["gen_ai.input.messages"])
    assert len(msgs) == 1 and msgs[0]["parts"][0]["content"].startswith("last yyy")
    assert orjson.loads(a["gen_ai.output.messages"])[0]["finish_reason"] == "stop"
    assert a["bastion.content_truncated"] is True
    assert "4111" not in a["gen_ai.input.messages"]


any_json = st.recursive(
    st.one_of(st.integers(), st.floats(), st.text(max_size=40), st.none()),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=5), kids, max_size=4)
    ),
    max_leaves=12,
)


@given(v=any_json)
def test_any_tool_argument_becomes_json_within_the_bound(scrubber: Scrubber, v: Any) -> None:
    args = ContentCapture(scrubber.redact, 512).value(v)  # a 70-digit int too: as a string
    text, _ = fit([{"role": "assistant", "parts": [{"type": "tool_call", "arguments": args}]}], 512)
    assert len(text) <= 512 and isinstance(orjson.loads(text), list)


async def test_when_content_workers_fall_behind_spans_go_without_content_marked_so(
    scrubber: Scrubber, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tracing_module, "_MAX_PENDING", 0)  # every worker counts as busy
    tracing, exporter = content_tracing(scrubber)
    await TracingGuard(tracing).after(make_call(body=ANTHROPIC_BODY), None)
    a = root_attrs(exporter)  # recorded at once, on the loop: nothing to wait for
    assert a["bastion.content_skipped"] is True
    assert not [k for k in a if k in CONTENT]
    assert a["gen_ai.response.finish_reasons"] == ("stop",)


def test_content_is_never_captured_without_a_scrubber() -> None:
    with pytest.raises(ValueError, match="scrub"):
        Tracing(exporter=InMemorySpanExporter(), capture_content=True)


@settings(max_examples=60, deadline=None)
@given(
    words=st.integers(min_value=0, max_value=700),
    sep=st.sampled_from([" ", "-", ""]),
    limit=st.integers(min_value=64, max_value=900),
)
def test_a_card_number_split_by_the_bound_never_shows_even_in_part(
    scrubber: Scrubber, words: int, sep: str, limit: int
) -> None:
    card = sep.join(["4111", "1111", "1111", "1111"])
    text = "ab " * words + card + " cd" * 400  # the card anywhere, across the cut too
    clipped = ContentCapture(scrubber.redact, limit).clip(text)
    assert len(clipped) <= limit + 1
    assert "4111" not in clipped and "1111" not in clipped


json_leaf = st.one_of(st.text(max_size=300), st.integers(-(2**63), 2**63), st.none(), st.booleans())
messages_st = st.lists(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["user", "assistant", "tool"]),
            "parts": st.lists(
                st.fixed_dictionaries(
                    {"type": st.just("text"), "content": st.text(max_size=600)},
                    optional={"arguments": st.dictionaries(st.text(max_size=8), json_leaf)},
                ),
                max_size=6,
            ),
        }
    ),
    max_size=12,
)


@given(messages=messages_st, limit=st.integers(min_value=64, max_value=4000))
def test_fit_always_gives_json_within_the_bound_and_cuts_only_when_needed(
    messages: list[dict[str, Any]], limit: int
) -> None:
    text, cut = fit(messages, limit)
    assert len(text) <= limit
    parsed = orjson.loads(text)
    assert isinstance(parsed, list)
    whole = orjson.dumps(messages).decode()
    assert cut is (len(whole) > limit)
    if not cut:
        assert parsed == messages
    elif parsed:
        assert len(parsed) <= len(messages)
        assert [m["role"] for m in parsed] == [m["role"] for m in messages[-len(parsed) :]]


@settings(max_examples=30, deadline=None)
@given(texts=st.lists(st.sampled_from([f"Mail {CARD} to jane.doe@example.com", "plain " * 12,
                                       "John Smith lives in Paris, France, since 2019"]) | st.text(min_size=0, max_size=80),
                      min_size=1, max_size=12))  # fmt: skip
def test_remembered_scrubs_equal_the_scrubber_and_repeat_texts_are_scrubbed_once(
    scrubber: Scrubber, texts: list[str]
) -> None:
    seen: list[str] = []

    def counting(text: str) -> str:
        seen.append(text)
        return str(scrubber.redact(text))

    capture = ContentCapture(counting, 4000, memo_items=3)
    for t in texts * 2:
        assert capture.clip(t) == scrubber.redact(t)
    long_ones = [t for t in texts if len(t) >= 32]
    # a long text is scrubbed again only after 3 other long texts pushed it out
    assert len([t for t in seen if len(t) >= 32]) <= 2 * len(long_ones)
    if long_ones and len(set(long_ones)) <= 3:
        assert len([t for t in seen if len(t) >= 32]) == len(set(long_ones))


# -- the answer's tool calls: streamed or whole, the same output message ---------------------


async def test_the_answers_tool_calls_are_output_tool_call_parts_scrubbed(
    scrubber: Scrubber,
) -> None:
    tracing, exporter = content_tracing(scrubber)
    call = make_call(output_text=["Sending."], finish_reason="tool_use")
    call.tool_calls.append(ToolCallOut("toolu_9", "send", '{"to": "jane.doe@example.com"}'))
    call.tool_calls.append(ToolCallOut("toolu_10", "log", '{"n": 1'))  # cut: kept as text
    tracing.record_call(call, None)
    (out,) = orjson.loads(root_attrs(exporter)["gen_ai.output.messages"])
    assert out["finish_reason"] == "tool_call"
    assert out["parts"] == [
        {"type": "text", "content": "Sending."},
        {"type": "tool_call", "id": "toolu_9", "name": "send", "arguments": {"to": "[EMAIL_1]"}},
        {"type": "tool_call", "id": "toolu_10", "name": "log", "arguments": '{"n": 1'},
    ]


def sse(data: Any, event: str | None = None) -> SSEEvent:
    raw = data if isinstance(data, bytes) else orjson.dumps(data)
    return SSEEvent(raw=b"data: " + raw + b"\n\n", event=event, data=raw)


def pieces(text: str, cuts: list[int]) -> list[str]:
    at = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in itertools.pairwise(at)]


tool_args = st.dictionaries(
    st.sampled_from(["to", "n", "note"]),
    st.one_of(st.text(max_size=20), st.integers(-(2**63), 2**63 - 1)),  # what orjson parses
    max_size=3,
)


@given(args=tool_args, cuts=st.lists(st.integers(0, 200), max_size=6), text=st.text(max_size=20))
def test_a_streamed_answer_and_its_whole_body_give_the_call_the_same_fields(
    args: dict[str, Any], cuts: list[int], text: str
) -> None:
    raw = orjson.dumps(args).decode()
    for fmt in (Format.ANTHROPIC, Format.OPENAI):
        streamed, whole = make_call(), make_call()
        for c in (streamed, whole):
            c.output_text.clear()
            c.finish_reason = c.response_id = None
        watcher = StreamWatcher(streamed, fmt)
        if fmt is Format.ANTHROPIC:
            msg = {"id": "msg_1", "model": "m", "usage": {"input_tokens": 3, "output_tokens": 1}}
            events = [sse({"message": msg}, "message_start")]
            events.append(sse({"index": 0, "content_block": {"type": "text", "text": ""}},
                              "content_block_start"))  # fmt: skip
            events.append(sse({"index": 0, "delta": {"type": "text_delta", "text": text}},
                              "content_block_delta"))  # fmt: skip
            block = {"type": "tool_use", "id": "toolu_1", "name": "send", "input": {}}
            events.append(sse({"index": 1, "content_block": block}, "content_block_start"))
            events += [
                sse(
                    {"index": 1, "delta": {"type": "input_json_delta", "partial_json": p}},
                    "content_block_delta",
                )
                for p in pieces(raw, cuts)
            ]
            events.append(sse({"delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}},
                              "message_delta"))  # fmt: skip
            content = [{"type": "text", "text": text}, {**block, "input": args}]
            body = {**msg, "content": content, "stop_reason": "tool_use",
                    "usage": {"input_tokens": 3, "output_tokens": 9}}  # fmt: skip
        else:
            head = {"id": "chatcmpl-1", "model": "m"}
            first = {"index": 0, "id": "call_1", "type": "function",
                     "function": {"name": "send", "arguments": ""}}  # fmt: skip
            deltas = [{"content": text}, {"tool_calls": [first]}] + [
                {"tool_calls": [{"index": 0, "function": {"arguments": p}}]}
                for p in pieces(raw, cuts)
            ]
            events = [
                sse({**head, "choices": [{"index": 0, "delta": d, "finish_reason": None}]})
                for d in deltas
            ]
            events.append(sse({**head, "choices": [{"index": 0, "delta": {},
                                                    "finish_reason": "tool_calls"}]}))  # fmt: skip
            tc = {
                "id": "call_1",
                "type": "function",
                "function": {"name": "send", "arguments": raw},
            }
            message = {"role": "assistant", "content": text, "tool_calls": [tc]}
            body = {**head, "choices": [{"index": 0, "message": message,
                                         "finish_reason": "tool_calls"}]}  # fmt: skip
        for ev in events:
            watcher.observe(ev)
        observe_body(whole, body, fmt)
        for c in (streamed, whole):
            assert "".join(c.output_text) == text
            assert [(t.id, t.name, orjson.loads(t.arguments)) for t in c.tool_calls] == [
                ("toolu_1" if fmt is Format.ANTHROPIC else "call_1", "send", args)
            ]
            assert c.finish_reason == ("tool_use" if fmt is Format.ANTHROPIC else "tool_calls")
            assert c.response_id == ("msg_1" if fmt is Format.ANTHROPIC else "chatcmpl-1")


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

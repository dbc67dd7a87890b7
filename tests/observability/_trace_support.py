"""Shared by the span tests: a finished call as the gateway leaves it, and span readers."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from bastion.call import Attempt, Call, Principal, Usage
from bastion.observability.tracing import Tracing
from bastion.providers.base import Format
from bastion.safety.pii import Scrubber

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
        # given at construction: the call resolves its dialect from it once
        client_format=fields.pop("client_format", Format.ANTHROPIC),
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


def spans_of(exporter: InMemorySpanExporter) -> tuple[ReadableSpan, list[ReadableSpan]]:
    spans = list(exporter.get_finished_spans())
    roots = [s for s in spans if s.kind is SpanKind.SERVER]
    assert len(roots) == 1
    return roots[0], [s for s in spans if s is not roots[0]]


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

"""What opt-in trace content costs: building a call's spans with and without scrubbed messages.

Conversations resend their whole history each turn, so the bench plays growing conversations
(turn k carries k messages, each with a name and an email) through ``Tracing.record_call`` on
an in-memory exporter, three ways in the same run: content off (the baseline), content on
with every text scrubbed every time, and content on as shipped (scrubbed texts remembered by
digest). CPU per call, not latency: spans are built after the answer, off the event loop.

    .venv/bin/python bench/otel_content.py [--conversations 10] [--turns 20]
"""

from __future__ import annotations

import argparse
import time

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from bastion.call import Attempt, Call, Principal
from bastion.observability.genai_content import ContentCapture
from bastion.observability.tracing import Tracing
from bastion.providers.base import Format
from bastion.safety.pii import Scrubber, ScrubberConfig

LINE = "Hello, my name is John Smith and my mail is j.smith@example.com. "


def call_for(messages: list[dict[str, str]]) -> Call:
    call = Call(
        request_id="req_bench",
        trace_id="0af7651916cd43dd8448eb211c80319c",
        span_id="b7ad6b7169203331",
        client_format=Format.ANTHROPIC,
        principal=Principal(key_id="key_bench", name="bench"),
        body={"model": "claude-fast", "max_tokens": 256, "messages": messages},
        requested_model="claude-fast",
        stream=False,
        started=100.0,
        wall_started=1_700_000_000.0,
    )
    call.ended, call.status, call.finish_reason = 101.0, 200, "end_turn"
    call.output_text.append("An answer " * 50)
    call.attempts.append(Attempt("d", "p", "claude-fast", 200, None, 100.0, 101.0))
    return call


def per_call_ms(tracing: Tracing, conversations: int, turns: int) -> float:
    n, t0 = 0, time.perf_counter()
    for c in range(conversations):
        history = [
            {"role": "user" if i % 2 == 0 else "assistant", "content": f"{c}.{i} " + LINE * 8}
            for i in range(turns)
        ]
        for k in range(1, turns + 1):
            tracing.record_call(call_for(history[:k]), None)
            n += 1
    return (time.perf_counter() - t0) / n * 1000.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--conversations", type=int, default=10)
    ap.add_argument("--turns", type=int, default=20)
    args = ap.parse_args()
    scrub = Scrubber(ScrubberConfig()).redact
    off = Tracing(exporter=InMemorySpanExporter())
    every = Tracing(exporter=InMemorySpanExporter(), capture_content=True, scrub=scrub)
    every.content = ContentCapture(scrub, 16_000, memo_items=0)
    shipped = Tracing(exporter=InMemorySpanExporter(), capture_content=True, scrub=scrub)
    per_call_ms(off, 1, 4)  # warm-up
    rows = [
        ("content off (baseline)", per_call_ms(off, args.conversations, args.turns)),
        ("content on, every text scrubbed", per_call_ms(every, args.conversations, args.turns)),
        ("content on, as shipped", per_call_ms(shipped, args.conversations, args.turns)),
    ]
    base = rows[0][1]
    print(f"{args.conversations} conversations x {args.turns} turns, history resent each turn")
    print("| spans of one call | ms | vs baseline |\n|---|---|---|")
    for name, ms in rows:
        print(f"| {name} | {ms:.3f} | {ms / base:.1f}x |")


if __name__ == "__main__":
    main()

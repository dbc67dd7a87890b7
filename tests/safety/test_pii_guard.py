"""The guard scrubs what the provider sees per feature, and the stream filter rewrites both wire formats."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import orjson

from bastion.call import Call, Principal
from bastion.providers.base import Format
from bastion.providers.sse import SSEDecoder, SSEEvent, encode_event
from bastion.safety.pii import Scrubber
from bastion.safety.pii.guard import (
    PiiGuard,
    PiiLogFilter,
    PiiPolicy,
    PiiStreamFilter,
    scrub_response,
)

SCRUBBER = Scrubber()
ANSWER = "Sure, I emailed ann.lee@example.com and texted +44 20 7946 0958. Anything else?"


def make_call(body: dict[str, Any], feature: str | None = None) -> Call:
    return Call(
        request_id="req_1",
        trace_id="t" * 32,
        span_id="s" * 16,
        client_format=Format.ANTHROPIC,
        principal=Principal(key_id="key_1", name="test"),
        body=body,
        requested_model="claude-sonnet-5",
        stream=True,
        feature=feature,
    )


def anthropic_body() -> dict[str, Any]:
    return {
        "model": "claude-sonnet-5",
        "system": "You support ACME. Escalate to ops@acme.example.",
        "messages": [
            {"role": "user", "content": "I'm ann.lee@example.com, card 4111 1111 1111 1111"},
            {
                "role": "assistant",
                "content": [{"type": "text", "text": "Thanks ann.lee@example.com"}],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": "phone +1 415-555-2671",
                    },
                    {"type": "text", "text": "and my IP is 203.0.113.7"},
                ],
            },
        ],
    }


async def test_guard_scrubs_provider_bound_messages_for_features_that_ask() -> None:
    guard = PiiGuard(SCRUBBER, {"support": PiiPolicy(provider=True)})
    call = make_call(anthropic_body(), feature="support")
    await guard.before(call)
    msgs = call.body["messages"]
    assert msgs[0]["content"] == "I'm [EMAIL_1], card [CARD_1]"
    assert msgs[1]["content"][0]["text"] == "Thanks [EMAIL_1]"
    assert msgs[2]["content"][0]["content"] == "phone [PHONE_1]"
    assert msgs[2]["content"][1]["text"] == "and my IP is [IP_1]"
    assert call.body["system"] == "You support ACME. Escalate to ops@acme.example."
    (f,) = call.findings
    assert f.where == "request" and f.action == "redacted"
    assert dict(f.counts) == {"EMAIL": 2, "CARD": 1, "PHONE": 1, "IP": 1}
    await guard.after(call, None)
    assert call.findings == [f]  # nothing more was found in an answer
    assert "ann" not in json.dumps([x.as_dict() for x in call.findings])


async def test_guard_leaves_the_body_alone_by_default_and_forgets_the_session() -> None:
    guard = PiiGuard(SCRUBBER)
    body = anthropic_body()
    call = make_call(body)
    await guard.before(call)
    assert call.body == anthropic_body()
    assert guard.session(call) is guard.session(call)
    await guard.after(call, None)
    assert not call.findings
    assert guard.stream_filter(call, Format.ANTHROPIC) is not None  # flag mode by default


def test_output_off_means_no_filter() -> None:
    guard = PiiGuard(SCRUBBER, default=PiiPolicy(output="off"))
    assert guard.stream_filter(make_call({}), Format.OPENAI) is None


def chunked(text: str, size: int = 5) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def anthropic_events(text: str) -> list[SSEEvent]:
    def ev(name: str, obj: dict[str, Any]) -> bytes:
        return encode_event(orjson.dumps(obj), name)

    raw = [ev("message_start", {"type": "message_start", "message": {"id": "m"}})]
    raw.append(ev("content_block_start", {"type": "content_block_start", "index": 0}))
    for piece in chunked(text):
        delta = {"type": "text_delta", "text": piece}
        raw.append(
            ev("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
        )
    raw.append(ev("content_block_stop", {"type": "content_block_stop", "index": 0}))
    raw.append(ev("message_stop", {"type": "message_stop"}))
    return SSEDecoder().feed(b"".join(raw))


def test_anthropic_stream_is_rewritten_and_flushed_before_the_block_ends() -> None:
    f = PiiStreamFilter(SCRUBBER.session(), Format.ANTHROPIC)
    out = [e for ev in anthropic_events(ANSWER) for e in f.process(ev)]
    events = SSEDecoder().feed(b"".join(e.raw for e in out))  # re-parses: valid SSE
    text = "".join(
        json.loads(e.data)["delta"]["text"] for e in events if e.event == "content_block_delta"
    )
    assert text == SCRUBBER.scrub(ANSWER).text
    names = [e.event for e in events]
    assert names[-2:] == ["content_block_stop", "message_stop"]
    assert "ann.lee" not in b"".join(e.raw for e in out).decode()


def openai_events(text: str) -> list[SSEEvent]:
    base = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4.1"}
    raw = []
    for piece in chunked(text):
        raw.append(
            encode_event(
                orjson.dumps({**base, "choices": [{"index": 0, "delta": {"content": piece}}]})
            )
        )
    done = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    raw += [encode_event(orjson.dumps(done)), encode_event(b"[DONE]")]
    return SSEDecoder().feed(b"".join(raw))


def test_openai_stream_is_rewritten_and_flushed_in_the_finish_chunk() -> None:
    f = PiiStreamFilter(SCRUBBER.session(), Format.OPENAI)
    out = [e for ev in openai_events(ANSWER) for e in f.process(ev)]
    text = ""
    for e in out:
        if e.data == b"[DONE]":
            continue
        for choice in json.loads(e.data)["choices"]:
            text += choice["delta"].get("content") or ""
    assert text == SCRUBBER.scrub(ANSWER).text
    assert out[-1].data == b"[DONE]"
    finish = json.loads(out[-2].data)["choices"][0]
    assert finish["finish_reason"] == "stop"


def test_flag_mode_forwards_events_untouched_but_counts() -> None:
    session = SCRUBBER.session()
    f = PiiStreamFilter(session, Format.ANTHROPIC, redact=False)
    events = anthropic_events(ANSWER)
    out = [e for ev in events for e in f.process(ev)]
    assert [e.raw for e in out] == [e.raw for e in events]
    assert session.counts == {"EMAIL": 1, "PHONE": 1}


def test_unary_replies_are_scrubbed_in_both_formats() -> None:
    session = SCRUBBER.session()
    a: dict[str, Any] = {
        "content": [{"type": "text", "text": ANSWER}, {"type": "tool_use", "input": {}}]
    }
    scrub_response(Format.ANTHROPIC, a, session, redact=True)
    assert a["content"][0]["text"] == SCRUBBER.scrub(ANSWER).text
    o: dict[str, Any] = {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER}}]
    }
    scrub_response(Format.OPENAI, o, session, redact=True)
    assert o["choices"][0]["message"]["content"] == SCRUBBER.scrub(ANSWER).text


def test_log_filter_scrubs_messages_arguments_and_tracebacks() -> None:
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.addFilter(PiiLogFilter(SCRUBBER))
    log = logging.getLogger("bastion.test.pii")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("user %s called from %s", "ann@example.com", "+1 415-555-2671")
        try:
            raise ValueError("bad card 4111 1111 1111 1111")
        except ValueError:
            log.exception("failed for ann@example.com")
    finally:
        log.removeHandler(handler)
    out = buf.getvalue()
    assert "user [EMAIL_1] called from [PHONE_1]" in out
    assert "ValueError: bad card [CARD_1]" in out
    assert "ann@" not in out and "4111" not in out

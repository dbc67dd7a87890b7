"""The guard scrubs what the provider sees per feature and registers the answer's filter;
the log filter scrubs every log line."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

from bastion.call import Call, Principal
from bastion.providers.base import Format
from bastion.safety.pii import Scrubber
from bastion.safety.pii.guard import PiiGuard, PiiLogFilter, PiiPolicy

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
    assert len(call.output_filters) == 1  # answers are filtered by default (sensitive)


async def test_output_off_means_no_filter() -> None:
    guard = PiiGuard(SCRUBBER, default=PiiPolicy(output="off"))
    call = make_call({})
    await guard.before(call)
    assert call.output_filters == []


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

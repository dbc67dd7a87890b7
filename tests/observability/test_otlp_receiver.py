"""Traces reach an OTLP/HTTP receiver under the GenAI conventions' names, content only on request.

Real parts end to end: a `bastion serve` process exporting over OTLP/HTTP (protobuf) to a local
aiohttp receiver that decodes ``ExportTraceServiceRequest``, called through both official SDKs,
streaming and not, and across a failover from an Anthropic deployment (overloaded) to an OpenAI
one. Each call sends its own ``traceparent``, so its span is found by trace id.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import openai
import orjson
import pytest
from tests.conftest import RunningGateway, sim_models, start_gateway, stop, write_config
from tests.observability._otlp_sink import CLIENT, SERVER, OtlpSink, ReceivedSpan

EMAIL = "jane.doe@example.com"
CARD = "4111 1111 1111 1111"
SYSTEM = "You are the support agent of ACME."
ASK = f"My email is {EMAIL}. [[sim:reply=Your card {CARD} is on file, Jane.]]"
AUTH = "Basic cGstbGYtdGVzdDpzay1sZi10ZXN0"  # base64("pk-lf-test:sk-lf-test"), Langfuse-style
FAILOVERS = 5
CONTENT_KEYS = ("gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions")


def gateway_config(tmp: Path, sink: OtlpSink, *, content: bool) -> Path:
    models = sim_models(
        {
            "claude-t": {"deployments": [{"provider": "anth", "model": "claude-sonnet-5"}]},
            "gpt-t": {"deployments": [{"provider": "oai", "model": "gpt-4.1"}]},
        }
    )
    # an overloaded Anthropic deployment rests once it said 529: one of its own per failover
    for i in range(FAILOVERS):
        overloaded = {"x-sim-fault": "status:529"}
        models[f"failover-{i}"] = {
            "deployments": [
                {"provider": "anth", "model": f"claude-fo-{i}", "headers": overloaded},
                {"provider": "oai", "model": "gpt-4.1"},
            ]
        }
    return write_config(
        tmp,
        providers={
            "sim": {"kind": "sim"},
            "anth": {"kind": "anthropic", "base_url": "sim://anth"},
            "oai": {"kind": "openai", "base_url": "sim://oai"},
        },
        models=models,
        # the client gets the card: only the trace must not
        features={"default": {"pii_output": "off"}},
        observability={
            "spill_path": str(tmp / "spill.jsonl"),
            "otlp_endpoint": sink.endpoint,
            "otlp_headers": {"Authorization": AUTH, "x-langfuse-ingestion-version": "4"},
            "service_name": "bastion-otlp-test",
            "trace_user_id": content,
            "otel_capture_content": content,
        },
    )


@pytest.fixture(scope="module")
def sink() -> Iterator[OtlpSink]:
    s = OtlpSink()
    s.start()
    yield s
    s.stop()


def _gateway(
    tmp_path_factory: pytest.TempPathFactory, sink: OtlpSink, *, content: bool
) -> Iterator[RunningGateway]:
    tmp = tmp_path_factory.mktemp("otlp-content" if content else "otlp-plain")
    # export every 100 ms instead of the batch processor's 5 s default, and give a loaded
    # machine 30 s per export before the exporter gives a batch up
    env = {"OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "30"}
    gw = start_gateway(gateway_config(tmp, sink, content=content), env=env)
    yield gw
    stop(gw.proc)


@pytest.fixture(scope="module")
def with_content(
    tmp_path_factory: pytest.TempPathFactory, sink: OtlpSink
) -> Iterator[RunningGateway]:
    yield from _gateway(tmp_path_factory, sink, content=True)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory, sink: OtlpSink) -> Iterator[RunningGateway]:
    yield from _gateway(tmp_path_factory, sink, content=False)


@dataclass
class Sent:
    """One call as the client saw it, and the trace it asked for."""

    trace_id: str
    model: str
    response_id: str
    input_tokens: int
    output_tokens: int
    text: str

    @staticmethod
    def headers(trace_id: str) -> dict[str, str]:
        return {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}


def new_trace() -> str:
    return secrets.token_hex(16)


def anthropic_call(gw: RunningGateway, model: str, *, stream: bool, user: str) -> Sent:
    client = anthropic.Anthropic(base_url=gw.url, api_key=gw.key, max_retries=0)
    trace = new_trace()
    kw: dict[str, Any] = {
        "model": model,
        "max_tokens": 128,
        "system": SYSTEM,
        "messages": [{"role": "user", "content": ASK}],
        "metadata": {"user_id": user},
        "extra_headers": Sent.headers(trace),
    }
    if stream:
        with client.messages.stream(**kw) as s:
            text = "".join(s.text_stream)
            msg = s.get_final_message()
    else:
        msg = client.messages.create(**kw)
        text = "".join(b.text for b in msg.content if b.type == "text")
    u = msg.usage
    cached = (u.cache_read_input_tokens or 0) + (u.cache_creation_input_tokens or 0)
    return Sent(trace, model, msg.id, u.input_tokens + cached, u.output_tokens, text)


def openai_call(gw: RunningGateway, model: str, *, stream: bool, user: str) -> Sent:
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.key, max_retries=0)
    trace = new_trace()
    kw: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": ASK}],
        "user": user,
        "extra_headers": Sent.headers(trace),
    }
    if stream:
        chunks = list(
            client.chat.completions.create(
                **kw, stream=True, stream_options={"include_usage": True}
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        usage = chunks[-1].usage
        assert usage is not None
        rid = chunks[0].id
    else:
        done = client.chat.completions.create(**kw)
        text = done.choices[0].message.content or ""
        assert done.usage is not None
        usage, rid = done.usage, done.id
    return Sent(trace, model, rid, usage.prompt_tokens, usage.completion_tokens, text)


def received(sink: OtlpSink, sent: list[Sent]) -> dict[str, list[ReceivedSpan]]:
    """Every span of each sent call's trace, once its call span has arrived."""
    want = {s.trace_id for s in sent}

    def ready(spans: list[ReceivedSpan]) -> bool:
        return want <= {s.trace_id for s in spans if s.kind == SERVER}

    spans = sink.wait_for(ready, timeout=60.0)  # bounded; the exporter sends every 100 ms
    return {t: [s for s in spans if s.trace_id == t] for t in want}


def call_span(spans: list[ReceivedSpan]) -> ReceivedSpan:
    (root,) = [s for s in spans if s.kind == SERVER]
    return root


def assert_conventions(root: ReceivedSpan, sent: Sent, provider: str) -> None:
    a = root.attributes
    assert root.name == f"chat {sent.model}"
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == sent.model
    assert a["gen_ai.provider.name"] == provider
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert a["gen_ai.usage.input_tokens"] == sent.input_tokens
    assert a["gen_ai.usage.output_tokens"] == sent.output_tokens
    assert a["gen_ai.usage.cache_read.input_tokens"] >= 0
    assert a["gen_ai.usage.cache_creation.input_tokens"] >= 0
    assert not [k for k in a if "cache_write" in k]
    assert root.resource["service.name"] == "bastion-otlp-test"


def test_content_spans_carry_the_conventions_names_and_scrubbed_messages(
    sink: OtlpSink, with_content: RunningGateway
) -> None:
    sent = {
        "anthropic": anthropic_call(with_content, "claude-t", stream=False, user=EMAIL),
        "anthropic-stream": anthropic_call(with_content, "claude-t", stream=True, user="user-42"),
        "openai": openai_call(with_content, "gpt-t", stream=False, user="user-42"),
        "openai-stream": openai_call(with_content, "gpt-t", stream=True, user=EMAIL),
    }
    for s in sent.values():
        assert CARD in s.text  # the client got the raw answer (pii_output: off)
    traces = received(sink, list(sent.values()))
    for label, s in sent.items():
        root = call_span(traces[s.trace_id])
        a = root.attributes
        assert_conventions(root, s, "anthropic" if label.startswith("anthropic") else "openai")
        # same format on both sides: the id the client got is the provider's
        assert a["gen_ai.response.id"] == s.response_id
        assert a["user.id"] in ("user-42", "[EMAIL_1]")
        msgs = orjson.loads(a["gen_ai.input.messages"])
        out = orjson.loads(a["gen_ai.output.messages"])
        assert msgs[-1]["role"] == "user"
        asked = msgs[-1]["parts"][0]["content"]
        assert asked.startswith("My email is [EMAIL_1].") and EMAIL not in asked
        assert out[0]["role"] == "assistant" and out[0]["finish_reason"] == "stop"
        answer = out[0]["parts"][0]["content"]
        assert answer.startswith("Your card [CARD_1] is on file")
        if label.startswith("anthropic"):
            assert orjson.loads(a["gen_ai.system_instructions"]) == [
                {"type": "text", "content": SYSTEM}
            ]
        else:  # a system message is part of the chat history in this API
            assert msgs[0] == {"role": "system", "parts": [{"type": "text", "content": SYSTEM}]}
            assert "gen_ai.system_instructions" not in a
        (attempt,) = [x for x in traces[s.trace_id] if x.kind == CLIENT]
        assert attempt.parent_span_id == root.span_id
        assert attempt.attributes["gen_ai.response.id"] == s.response_id
        assert attempt.attributes["user.id"] == a["user.id"]
        everything = repr([x.attributes for x in traces[s.trace_id]])
        assert EMAIL not in everything and "4111" not in everything
    assert call_span(traces[sent["anthropic"].trace_id]).attributes["user.id"] == "[EMAIL_1]"
    assert call_span(traces[sent["openai"].trace_id]).attributes["user.id"] == "user-42"
    # the operator's headers go with every export (how Langfuse and Phoenix authenticate)
    for spans in traces.values():
        for x in spans:
            assert x.headers["authorization"] == AUTH
            assert x.headers["x-langfuse-ingestion-version"] == "4"


@pytest.mark.parametrize(
    ("n", "api", "stream"),
    [(0, "anthropic", False), (1, "anthropic", True), (2, "openai", False), (3, "openai", True)],
)
def test_a_failover_span_names_the_fallbacks_answer_and_the_failed_attempt(
    sink: OtlpSink, with_content: RunningGateway, n: int, api: str, stream: bool
) -> None:
    call = anthropic_call if api == "anthropic" else openai_call
    s = call(with_content, f"failover-{n}", stream=stream, user="user-42")
    spans = received(sink, [s])[s.trace_id]
    root = call_span(spans)
    a = root.attributes
    assert a["bastion.failover"] is True
    assert a["gen_ai.provider.name"] == "openai"  # who answered
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert a["gen_ai.response.id"].startswith("chatcmpl-")  # the provider's id, not a translation
    assert a["gen_ai.usage.output_tokens"] == s.output_tokens
    first, second = sorted(
        (x for x in spans if x.kind == CLIENT), key=lambda x: x.attributes["bastion.attempt"]
    )
    assert first.attributes["gen_ai.provider.name"] == "anthropic"
    assert first.attributes["http.response.status_code"] == 529
    assert first.attributes["gen_ai.response.finish_reasons"] == ("error",)
    assert "error.type" in first.attributes and "gen_ai.response.id" not in first.attributes
    assert second.attributes["gen_ai.response.id"] == a["gen_ai.response.id"]
    assert second.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert "[CARD_1]" in a["gen_ai.output.messages"] and "4111" not in a["gen_ai.output.messages"]


def test_without_opt_in_spans_have_no_content_and_no_user(
    sink: OtlpSink, plain: RunningGateway
) -> None:
    sent = [
        anthropic_call(plain, "claude-t", stream=True, user=EMAIL),
        openai_call(plain, "gpt-t", stream=False, user=EMAIL),
        anthropic_call(plain, f"failover-{FAILOVERS - 1}", stream=False, user=EMAIL),
    ]
    traces = received(sink, sent)
    for s in sent:
        root = call_span(traces[s.trace_id])
        a = root.attributes
        assert a["gen_ai.response.finish_reasons"] == ("stop",)
        assert a["gen_ai.response.id"]
        for x in traces[s.trace_id]:
            assert not [k for k in x.attributes if k in CONTENT_KEYS or k.startswith("user.")]
            everything = repr(x.attributes)
            assert EMAIL not in everything and "4111" not in everything and "file" not in everything


NOTIFY_SCHEMA = {
    "type": "object",
    "properties": {"email": {"type": "string"}},
    "required": ["email"],
}


def anthropic_tool_call(gw: RunningGateway, *, stream: bool) -> tuple[str, str, dict[str, Any]]:
    client = anthropic.Anthropic(base_url=gw.url, api_key=gw.key, max_retries=0)
    trace = new_trace()
    kw: dict[str, Any] = {
        "model": "claude-t",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": "Notify the owner"}],
        "tools": [{"name": "notify", "description": "mail someone", "input_schema": NOTIFY_SCHEMA}],
        "extra_headers": Sent.headers(trace),
    }
    if stream:
        with client.messages.stream(**kw) as s:
            msg = s.get_final_message()
    else:
        msg = client.messages.create(**kw)
    (use,) = [b for b in msg.content if b.type == "tool_use"]
    assert msg.stop_reason == "tool_use"
    return trace, use.id, dict(use.input)


def openai_tool_call(gw: RunningGateway, *, stream: bool) -> tuple[str, str, dict[str, Any]]:
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.key, max_retries=0)
    trace = new_trace()
    kw: dict[str, Any] = {
        "model": "gpt-t",
        "messages": [{"role": "user", "content": "Notify the owner"}],
        "tools": [
            {"type": "function", "function": {"name": "notify", "parameters": NOTIFY_SCHEMA}}
        ],
        "extra_headers": Sent.headers(trace),
    }
    if stream:
        deltas = [
            tc
            for c in client.chat.completions.create(**kw, stream=True)
            if c.choices
            for tc in c.choices[0].delta.tool_calls or ()
        ]
        call_id = next(d.id for d in deltas if d.id)
        args = "".join(d.function.arguments or "" for d in deltas if d.function)
    else:
        done = client.chat.completions.create(**kw)
        calls = done.choices[0].message.tool_calls or []
        assert len(calls) == 1
        tc = calls[0]
        assert tc.type == "function"
        call_id, args = tc.id, tc.function.arguments
    return trace, call_id, orjson.loads(args)


@pytest.mark.parametrize("api", ["anthropic", "openai"])
@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_call_answer_is_an_output_tool_call_part_with_scrubbed_arguments(
    sink: OtlpSink, with_content: RunningGateway, api: str, stream: bool
) -> None:
    call = anthropic_tool_call if api == "anthropic" else openai_tool_call
    trace, call_id, args = call(with_content, stream=stream)
    assert args == {"email": "user@example.com"}  # what the client got, as the model said it
    spans = sink.wait_for(
        lambda got: any(s.trace_id == trace and s.kind == SERVER for s in got), timeout=60.0
    )
    a = call_span([s for s in spans if s.trace_id == trace]).attributes
    assert a["gen_ai.response.finish_reasons"] == ("tool_call",)
    (out,) = orjson.loads(a["gen_ai.output.messages"])
    assert out == {
        "role": "assistant",
        "parts": [
            {
                "type": "tool_call",
                "id": call_id,
                "name": "notify",
                "arguments": {"email": "[EMAIL_1]"},
            }
        ],
        "finish_reason": "tool_call",
    }


def test_every_streamed_call_reaches_the_receiver_when_clients_hang_up_at_the_end(
    sink: OtlpSink, with_content: RunningGateway
) -> None:
    # the SDK closes the connection once it read [DONE]: the call's spans must not be lost
    # with the request (they once were for about a third of such calls when content was on)
    sent = [openai_call(with_content, "gpt-t", stream=True, user="user-42") for _ in range(20)]
    traces = received(sink, sent)
    for s in sent:
        assert call_span(traces[s.trace_id]).attributes["gen_ai.response.id"] == s.response_id

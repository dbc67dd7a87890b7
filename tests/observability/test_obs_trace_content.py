"""Trace content on request: the prompt and answer as the GenAI conventions' messages, scrubbed and
bounded, and the answer's fields read alike from a stream and from a whole body."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tests.observability._trace_support import (
    ANTHROPIC_BODY,
    CARD,
    CONTENT,
    content_tracing,
    make_call,
    root_attrs,
)

from bastion.call import ToolCallOut
from bastion.observability import tracing as tracing_module
from bastion.observability.genai_content import ContentCapture, fit
from bastion.observability.tracing import Tracing, TracingGuard
from bastion.providers.base import Format
from bastion.providers.sse import SSEEvent
from bastion.safety.pii import Scrubber, ScrubberConfig
from bastion.watch import StreamWatcher, observe_body


@pytest.fixture(scope="module")
def scrubber() -> Scrubber:
    return Scrubber(ScrubberConfig())


# -- content on request: scrubbed, in the conventions' parts structure, bounded ----------------


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

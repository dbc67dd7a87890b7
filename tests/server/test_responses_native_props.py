"""Properties of the native Responses wire (``bastion.responses.wire``): nothing the guards
judged or rewrote in the chat view is lost on the way to an ``openai`` deployment, and nothing
of its answer is lost on the way back to the guards, however the stream is split."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.errors import InvalidRequest
from bastion.providers.sse import SSEDecoder, encode_event
from bastion.providers.translate._stream_openai import OpenAIStreamParser
from bastion.providers.translate.model import (
    StreamFinish,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    UsageUpdate,
)
from bastion.responses.request import to_chat
from bastion.responses.response import from_chat
from bastion.responses.stream import ResponsesEmitter
from bastion.responses.wire import (
    ChatFromResponses,
    chat_from_response,
    extras_of,
    request_from_chat,
)

text = st.text(st.characters(codec="utf-8"), max_size=30)
name = st.from_regex(r"[a-z][a-z_]{0,11}", fullmatch=True)
call_id = st.from_regex(r"call_[A-Za-z0-9]{1,12}", fullmatch=True)


@st.composite
def responses_bodies(draw: st.DrawFn) -> dict[str, Any]:
    items: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["user", "user_parts", "assistant", "system", "call"]))
        if kind == "user":
            items.append({"role": "user", "content": draw(text)})
        elif kind == "user_parts":
            parts: list[dict[str, Any]] = [
                {"type": "input_text", "text": draw(text)} for _ in range(draw(st.integers(1, 3)))
            ]
            if draw(st.booleans()):
                parts.append(
                    {
                        "type": "input_image",
                        "image_url": "https://example.com/" + draw(name) + ".png",
                        "detail": draw(st.sampled_from(["auto", "low", "high"])),
                    }
                )
            items.append({"role": "user", "content": parts})
        elif kind == "assistant":
            items.append(
                {"role": "assistant", "content": [{"type": "output_text", "text": draw(text)}]}
            )
        elif kind == "system":
            items.append(
                {"role": draw(st.sampled_from(["system", "developer"])), "content": draw(text)}
            )
        else:
            cid = draw(call_id)
            items.append(
                {"type": "function_call", "call_id": cid, "name": draw(name), "arguments": "{}"}
            )
            items.append({"type": "function_call_output", "call_id": cid, "output": draw(text)})
    items.append({"role": "user", "content": "last " + draw(text)})
    body: dict[str, Any] = {"model": "gpt-4.1", "input": items}
    if draw(st.booleans()):
        body["instructions"] = draw(text)
    if draw(st.booleans()):
        body["max_output_tokens"] = draw(st.integers(1, 100_000))
    if draw(st.booleans()):
        body["tools"] = [{"type": "function", "name": draw(name), "parameters": {"type": "object"}}]
        body["tool_choice"] = draw(st.sampled_from(["auto", "none", "required"]))
    if draw(st.booleans()):
        body["temperature"] = draw(st.floats(0, 2))
    if draw(st.booleans()):
        body["text"] = {"format": {"type": "json_object"}, "verbosity": "low"}
    if draw(st.booleans()):
        body["metadata"] = {"k": draw(text)}
    if draw(st.booleans()):
        body["max_tool_calls"] = draw(st.integers(1, 50))
    if draw(st.booleans()):
        body["include"] = ["message.output_text.logprobs"]
    if draw(st.booleans()):
        body["stream"] = True
    return body


def _rewrite(chat: dict[str, Any], f: Any) -> dict[str, Any]:
    """What a guard may do to the chat view: rewrite every text it holds."""

    def content(c: Any) -> Any:
        if isinstance(c, str):
            return f(c)
        if isinstance(c, list):
            return [{**p, "text": f(p["text"])} if p.get("type") == "text" else p for p in c]
        return c

    return {
        **chat,
        "messages": [{**m, "content": content(m.get("content"))} for m in chat["messages"]],
    }


@settings(max_examples=150, deadline=None)
@given(responses_bodies(), st.sampled_from([str.upper, lambda s: s.replace("a", "<EMAIL_1>")]))
def test_the_guarded_chat_view_is_exactly_what_goes_upstream(body: dict[str, Any], f: Any) -> None:
    """Read back as the API reads it, the native request is the guarded chat view itself: every
    rewrite (PII placeholders, say) is in the items, nothing else changed."""
    guarded = _rewrite(to_chat(body).chat, f)
    sent = request_from_chat(guarded, extras_of(body))
    assert sent["store"] is False
    assert sent.get("metadata") == body.get("metadata")
    assert sent.get("max_tool_calls") == body.get("max_tool_calls")
    assert "include" not in sent  # asks for output the chat view cannot carry back
    again = to_chat(orjson.loads(orjson.dumps(sent))).chat
    for chat in (again, guarded):
        chat.pop("stream_options", None)  # Responses streams always carry usage
    assert again == guarded


@st.composite
def chat_answers(draw: st.DrawFn) -> dict[str, Any]:
    pieces = draw(st.lists(text.filter(bool), max_size=5))
    calls = [
        {
            "id": draw(call_id),
            "name": draw(name),
            "args": draw(st.lists(st.sampled_from(['{"a"', ":1", ',"b":"x"', "}"]), max_size=4)),
        }
        for _ in range(draw(st.integers(0 if pieces else 1, 3)))
    ]
    finish = "tool_calls" if calls else draw(st.sampled_from(["stop", "length", "content_filter"]))
    return {
        "pieces": pieces,
        "calls": calls,
        "finish": finish,
        "usage": {
            "prompt_tokens": draw(st.integers(1, 9999)),
            "completion_tokens": draw(st.integers(1, 9999)),
        },
        "cached": draw(st.integers(0, 1)),
    }


def _chat_stream(a: dict[str, Any]) -> bytes:
    head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4.1"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return bytes(encode_event(orjson.dumps({**head, "choices": [choice]})))

    out = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({"content": p}) for p in a["pieces"]]
    for i, c in enumerate(a["calls"]):
        fn = {"name": c["name"], "arguments": ""}
        out.append(
            chunk({"tool_calls": [{"index": i, "id": c["id"], "type": "function", "function": fn}]})
        )
        out += [
            chunk({"tool_calls": [{"index": i, "function": {"arguments": p}}]}) for p in c["args"]
        ]
    out.append(chunk({}, a["finish"]))
    usage = {**a["usage"], "prompt_tokens_details": {"cached_tokens": a["cached"]}}
    out.append(encode_event(orjson.dumps({**head, "choices": [], "usage": usage})))
    out.append(encode_event(b"[DONE]"))
    return b"".join(out)


def _read_chat(stream: bytes) -> tuple[str, list[tuple[str, str, str]], Any, Any]:
    parser, decoder = OpenAIStreamParser(), SSEDecoder()
    text_out, calls, stop, usage = "", {}, None, None
    for ev in decoder.feed(stream):
        for p in parser.parse(ev):
            if isinstance(p, TextDelta):
                text_out += p.text
            elif isinstance(p, ToolCallStart):
                calls[p.key] = [p.id, p.name, ""]
            elif isinstance(p, ToolCallDelta):
                calls[p.key][2] += p.arguments
            elif isinstance(p, StreamFinish):
                stop = p.stop_reason
            elif isinstance(p, UsageUpdate):
                usage = p.usage
    return text_out, [tuple(c) for c in calls.values()], stop, usage


@settings(max_examples=150, deadline=None)
@given(chat_answers(), st.lists(st.integers(1, 400), min_size=1, max_size=40))
def test_a_responses_stream_reads_back_as_the_same_chat_answer(
    a: dict[str, Any], cuts: list[int]
) -> None:
    """An answer sent as Responses events (what the provider streams) is, to the guards, the
    answer it stands for: the same text, tool calls, stop and usage, at any split."""
    chat = _chat_stream(a)
    emitter = ResponsesEmitter("resp_x", {"model": "gpt-4.1"}, created_at=1)
    upstream = b"".join(emitter.feed(chat)) + b"".join(emitter.finish())
    conv, got, at = ChatFromResponses(), b"", 0
    for n in cuts:
        got += b"".join(conv.feed(upstream[at : at + n]))
        at += n
    got += b"".join(conv.feed(upstream[at:]))
    assert got.endswith(b"data: [DONE]\n\n")
    assert _read_chat(got) == _read_chat(chat)


@settings(max_examples=100, deadline=None)
@given(chat_answers())
def test_a_response_body_reads_back_as_the_same_chat_completion(a: dict[str, Any]) -> None:
    message: dict[str, Any] = {"role": "assistant", "content": "".join(a["pieces"]) or None}
    if a["calls"]:
        message["tool_calls"] = [
            {
                "id": c["id"],
                "type": "function",
                "function": {"name": c["name"], "arguments": "".join(c["args"])},
            }
            for c in a["calls"]
        ]
    usage = {**a["usage"], "prompt_tokens_details": {"cached_tokens": a["cached"]}}
    chat = {
        "id": "c",
        "created": 1,
        "model": "m",
        "choices": [{"message": message, "finish_reason": a["finish"]}],
        "usage": usage,
    }
    back = chat_from_response(from_chat(chat, "resp_x", {"model": "m"}, now=1))
    assert back is not None
    [choice] = back["choices"]
    assert choice["finish_reason"] == a["finish"]
    assert (choice["message"]["content"] or None) == message["content"]
    assert choice["message"].get("tool_calls") == message.get("tool_calls")
    u = back["usage"]
    assert (u["prompt_tokens"], u["completion_tokens"]) == (
        a["usage"]["prompt_tokens"],
        a["usage"]["completion_tokens"],
    )
    assert u["prompt_tokens_details"]["cached_tokens"] == a["cached"]


def test_a_failed_response_is_not_an_answer() -> None:
    failed = {"id": "resp_1", "status": "failed", "error": {"code": "server_error", "message": "x"}}
    assert chat_from_response(failed) is None
    conv = ChatFromResponses()
    out = b"".join(
        conv.feed(encode_event(orjson.dumps({"type": "response.failed", "response": failed})))
    )
    assert orjson.loads(out.removeprefix(b"data: ").strip())["error"]["message"] == "x"


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.booleans(), st.text(max_size=5), st.floats(), st.integers(max_value=0)))
def test_a_wrong_max_tool_calls_is_refused_before_sending(value: Any) -> None:
    with pytest.raises(InvalidRequest) as ei:
        extras_of({"model": "m", "input": "x", "max_tool_calls": value})
    assert ei.value.param == "max_tool_calls"

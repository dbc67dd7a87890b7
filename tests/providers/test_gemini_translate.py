"""Gemini translation, in the matrix of every pair of formats (OpenAI, Anthropic, Gemini):
requests, answers and streams carried from each format to each other one keep their meaning,
and every Gemini body and chunk written is one Google's SDK (google-genai, extra fields
forbidden) accepts; every OpenAI/Anthropic one, the SDK types of those. Hypothesis properties:
any OpenAI tool-call conversation survives OpenAI -> Gemini -> OpenAI (texts, tool names,
arguments and the id pairing of calls and results), and any Gemini stream, split anywhere,
reassembles in the OpenAI and Anthropic SDKs to what its unary answer says.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import orjson
import pytest
from google.genai import types as gtypes
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk
from tests.providers.test_translate_request import assert_valid_anthropic, assert_valid_openai
from tests.providers.test_translate_stream import (
    anthropic_events,
    anthropic_final,
    openai_chunks,
    run,
)

from bastion.engine import UpstreamStatusError, render_error
from bastion.providers import gemini
from bastion.providers.base import Format
from bastion.providers.foreign import error_headers
from bastion.providers.translate import (
    StreamTranslator,
    error_to,
    parse_request,
    parse_response,
    request_to,
    response_to,
)
from bastion.providers.translate.model import (
    Message,
    Request,
    Response,
    Role,
    StopReason,
    TextPart,
    Tool,
    ToolCallPart,
    ToolChoice,
    ToolChoiceMode,
    ToolResultPart,
    Usage,
)

ANT, OAI, GEM = Format.ANTHROPIC, Format.OPENAI, Format.GEMINI
FORMATS = (ANT, OAI, GEM)
PAIRS = [(a, b) for a, b in itertools.permutations(FORMATS, 2)]
_GEMINI_REQUEST_FIELDS = {
    "contents",
    "systemInstruction",
    "tools",
    "toolConfig",
    "generationConfig",
}


def assert_valid_gemini_request(body: dict[str, Any]) -> None:
    """Every field is one the API knows, each valid in Google's SDK types (extra forbidden)."""
    sent = gemini.body(body)
    assert set(sent) <= _GEMINI_REQUEST_FIELDS
    for content in sent["contents"]:
        gtypes.Content.model_validate(content)
    if "systemInstruction" in sent:
        gtypes.Content.model_validate(sent["systemInstruction"])
    for tool in sent.get("tools", []):
        gtypes.Tool.model_validate(tool)
    if "toolConfig" in sent:
        gtypes.ToolConfig.model_validate(sent["toolConfig"])
    if "generationConfig" in sent:
        gtypes.GenerationConfig.model_validate(sent["generationConfig"])


def check(fmt: Format, body: dict[str, Any]) -> dict[str, Any]:
    if fmt is ANT:
        assert_valid_anthropic(body)
    elif fmt is OAI:
        assert_valid_openai(body)
    else:
        assert_valid_gemini_request(body)
    return body


WEATHER = Tool(
    "get_weather",
    "Weather for a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
CONVERSATIONS = {
    "text": Request(
        messages=(Message(Role.USER, (TextPart("hi"),)),),
        system="Be brief.",
        max_tokens=100,
        temperature=0.5,
        top_p=0.9,
        stop=("END",),
    ),
    "multi-turn": Request(
        messages=(
            Message(Role.USER, (TextPart("hi"),)),
            Message(Role.ASSISTANT, (TextPart("hello"),)),
            Message(Role.USER, (TextPart("bye"),)),
        ),
        max_tokens=50,
    ),
    "tool round trip": Request(
        messages=(
            Message(Role.USER, (TextPart("weather in Paris and Rome?"),)),
            Message(
                Role.ASSISTANT,
                (
                    TextPart("Checking."),
                    ToolCallPart("call_a1", "get_weather", {"city": "Paris"}),
                    ToolCallPart("call_b2", "get_weather", {"city": "Rome"}),
                ),
            ),
            Message(
                Role.USER,
                (
                    ToolResultPart("call_a1", (TextPart("18C"),)),
                    ToolResultPart("call_b2", (TextPart("no data"),), is_error=True),
                ),
            ),
        ),
        tools=(WEATHER,),
        tool_choice=ToolChoice(ToolChoiceMode.AUTO),
        max_tokens=200,
    ),
    "named tool": Request(
        messages=(Message(Role.USER, (TextPart("go"),)),),
        tools=(WEATHER,),
        tool_choice=ToolChoice(ToolChoiceMode.TOOL, "get_weather"),
        max_tokens=10,
    ),
}


def emit(fmt: Format, req: Request) -> dict[str, Any]:
    from bastion.providers.translate import emit_request

    return emit_request(fmt, req, "m")


def core(req: Request) -> dict[str, Any]:
    """What every format carries: turns (merged by role), system, tools, choice, limits."""
    turns: list[tuple[str, list[Any]]] = []
    for m in req.messages:
        parts: list[Any] = []
        for p in m.parts:
            if isinstance(p, TextPart):
                parts.append(("text", p.text))
            elif isinstance(p, ToolCallPart):
                parts.append(("call", p.id, p.name, p.arguments))
            elif isinstance(p, ToolResultPart):
                text = "".join(t.text for t in p.content if isinstance(t, TextPart))
                parts.append(("result", p.tool_call_id, text, p.is_error))
        if turns and turns[-1][0] == m.role.value:
            turns[-1][1].extend(parts)
        elif parts:
            turns.append((m.role.value, parts))
    return {
        "turns": [(r, sorted(ps, key=lambda p: p[0] != "result")) for r, ps in turns],
        "system": req.system,
        "tools": [(t.name, t.description, t.parameters) for t in req.tools],
        "choice": req.tool_choice,
        "max_tokens": req.max_tokens,
        "stop": req.stop,
        "temperature": req.temperature,
        "top_p": req.top_p,
    }


@pytest.mark.parametrize("name", list(CONVERSATIONS))
@pytest.mark.parametrize(("src", "dst"), PAIRS, ids=[f"{a}-to-{b}" for a, b in PAIRS])
def test_request_matrix_every_pair_keeps_the_conversation(
    src: Format, dst: Format, name: str
) -> None:
    req = CONVERSATIONS[name]
    body = check(src, emit(src, req))
    out = check(dst, request_to(dst, body, source=src, model="target-model"))
    assert core(parse_request(dst, out)) == core(parse_request(src, body))


RESPONSES = {
    "text": Response(
        "r1", "m", (TextPart("Hello there."),), StopReason.END_TURN, usage=Usage(10, 5)
    ),
    "tools": Response(
        "r2",
        "m",
        (TextPart("Checking."), ToolCallPart("call_x", "get_weather", {"city": "Paris"})),
        StopReason.TOOL_USE,
        usage=Usage(20, 7, cache_read=4),
    ),
    "length": Response("r3", "m", (TextPart("cut"),), StopReason.MAX_TOKENS, usage=Usage(3, 1)),
    "refusal": Response("r4", "m", (), StopReason.REFUSAL, usage=Usage(3, 0)),
}


def emit_resp(fmt: Format, resp: Response) -> dict[str, Any]:
    from bastion.providers.translate import emit_response

    body = emit_response(fmt, resp, "m")
    if fmt is GEM:
        gtypes.GenerateContentResponse.model_validate(body)
    return body


def resp_core(resp: Response) -> tuple[Any, ...]:
    text = "".join(p.text for p in resp.parts if isinstance(p, TextPart))
    calls = [(p.name, p.arguments) for p in resp.parts if isinstance(p, ToolCallPart)]
    return text, calls, resp.stop_reason, resp.usage


@pytest.mark.parametrize("name", list(RESPONSES))
@pytest.mark.parametrize(("src", "dst"), PAIRS, ids=[f"{a}-to-{b}" for a, b in PAIRS])
def test_response_matrix_every_pair_keeps_the_answer(src: Format, dst: Format, name: str) -> None:
    body = emit_resp(src, RESPONSES[name])
    out = response_to(dst, body, source=src)
    if dst is GEM:
        gtypes.GenerateContentResponse.model_validate(out)
    assert resp_core(parse_response(dst, out)) == resp_core(parse_response(src, body))


def gemini_stream(resp: Response, pieces: int = 3) -> bytes:
    """A Gemini SSE stream of ``resp`` as the API sends one: text in pieces, calls whole on the
    last chunk with the finish reason and the usage; ``\\r\\n\\r\\n`` between events."""
    from bastion.providers.translate._gemini import STOP_TO_GEMINI, emit_usage

    text = "".join(p.text for p in resp.parts if isinstance(p, TextPart))
    step = max(1, -(-len(text) // pieces))
    chunks: list[dict[str, Any]] = []
    for i in range(0, len(text), step):
        part = {"text": text[i : i + step]}
        cand = {"content": {"role": "model", "parts": [part]}, "index": 0}
        chunks.append({"candidates": [cand], "modelVersion": "m", "responseId": resp.id})
    calls = [
        {"functionCall": {"name": p.name, "args": p.arguments}}
        for p in resp.parts
        if isinstance(p, ToolCallPart)
    ]
    last = {
        "content": {"role": "model", "parts": calls or [{"text": ""}]},
        "finishReason": STOP_TO_GEMINI[resp.stop_reason or StopReason.END_TURN],
        "index": 0,
    }
    chunks.append(
        {
            "candidates": [last],
            "usageMetadata": emit_usage(resp.usage),
            "modelVersion": "m",
            "responseId": resp.id,
        }
    )
    for c in chunks:
        gtypes.GenerateContentResponse.model_validate(c)
    return b"".join(b"data: " + orjson.dumps(c) + b"\r\n\r\n" for c in chunks)


def stream_core_openai(out: list[bytes]) -> tuple[Any, ...]:
    chunks, done = openai_chunks(out)
    assert done
    state = ChatCompletionStreamState()  # its snapshot: get_final_completion raises on length
    for c in chunks:
        list(state.handle_chunk(ChatCompletionChunk.model_validate(c)))
    final = state.current_completion_snapshot.choices[0]
    calls = [
        (c.function.name, json.loads(c.function.arguments)) for c in final.message.tool_calls or []
    ]
    return final.message.content or "", calls, final.finish_reason, chunks[-1]["usage"]


@pytest.mark.parametrize("split", [1, 7, 10_000])
@pytest.mark.parametrize("name", list(RESPONSES))
def test_gemini_stream_reassembles_in_both_sdks_like_its_unary_answer(
    name: str, split: int
) -> None:
    resp = RESPONSES[name]
    stream = gemini_stream(resp)
    text, calls, stop, usage = resp_core(resp)
    tr = StreamTranslator(GEM, OAI, model=None, include_usage=True)
    got_text, got_calls, finish, got_usage = stream_core_openai(run(tr, stream, split))
    assert (got_text, got_calls) == (text, calls)
    assert (
        finish
        == {
            "end_turn": "stop",
            "tool_use": "tool_calls",
            "max_tokens": "length",
            "refusal": "content_filter",
        }[stop]
    )
    assert got_usage["completion_tokens"] == usage.output_tokens
    assert tr.finished and tr.usage == usage
    tr = StreamTranslator(GEM, ANT, model=None, include_usage=True)
    msg = anthropic_final(anthropic_events(run(tr, stream, split)))
    assert "".join(b.text for b in msg.content if b.type == "text") == text
    assert [(b.name, b.input) for b in msg.content if b.type == "tool_use"] == calls
    assert msg.stop_reason == stop.value and msg.usage.output_tokens == usage.output_tokens


@pytest.mark.parametrize("src", [ANT, OAI])
def test_client_streams_become_gemini_chunks_googles_sdk_reads(src: Format) -> None:
    """The other direction of the stream matrix: OpenAI/Anthropic -> Gemini SSE."""
    resp = RESPONSES["tools"]
    # go through Gemini first to get a source stream of ``src`` from a real translator
    middle = run(StreamTranslator(GEM, src, model=None, include_usage=True), gemini_stream(resp))
    out = run(StreamTranslator(src, GEM, model=None, include_usage=True), b"".join(middle))
    events = [e for e in b"".join(out).split(b"\n\n") if e]
    objs = [gtypes.GenerateContentResponse.model_validate(json.loads(e[6:])) for e in events]
    text = "".join(p.text or "" for o in objs for p in o.candidates[0].content.parts)  # type: ignore[index,union-attr]
    calls = [(fc.name, fc.args) for o in objs for fc in o.function_calls or []]
    assert (text, calls) == resp_core(resp)[:2]
    assert objs[-1].candidates[0].finish_reason == gtypes.FinishReason.STOP  # type: ignore[index]
    assert objs[-1].usage_metadata.candidates_token_count == resp.usage.output_tokens  # type: ignore[union-attr]


def test_a_gemini_stream_without_a_finish_is_cut_not_complete() -> None:
    stream = gemini_stream(RESPONSES["text"]).split(b"\r\n\r\n")[0] + b"\r\n\r\n"
    tr = StreamTranslator(GEM, OAI, model=None, include_usage=True)
    chunks, done = openai_chunks(run(tr, stream))
    assert not done and not tr.finished
    assert chunks[-1]["error"]["type"] == "server_error"


@pytest.mark.parametrize(
    ("status", "rpc", "oai", "ant"),
    [
        (429, "RESOURCE_EXHAUSTED", (429, "rate_limit_exceeded"), (429, "rate_limit_error")),
        (500, "INTERNAL", (500, None), (500, "api_error")),
        (503, "UNAVAILABLE", (503, "overloaded"), (529, "overloaded_error")),
        (504, "DEADLINE_EXCEEDED", (504, "upstream_timeout"), (504, "timeout_error")),
        (404, "NOT_FOUND", (404, None), (404, "not_found_error")),
        (403, "PERMISSION_DENIED", (403, "permission_denied"), (403, "permission_error")),
    ],
)
def test_google_errors_read_in_each_client_format(
    status: int, rpc: str, oai: tuple[int, Any], ant: tuple[int, str]
) -> None:
    body = orjson.dumps({"error": {"code": status, "message": "said by Google", "status": rpc}})
    got_status, got = error_to(OAI, status, body, source=GEM)
    assert (got_status, got["error"]["code"]) == oai and got["error"]["message"] == "said by Google"
    got_status, got = error_to(ANT, status, body, source=GEM)
    assert (got_status, got["error"]["type"]) == ant


def test_token_count_overflow_is_context_length_in_each_format() -> None:
    msg = "The input token count (1048580) exceeds the maximum number of tokens allowed (1048576)."
    body = orjson.dumps({"error": {"code": 400, "message": msg, "status": "INVALID_ARGUMENT"}})
    _, oai = error_to(OAI, 400, body, source=GEM)
    assert oai["error"]["code"] == "context_length_exceeded"
    _, ant = error_to(ANT, 400, body, source=GEM)
    assert ant["error"]["message"].startswith("prompt is too long")


def test_a_rejected_gemini_key_is_the_gateways_502_not_the_callers_401() -> None:
    info = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}
    err = {
        "code": 400,
        "message": "API key not valid.",
        "status": "INVALID_ARGUMENT",
        "details": [info],
    }
    exc = UpstreamStatusError(400, orjson.dumps({"error": err}), GEM, {})
    for client in (OAI, ANT):
        status, _, body = render_error(exc, client)
        assert status == 502 and b"credentials" in body


# --- properties -------------------------------------------------------------------------

_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-1000, 1000), st.text(max_size=8))
_args = st.dictionaries(
    st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True),
    st.recursive(
        _json_leaf,
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
        max_leaves=6,
    ),
    max_size=4,
)
_names = st.sampled_from(["get_weather", "lookup", "send_mail"])
_text = st.text(min_size=1, max_size=20).filter(lambda s: s.strip() != "")


@st.composite
def openai_conversations(draw: st.DrawFn) -> dict[str, Any]:
    """User turns, assistant turns with text and/or calls, and a tool message per call."""
    messages: list[dict[str, Any]] = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(_text)})
    ids = itertools.count()
    for _ in range(draw(st.integers(1, 3))):
        messages.append({"role": "user", "content": draw(_text)})
        n_calls = draw(st.integers(0, 3))
        say = draw(st.one_of(st.none(), _text))
        if n_calls == 0 and say is None:
            continue
        calls = [
            {
                "id": f"call_{next(ids)}{draw(st.from_regex(r'[A-Za-z0-9]{0,6}', fullmatch=True))}",
                "type": "function",
                "function": {"name": draw(_names), "arguments": orjson.dumps(draw(_args)).decode()},
            }
            for _ in range(n_calls)
        ]
        turn: dict[str, Any] = {"role": "assistant", "content": say}
        if calls:
            turn["tool_calls"] = calls
        messages.append(turn)
        for c in calls:
            error = draw(st.booleans())
            content = ("[tool error] " if error else "") + draw(_text)
            messages.append({"role": "tool", "tool_call_id": c["id"], "content": content})
    tools = [
        {"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
        for n in ("get_weather", "lookup", "send_mail")
    ]
    return {
        "model": "m",
        "messages": messages,
        "tools": tools,
        "max_completion_tokens": draw(st.integers(1, 4096)),
    }


@settings(max_examples=150, deadline=None)
@given(openai_conversations())
def test_any_openai_tool_conversation_survives_gemini_and_back(body: dict[str, Any]) -> None:
    there = check(GEM, request_to(GEM, body, source=OAI, model="gemini-2.5-flash"))
    back = check(OAI, request_to(OAI, there, source=GEM, model="m"))
    assert core(parse_request(OAI, back)) == core(parse_request(OAI, body))
    # every function response names the function of the call it answers, by the same id
    calls = {
        p["functionCall"]["id"]: p["functionCall"]["name"]
        for c in there["contents"]
        for p in c["parts"]
        if "functionCall" in p
    }
    for c in there["contents"]:
        for p in c["parts"]:
            if "functionResponse" in p:
                fr = p["functionResponse"]
                assert calls[fr["id"]] == fr["name"]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.one_of(_text.map(TextPart), st.tuples(_names, _args)), max_size=5),
    st.integers(0, 10_000),
    st.integers(0, 10_000),
    st.integers(0, 1000),
    st.sampled_from(["STOP", "MAX_TOKENS", "SAFETY"]),
)
def test_any_gemini_answer_reads_the_same_in_both_client_formats(
    items: list[Any], prompt: int, out: int, cached: int, finish: str
) -> None:
    parts = [
        {"text": i.text}
        if isinstance(i, TextPart)
        else {"functionCall": {"name": i[0], "args": i[1]}}
        for i in items
    ]
    usage = {
        "promptTokenCount": prompt + cached,
        "candidatesTokenCount": out,
        "cachedContentTokenCount": cached,
    }
    body = {
        "candidates": [
            {"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": 0}
        ],
        "usageMetadata": usage,
        "responseId": "rid",
    }
    want = parse_response(GEM, body)
    for client in (OAI, ANT):
        got = parse_response(client, response_to(client, body, source=GEM))
        assert resp_core(got)[:3] == resp_core(want)[:3]
        assert got.usage == Usage(prompt, out, cache_read=cached)
        ids = [p.id for p in got.parts if isinstance(p, ToolCallPart)]
        assert len(set(ids)) == len(ids)  # made-up call ids never collide


@pytest.mark.parametrize(
    ("details", "want"),
    [
        ([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}], "37"),
        ([{"@type": "x"}, {"retryDelay": "1.5s"}], "1.5"),
        ([{"retryDelay": "soon"}], None),
        ([], None),
    ],
)
def test_gemini_retry_delay_in_the_body_becomes_retry_after(details: Any, want: str | None) -> None:
    body = orjson.dumps(
        {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": details}}
    )
    assert error_headers(GEM, {}, body).get("retry-after") == want
    assert "retry-after" not in error_headers(OAI, {}, body)  # only Gemini speaks this way
    assert error_headers(GEM, {"retry-after": "3"}, body)["retry-after"] == "3"

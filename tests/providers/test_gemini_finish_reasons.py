"""Every Gemini ``finishReason`` reaches a client as what it means, never a failure as a clean
finish: ``STOP``/``MAX_TOKENS`` as stop/length, the content filters (and ``LANGUAGE``) as
``content_filter``/``refusal``, and the model's failures and any reason not documented as an
error: a 502 unary (``GeminiTransport``), an error event streamed (the stream parser).

The expected classes are written here from Google's documented ``Candidate.FinishReason``
enum (ai.google.dev/api/generate-content#FinishReason), not read from the code's table.
The simulator's ``x-sim-gemini-finish-reason`` is checked with Google's own SDK types.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from google.genai import types as gtypes
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.errors import UpstreamTimeout
from bastion.providers.base import BufferedResponse, Format, UpstreamRequest, UpstreamResponse
from bastion.providers.gemini import GeminiTransport
from bastion.providers.sim.core import Simulator
from bastion.providers.sim.gemini_wire import FINISH_REASON_HEADER
from bastion.providers.sse import SSEDecoder
from bastion.providers.translate import StreamTranslator
from bastion.providers.translate._gemini import failure, parse_response
from bastion.providers.translate.model import StopReason

CLEAN = {"STOP": ("stop", "end_turn"), "MAX_TOKENS": ("length", "max_tokens")}
FILTERS = [
    "SAFETY",
    "RECITATION",
    "LANGUAGE",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "SPII",
    "IMAGE_SAFETY",
    "IMAGE_PROHIBITED_CONTENT",
    "IMAGE_RECITATION",
    "MODEL_ARMOR",
]
FAILURES = [
    "MALFORMED_FUNCTION_CALL",
    "UNEXPECTED_TOOL_CALL",
    "TOO_MANY_TOOL_CALLS",
    "MALFORMED_RESPONSE",
    "MISSING_THOUGHT_SIGNATURE",
    "NO_IMAGE",
    "IMAGE_OTHER",
    "OTHER",
]
DOCUMENTED = [*CLEAN, *FILTERS, *FAILURES]
UNDOCUMENTED = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ_", min_size=1, max_size=30).filter(
    lambda r: r not in DOCUMENTED and r != "FINISH_REASON_UNSPECIFIED"
)
REASONS = st.one_of(st.sampled_from(DOCUMENTED), UNDOCUMENTED)
MODEL = "gemini-2.5-flash"


def _expected(reason: str) -> str:
    return "clean" if reason in CLEAN else "filter" if reason in FILTERS else "error"


def _answer(reason: str, text: str = "Hello there") -> dict[str, Any]:
    parts = [{"text": text}] if text else []
    cand = {"content": {"role": "model", "parts": parts}, "finishReason": reason, "index": 0}
    usage = {"promptTokenCount": 5, "candidatesTokenCount": 2, "totalTokenCount": 7}
    return {"candidates": [cand], "usageMetadata": usage, "modelVersion": MODEL, "responseId": "r"}


def _stream(reason: str, pieces: list[str]) -> bytes:
    """Gemini SSE: text pieces, then the finishing chunk (no text) with the usage."""
    chunks = [
        {"candidates": [{"content": {"role": "model", "parts": [{"text": p}]}, "index": 0}]}
        for p in pieces
    ]
    chunks.append(_answer(reason, text=""))
    return b"".join(b"data: " + orjson.dumps(c) + b"\r\n\r\n" for c in chunks)


def _translate(raw: bytes, target: Format) -> list[dict[str, Any]]:
    tr = StreamTranslator(Format.GEMINI, target, model=None, include_usage=True)
    out: list[bytes] = []
    for ev in SSEDecoder().feed(raw):
        out += tr.feed(ev)
    out += tr.finish()
    events = []
    for ev in SSEDecoder().feed(b"".join(out)):
        if ev.data and ev.data != b"[DONE]":
            events.append(orjson.loads(ev.data))
    return events


@settings(max_examples=60, deadline=None)
@given(reason=REASONS, pieces=st.lists(st.text(min_size=1, max_size=8), max_size=3))
def test_a_streamed_finish_reason_reads_as_what_it_means(reason: str, pieces: list[str]) -> None:
    raw = _stream(reason, pieces)
    chat = _translate(raw, Format.OPENAI)
    msgs = _translate(raw, Format.ANTHROPIC)
    finishes = [
        c["finish_reason"] for e in chat for c in e.get("choices", ()) if c["finish_reason"]
    ]
    stops = [e["delta"]["stop_reason"] for e in msgs if e.get("type") == "message_delta"]
    chat_errors = [e for e in chat if "error" in e]
    msg_errors = [e for e in msgs if e.get("type") == "error"]
    text = "".join(c["delta"].get("content") or "" for e in chat for c in e.get("choices", ()))
    assert text == "".join(pieces)  # what came before the end always reaches the caller
    kind = _expected(reason)
    if kind == "error":
        assert finishes == [] and stops == []
        assert [e["error"]["message"] for e in chat_errors] == [
            f"Gemini ended the answer with finishReason {reason!r}"
        ]
        assert len(msg_errors) == 1 and msg_errors[0]["error"]["type"] == "api_error"
        assert reason in msg_errors[0]["error"]["message"]
    else:
        assert chat_errors == [] and msg_errors == []
        want = CLEAN.get(reason, ("content_filter", "refusal"))
        assert (finishes, stops) == ([want[0]], [want[1]])


@settings(max_examples=60, deadline=None)
@given(reason=REASONS, text=st.text(max_size=20))
def test_a_unary_answer_is_a_failure_exactly_when_its_reason_is(reason: str, text: str) -> None:
    body = _answer(reason, text)
    said = failure(body)
    stop = parse_response(body).stop_reason
    if _expected(reason) == "error":
        assert said == f"Gemini ended the answer with finishReason {reason!r}"
        assert stop is StopReason.ERROR
    else:
        assert said is None
        assert stop is not StopReason.ERROR


def test_no_finish_yet_and_a_blocked_prompt_are_not_failures() -> None:
    assert failure({"candidates": [{"content": {"parts": [{"text": "x"}]}}]}) is None
    assert failure(_answer("FINISH_REASON_UNSPECIFIED")) is None
    assert failure({"promptFeedback": {"blockReason": "OTHER"}}) is None


class _Inner:
    """A transport that answers every request with one prepared response."""

    def __init__(self, resp: UpstreamResponse) -> None:
        self.resp = resp
        self.closed = False

    async def send(self, request: UpstreamRequest, *, timeout: float | None) -> UpstreamResponse:
        return self.resp

    async def aclose(self) -> None:
        self.closed = True


def _request(stream: bool = False) -> UpstreamRequest:
    verb = ":streamGenerateContent?alt=sse" if stream else ":generateContent"
    url = f"https://generativelanguage.googleapis.com/v1beta/models/{MODEL}{verb}"
    return UpstreamRequest("POST", url, {}, b"{}", stream)


@pytest.mark.parametrize("reason", [*DOCUMENTED, "A_REASON_FROM_2031"])
async def test_the_transport_makes_a_failed_unary_answer_a_502(reason: str) -> None:
    raw = orjson.dumps(_answer(reason))
    headers = {"content-type": "application/json", "content-length": str(len(raw))}
    t = GeminiTransport(_Inner(BufferedResponse(200, headers, raw)))
    resp = await t.send(_request(), timeout=5)
    body = await resp.read()
    assert resp.headers["content-length"] == str(len(body))
    if _expected(reason) == "error":
        assert resp.status == 502
        err = orjson.loads(body)["error"]
        assert err["status"] == "INTERNAL" and reason in err["message"]
    else:
        assert (resp.status, body) == (200, raw)


async def test_the_transport_leaves_streams_errors_and_malformed_bodies_alone() -> None:
    failed = orjson.dumps(_answer("MALFORMED_FUNCTION_CALL"))
    streamed = BufferedResponse(200, {}, failed)
    assert await GeminiTransport(_Inner(streamed)).send(_request(True), timeout=5) is streamed
    error = BufferedResponse(500, {}, b'{"error": {"code": 500}}')
    assert await GeminiTransport(_Inner(error)).send(_request(), timeout=5) is error
    bad = await GeminiTransport(_Inner(BufferedResponse(200, {}, b"{not json"))).send(
        _request(), timeout=5
    )
    assert (bad.status, await bad.read()) == (200, b"{not json")


class _Slow:
    """A 200 whose body never completes."""

    status = 200
    headers: dict[str, str] = {}

    async def read(self) -> bytes:
        await asyncio.sleep(30)
        return b""

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        yield b""

    async def aclose(self) -> None:
        return None


async def test_the_transport_bounds_the_body_read_by_the_attempts_timeout() -> None:
    with pytest.raises(UpstreamTimeout):
        await GeminiTransport(_Inner(_Slow())).send(_request(), timeout=0.2)


async def _sim(path_verb: str, header: str) -> tuple[int, bytes]:
    sim = Simulator()
    path = f"/v1beta/models/{MODEL}:{path_verb}"
    body = orjson.dumps({"contents": [{"role": "user", "parts": [{"text": "Say hello"}]}]})
    res = await sim.handle(
        "POST", path, {"x-goog-api-key": "k", FINISH_REASON_HEADER: header}, body
    )
    return res.status, await res.read()


@pytest.mark.parametrize("reason", ["MALFORMED_FUNCTION_CALL", "SAFETY"])
async def test_the_simulator_ends_an_answer_with_the_reason_it_is_told(reason: str) -> None:
    status, raw = await _sim("generateContent", reason)
    res = gtypes.GenerateContentResponse.model_validate_json(raw)
    (cand,) = res.candidates or []
    assert status == 200 and cand.finish_reason == gtypes.FinishReason(reason)
    assert res.text  # the answer's text, then the reason
    status, raw = await _sim("generateContent", reason + ";empty")
    (cand,) = gtypes.GenerateContentResponse.model_validate_json(raw).candidates or []
    assert cand.finish_reason == gtypes.FinishReason(reason) and cand.content is None


async def test_the_simulators_stream_ends_with_the_reason_or_is_only_that_chunk() -> None:
    for header, texts in (("OTHER", True), ("OTHER;empty", False)):
        status, raw = await _sim("streamGenerateContent?alt=sse", header)
        events = [
            gtypes.GenerateContentResponse.model_validate_json(e.data)
            for e in SSEDecoder().feed(raw)
        ]
        reasons = [c.finish_reason for e in events for c in e.candidates or ()]
        assert status == 200 and reasons[-1] == gtypes.FinishReason.OTHER
        assert all(r is None for r in reasons[:-1])
        assert (len(events) > 1) is texts and bool("".join(e.text or "" for e in events)) is texts

"""The remaining fault classes, byte by byte against the providers' documented wire formats:
prefill refusal, flapping, spaced JSON, a missing [DONE], 429 with and without Retry-After,
529, a silent peer; and every answer, errors included, carries the provider's request id."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import time
from typing import TYPE_CHECKING, Any

import anthropic
import openai
import orjson
import pytest
from tests.conftest import BIN, free_port, wait_port

from bastion.providers.base import UpstreamRequest
from bastion.providers.sim import ScenarioError, SimTransport, Simulator, parse_fault

if TYPE_CHECKING:
    from conftest import Clients, RawPost, SimServer

MODEL = "sim-small"
A_HEADERS = {"anthropic-version": "2023-06-01"}
PREFILL_MESSAGE = (
    "This model does not support assistant message prefill. "
    "The conversation must end with a user message."
)


def fault(spec: str) -> dict[str, str]:
    return {"x-sim-fault": spec}


def anthropic_body(messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 50, "messages": messages, **extra}


def openai_body(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], **extra}


PREFILLED: list[Any] = [
    {"role": "user", "content": "Name a colour"},
    {"role": "assistant", "content": "The colour is"},
]


# -- prefill ---------------------------------------------------------------------------------


async def test_no_prefill_refuses_a_final_assistant_turn_like_the_api(
    sim_server: SimServer, raw_post: RawPost
) -> None:
    url = sim_server.url + "/v1/messages"
    for stream in (False, True):
        reply = await raw_post(
            url,
            anthropic_body(PREFILLED, stream=stream),
            headers={**A_HEADERS, **fault("no_prefill")},
        )
        assert reply.status == 400
        assert reply.headers["content-type"] == "application/json"
        rid = reply.headers["request-id"]
        assert reply.json() == {
            "type": "error",
            "error": {"type": "invalid_request_error", "message": PREFILL_MESSAGE},
            "request_id": rid,
        }


async def test_no_prefill_still_answers_a_conversation_ending_with_the_user(
    sdk: Clients, sim_server: SimServer
) -> None:
    a = sdk.anthropic(sim_server)
    msg = await a.messages.create(
        model=MODEL,
        max_tokens=50,
        messages=[*PREFILLED, {"role": "user", "content": "Go on"}],
        extra_headers=fault("no_prefill"),
    )
    assert msg.stop_reason == "end_turn"
    with pytest.raises(anthropic.BadRequestError) as info:
        await a.messages.create(
            model=MODEL, max_tokens=50, messages=PREFILLED, extra_headers=fault("no_prefill")
        )
    assert info.value.body["error"]["message"] == PREFILL_MESSAGE  # type: ignore[index]
    # without the fault the same prefill is served (models that support one)
    ok = await a.messages.create(model=MODEL, max_tokens=50, messages=PREFILLED)
    assert ok.stop_reason == "end_turn"


async def test_no_prefill_does_not_touch_openai_requests(
    sdk: Clients, sim_server: SimServer
) -> None:
    o = sdk.openai(sim_server)
    done = await o.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hel"}],
        extra_headers=fault("no_prefill"),
    )
    assert done.choices[0].finish_reason == "stop"


# -- flapping --------------------------------------------------------------------------------


async def _outcomes(sim: Simulator, spec: str, n: int) -> list[int]:
    transport = SimTransport(sim)
    statuses = []
    for _ in range(n):
        req = UpstreamRequest(
            "POST",
            "sim://sim/v1/chat/completions",
            {"x-sim-fault": spec, "content-type": "application/json"},
            orjson.dumps(openai_body()),
        )
        resp = await transport.send(req, timeout=5)
        await resp.read()
        statuses.append(resp.status)
    return statuses


async def test_fail_every_flaps_deterministically_by_a_counter() -> None:
    sim = Simulator()
    assert await _outcomes(sim, "fail_every:2", 6) == [200, 503, 200, 503, 200, 503]
    assert await _outcomes(sim, "fail_every:3;status:500", 6) == [200, 200, 500, 200, 200, 500]
    # counted per fault string: the first series goes on where it stopped
    assert await _outcomes(sim, "fail_every:2", 2) == [200, 503]
    assert await _outcomes(sim, "fail_every:1", 2) == [503, 503]
    sim.reset()
    assert await _outcomes(sim, "fail_every:2", 2) == [200, 503]


async def test_fail_rate_fails_the_same_requests_on_every_run() -> None:
    first = await _outcomes(Simulator(), "fail_rate:0.5;seed:7", 40)
    again = await _outcomes(Simulator(), "fail_rate:0.5;seed:7", 40)
    assert first == again
    assert 10 <= first.count(500) <= 30


def test_fail_every_needs_a_positive_count() -> None:
    for bad in ("fail_every:0", "fail_every:-2", "fail_every:x"):
        with pytest.raises(ScenarioError):
            parse_fault(bad)
    assert parse_fault("fail_every:2").conditional


# -- spaced JSON -----------------------------------------------------------------------------


async def test_spaced_json_writes_openai_chunks_dumps_style(
    sim_server: SimServer, raw_post: RawPost
) -> None:
    body = openai_body(stream=True, stream_options={"include_usage": True})
    url = sim_server.url + "/v1/chat/completions"
    plain = await raw_post(url, body, headers=fault("slow_first:0"))
    spaced = await raw_post(url, body, headers=fault("spaced_json"))
    assert b'"choices":[]' in plain.body and b'"choices": []' not in plain.body
    assert b'"choices": []' in spaced.body and b'"choices":[]' not in spaced.body
    events = spaced.events()
    assert events[-1].data == b"[DONE]"
    for e in events[:-1]:
        assert e.data.startswith(b'{"id": "chatcmpl-')
        assert e.data == json.dumps(json.loads(e.data)).encode()  # exactly json.dumps' style
    usage = orjson.loads(events[-2].data)
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] > 0
    finish = orjson.loads(events[-3].data)
    assert finish["choices"][0]["finish_reason"] == "stop"
    # the same stream, only written differently
    assert [orjson.loads(e.data)["choices"] for e in events[:-1]] == [
        orjson.loads(e.data)["choices"] for e in plain.events()[:-1]
    ]


async def test_spaced_json_streams_and_bodies_still_parse_in_the_sdks(
    sdk: Clients, sim_server: SimServer, raw_post: RawPost
) -> None:
    o = sdk.openai(sim_server)
    stream = await o.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Hi"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers=fault("spaced_json"),
    )
    chunks = [c async for c in stream]
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    a = sdk.anthropic(sim_server)
    async with a.messages.stream(
        model=MODEL,
        max_tokens=50,
        messages=[{"role": "user", "content": "Hi"}],
        extra_headers=fault("spaced_json"),
    ) as s:
        final = await s.get_final_message()
    assert final.stop_reason == "end_turn"
    reply = await raw_post(
        sim_server.url + "/v1/chat/completions", openai_body(), headers=fault("spaced_json")
    )
    assert reply.body.startswith(b'{"id": "chatcmpl-')
    assert int(reply.headers["content-length"]) == len(reply.body)
    assert reply.json()["choices"][0]["message"]["role"] == "assistant"


# -- missing [DONE] --------------------------------------------------------------------------


async def test_no_final_with_usage_ends_on_the_usage_chunk_after_finish_reason(
    sim_server: SimServer, raw_post: RawPost
) -> None:
    reply = await raw_post(
        sim_server.url + "/v1/chat/completions",
        openai_body(stream=True, stream_options={"include_usage": True}),
        headers=fault("no_final"),
    )
    events = reply.events()
    assert reply.error is None  # a clean end of the body, only [DONE] is missing
    assert all(e.data != b"[DONE]" for e in events)
    last, before = orjson.loads(events[-1].data), orjson.loads(events[-2].data)
    assert last["choices"] == [] and last["usage"]["completion_tokens"] > 0
    assert before["choices"][0]["finish_reason"] == "stop"


# -- rate limits and overload ----------------------------------------------------------------


async def test_429_without_retry_after_has_the_error_body_but_no_retry_after(
    sim_server: SimServer, raw_post: RawPost
) -> None:
    a = await raw_post(
        sim_server.url + "/v1/messages",
        anthropic_body([{"role": "user", "content": "Hi"}]),
        headers={**A_HEADERS, **fault("status:429")},
    )
    assert a.status == 429 and "retry-after" not in a.headers
    assert a.json() == {
        "type": "error",
        "error": {
            "type": "rate_limit_error",
            "message": "Number of requests has exceeded your per-minute rate limit.",
        },
        "request_id": a.headers["request-id"],
    }
    assert a.headers["anthropic-ratelimit-requests-remaining"] == "0"
    o = await raw_post(
        sim_server.url + "/v1/chat/completions", openai_body(), headers=fault("status:429")
    )
    assert o.status == 429 and "retry-after" not in o.headers
    assert o.json()["error"]["code"] == "rate_limit_exceeded"
    assert set(o.json()["error"]) == {"message", "type", "param", "code"}
    with_wait = await raw_post(
        sim_server.url + "/v1/chat/completions",
        openai_body(),
        headers=fault("status:429;retry_after:1.5"),
    )
    assert with_wait.headers["retry-after"] == "2"  # whole seconds, rounded up
    assert with_wait.headers["x-ratelimit-reset-requests"] == "1.5s"


async def test_the_sdk_waits_as_long_as_retry_after_says(
    sdk: Clients, sim_server: SimServer
) -> None:
    a = sdk.anthropic(sim_server, max_retries=1)
    started = time.monotonic()
    msg = await a.messages.create(
        model=MODEL,
        max_tokens=100,
        messages=[{"role": "user", "content": "Hi"}],
        extra_headers={**fault("fail_first:1;status:429;retry_after:1"), "x-sim-scenario": "ra"},
    )
    assert msg.stop_reason == "end_turn"
    assert time.monotonic() - started >= 0.9  # the SDK honoured Retry-After
    assert sim_server.sim.request_count("ra") == 2


async def test_529_is_anthropics_overloaded_error_in_body_and_stream(
    sim_server: SimServer, raw_post: RawPost
) -> None:
    reply = await raw_post(
        sim_server.url + "/v1/messages",
        anthropic_body([{"role": "user", "content": "Hi"}], stream=True),
        headers={**A_HEADERS, **fault("status:529")},
    )
    assert reply.status == 529
    assert reply.json() == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
        "request_id": reply.headers["request-id"],
    }
    mid = await raw_post(
        sim_server.url + "/v1/messages",
        anthropic_body([{"role": "user", "content": "Hi"}], stream=True),
        headers={**A_HEADERS, **fault("error_after:2;status:529")},
    )
    assert mid.status == 200
    last = mid.events()[-1]
    assert last.event == "error"
    assert orjson.loads(last.data) == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }


# -- a silent peer ---------------------------------------------------------------------------


async def test_silence_accepts_the_connection_and_never_sends_a_byte(
    sim_server: SimServer,
) -> None:
    port = int(sim_server.url.rsplit(":", 1)[1])
    body = orjson.dumps(openai_body())
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nx-sim-fault: silence\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head + body)
        await writer.drain()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.5)
        sock = writer.get_extra_info("socket")
        assert sock is not None and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    finally:
        writer.close()
    assert sim_server.sim.requests[-1].headers["x-sim-fault"] == "silence"


# -- request ids -----------------------------------------------------------------------------

ANSWERS = [
    "",
    "status:400",
    "status:401",
    "status:404",
    "status:409",
    "status:429",
    "status:429;retry_after:1",
    "status:500",
    "status:503",
    "status:529",
    "no_prefill",
    "context_length",
    "content_policy",
    "spaced_json",
    "no_final",
    "malformed_after:1",
    "error_after:1",
    "fail_every:1",
    "explode",  # an unknown fault is a 400 from the simulator itself
]


@pytest.mark.parametrize("spec", ANSWERS)
@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
async def test_every_answer_carries_the_providers_request_id_header(
    sim_server: SimServer, raw_post: RawPost, spec: str, stream: bool
) -> None:
    a = await raw_post(
        sim_server.url + "/v1/messages",
        anthropic_body(PREFILLED, stream=stream),
        headers={**A_HEADERS, **fault(spec)},
    )
    assert a.headers["request-id"].startswith("req_011C")
    assert "x-request-id" not in a.headers
    if a.status >= 400:
        assert a.json()["request_id"] == a.headers["request-id"]
        assert a.json()["type"] == "error"
    o = await raw_post(
        sim_server.url + "/v1/chat/completions", openai_body(stream=stream), headers=fault(spec)
    )
    assert o.headers["x-request-id"].startswith("req_") and len(o.headers["x-request-id"]) == 36
    assert "request-id" not in o.headers
    if o.status >= 400:
        assert set(o.json()) == {"error"}


async def test_unknown_routes_and_methods_carry_request_ids_too(
    sim_server: SimServer, raw_post: RawPost
) -> None:
    for path, method, headers, name in (
        ("/v1/nope", "POST", {}, "x-request-id"),
        ("/v1/messages", "GET", A_HEADERS, "request-id"),
        ("/v1/models/unknown-model", "GET", {}, "x-request-id"),
    ):
        reply = await raw_post(sim_server.url + path, method=method, headers=headers)
        assert reply.status >= 400 and reply.headers[name]


async def test_anthropic_409_is_a_conflict_error(sdk: Clients, sim_server: SimServer) -> None:
    with pytest.raises(anthropic.ConflictError) as info:
        await sdk.anthropic(sim_server).messages.create(
            model=MODEL,
            max_tokens=10,
            messages=[{"role": "user", "content": "Hi"}],
            extra_headers=fault("status:409"),
        )
    assert info.value.body["error"]["type"] == "conflict_error"  # type: ignore[index]
    with pytest.raises(openai.ConflictError):
        await sdk.openai(sim_server).chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Hi"}],
            extra_headers=fault("status:409"),
        )


async def test_bastion_sim_stops_on_sigterm_while_silent_and_stalled_calls_hold_connections(
    raw_post: RawPost,
) -> None:
    """``silence`` and ``stall_after`` never end on their own: SIGTERM must not wait for them."""
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "bastion"), "sim", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, proc)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        held = [
            asyncio.ensure_future(raw_post(url, openai_body(), headers=fault("silence"))),
            asyncio.ensure_future(
                raw_post(url, openai_body(stream=True), headers=fault("stall_after:2"))
            ),
        ]
        await asyncio.sleep(0.5)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 5)
        assert time.monotonic() - started < 2.5
        for call in held:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(call, 2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)

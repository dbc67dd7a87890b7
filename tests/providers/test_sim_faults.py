"""Each injected fault looks, to the official SDKs over real HTTP, like the failure it names."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import anthropic
import openai
import orjson
import pytest

if TYPE_CHECKING:
    from conftest import Clients, RawPost, SimServer

MODEL = "sim-small"
A_HEADERS = {"anthropic-version": "2023-06-01"}


def user(text: str = "Hi") -> list[Any]:
    return [{"role": "user", "content": text}]


def fault(spec: str) -> dict[str, str]:
    return {"x-sim-fault": spec}


async def test_status_faults_raise_the_sdk_status_errors(
    sdk: Clients, sim_server: SimServer
) -> None:
    a, o = sdk.anthropic(sim_server), sdk.openai(sim_server)
    with pytest.raises(anthropic.InternalServerError) as a500:
        await a.messages.create(
            model=MODEL, max_tokens=10, messages=user(), extra_headers=fault("status:500")
        )
    assert a500.value.status_code == 500
    assert a500.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    assert a500.value.response.headers["request-id"].startswith("req_")
    with pytest.raises(anthropic.OverloadedError) as a529:
        await a.messages.create(
            model=MODEL, max_tokens=10, messages=user(), extra_headers=fault("status:529")
        )
    assert a529.value.body["error"] == {"type": "overloaded_error", "message": "Overloaded"}  # type: ignore[index]
    with pytest.raises(openai.InternalServerError) as o503:
        await o.chat.completions.create(
            model=MODEL, messages=user(), extra_headers=fault("status:503")
        )
    assert o503.value.status_code == 503
    assert o503.value.type == "server_error"


async def test_rate_limit_carries_retry_after_and_reset_headers(
    sdk: Clients, sim_server: SimServer
) -> None:
    spec = fault("status:429;retry_after:3")
    with pytest.raises(anthropic.RateLimitError) as a:
        await sdk.anthropic(sim_server).messages.create(
            model=MODEL, max_tokens=10, messages=user(), extra_headers=spec
        )
    headers = a.value.response.headers
    assert headers["retry-after"] == "3"
    assert headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert headers["anthropic-ratelimit-requests-reset"].endswith("Z")
    assert a.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    with pytest.raises(openai.RateLimitError) as o:
        await sdk.openai(sim_server).chat.completions.create(
            model=MODEL, messages=user(), extra_headers=spec
        )
    assert o.value.response.headers["retry-after"] == "3"
    assert o.value.response.headers["x-ratelimit-reset-requests"] == "3s"
    assert o.value.code == "rate_limit_exceeded"


async def test_fault_by_model_suffix_and_the_echoed_model(
    sdk: Clients, sim_server: SimServer
) -> None:
    o = sdk.openai(sim_server)
    with pytest.raises(openai.InternalServerError):
        await o.chat.completions.create(model="sim-small+fault=status:502", messages=user())
    ok = await o.chat.completions.create(model="sim-small+fault=slow_first:1", messages=user())
    assert ok.model == "sim-small"
    assert sim_server.sim.requests[-1].model == "sim-small+fault=slow_first:1"


async def test_unknown_fault_is_a_clear_400(sdk: Clients, sim_server: SimServer) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await sdk.openai(sim_server).chat.completions.create(
            model=MODEL, messages=user(), extra_headers=fault("explode")
        )
    assert "unknown sim fault 'explode'" in info.value.message


async def test_reset_is_a_connection_error(sdk: Clients, sim_server: SimServer) -> None:
    with pytest.raises(anthropic.APIConnectionError):
        await sdk.anthropic(sim_server).messages.create(
            model=MODEL, max_tokens=10, messages=user(), extra_headers=fault("reset")
        )
    with pytest.raises(openai.APIConnectionError) as info:
        await sdk.openai(sim_server).chat.completions.create(
            model=MODEL, messages=user(), extra_headers=fault("reset")
        )
    assert not isinstance(info.value, openai.APITimeoutError)


async def test_silence_times_out(sdk: Clients, sim_server: SimServer) -> None:
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        await sdk.openai(sim_server, timeout=0.3).chat.completions.create(
            model=MODEL, messages=user(), extra_headers=fault("silence")
        )
    assert 0.25 < time.monotonic() - started < 2


async def test_slow_first_delays_the_first_token(sdk: Clients, sim_server: SimServer) -> None:
    c = sdk.anthropic(sim_server)
    started = time.monotonic()
    async with c.messages.stream(
        model=MODEL, max_tokens=10, messages=user(), extra_headers=fault("slow_first:250")
    ) as stream:
        async for event in stream:
            if event.type == "content_block_delta":
                break
    assert time.monotonic() - started >= 0.25


async def test_stall_after_n_chunks_trips_the_read_timeout(
    sdk: Clients, sim_server: SimServer
) -> None:
    c = sdk.openai(sim_server, timeout=openai.Timeout(5.0, read=0.3))
    stream = await c.chat.completions.create(
        model=MODEL, messages=user(), stream=True, extra_headers=fault("stall_after:3")
    )
    got = []
    with pytest.raises(openai.APITimeoutError):
        async for chunk in stream:
            got.append(chunk)
    assert len(got) == 3


async def test_cut_after_n_chunks_breaks_the_stream(sdk: Clients, sim_server: SimServer) -> None:
    o = sdk.openai(sim_server)
    stream = await o.chat.completions.create(
        model=MODEL, messages=user(), stream=True, extra_headers=fault("cut_after:4")
    )
    got = []
    with pytest.raises(openai.APIConnectionError):
        async for chunk in stream:
            got.append(chunk)
    assert len(got) == 4
    a = sdk.anthropic(sim_server)
    with pytest.raises(Exception) as info:  # the Anthropic SDK lets the httpx error through
        async with a.messages.stream(
            model=MODEL, max_tokens=50, messages=user(), extra_headers=fault("cut_after:5")
        ) as stream_a:
            await stream_a.get_final_message()
    assert "incomplete chunked read" in str(info.value)


async def test_cut_unary_body_is_incomplete(sim_server: SimServer, raw_post: RawPost) -> None:
    body = {"model": MODEL, "messages": user()}
    reply = await raw_post(
        sim_server.url + "/v1/chat/completions", body, headers=fault("cut_after:1")
    )
    assert reply.status == 200
    assert reply.error is not None
    assert 0 < len(reply.body) < int(reply.headers["content-length"])


async def test_malformed_chunk_fails_sdk_parsing(sdk: Clients, sim_server: SimServer) -> None:
    stream = await sdk.openai(sim_server).chat.completions.create(
        model=MODEL, messages=user(), stream=True, extra_headers=fault("malformed_after:2")
    )
    got = []
    with pytest.raises(json.JSONDecodeError):
        async for chunk in stream:
            got.append(chunk)
    assert len(got) == 2
    with pytest.raises(ValueError, match="control character"):
        await sdk.anthropic(sim_server).messages.create(
            model=MODEL, max_tokens=10, messages=user(), extra_headers=fault("malformed_after:0")
        )


async def test_no_final_omits_only_the_terminating_event(
    sim_server: SimServer, raw_post: RawPost
) -> None:
    spec = fault("no_final")
    a = await raw_post(
        sim_server.url + "/v1/messages",
        {"model": MODEL, "max_tokens": 10, "stream": True, "messages": user()},
        headers={**A_HEADERS, **spec},
    )
    names = [e.event for e in a.events()]
    assert a.error is None
    assert names[-1] == "message_delta" and "message_stop" not in names
    o = await raw_post(
        sim_server.url + "/v1/chat/completions",
        {"model": MODEL, "stream": True, "messages": user()},
        headers=spec,
    )
    events = o.events()
    assert o.error is None
    assert events[-1].data != b"[DONE]"
    assert orjson.loads(events[-1].data)["choices"][0]["finish_reason"] == "stop"


async def test_error_after_sends_the_provider_stream_error(
    sdk: Clients, sim_server: SimServer
) -> None:
    with pytest.raises(anthropic.APIStatusError) as info:
        async with sdk.anthropic(sim_server).messages.stream(
            model=MODEL, max_tokens=10, messages=user(), extra_headers=fault("error_after:3")
        ) as stream:
            await stream.get_final_message()
    assert info.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    with pytest.raises(openai.APIError):
        stream_o = await sdk.openai(sim_server).chat.completions.create(
            model=MODEL, messages=user(), stream=True, extra_headers=fault("error_after:2")
        )
        async for _ in stream_o:
            pass


async def test_context_length_and_content_policy_errors(
    sdk: Clients, sim_server: SimServer
) -> None:
    a, o = sdk.anthropic(sim_server), sdk.openai(sim_server)
    with pytest.raises(anthropic.BadRequestError) as a_ctx:
        await a.messages.create(
            model=MODEL, max_tokens=10, messages=user(), extra_headers=fault("context_length")
        )
    assert a_ctx.value.body["error"]["message"].startswith("prompt is too long: ")  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as o_ctx:
        await o.chat.completions.create(
            model=MODEL, messages=user(), extra_headers=fault("context_length")
        )
    assert o_ctx.value.code == "context_length_exceeded"
    with pytest.raises(anthropic.BadRequestError) as a_pol:
        await a.messages.create(
            model=MODEL, max_tokens=10, messages=user(), extra_headers=fault("content_policy")
        )
    assert "policy" in a_pol.value.body["error"]["message"]  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as o_pol:
        await o.chat.completions.create(
            model=MODEL, messages=user(), extra_headers=fault("content_policy")
        )
    assert o_pol.value.code == "content_policy_violation"


async def test_real_context_window_is_enforced(sdk: Clients, start_sim: Any) -> None:
    server = await start_sim(context_window=100)
    with pytest.raises(anthropic.BadRequestError) as info:
        await sdk.anthropic(server).messages.create(
            model=MODEL, max_tokens=10, messages=user("x" * 800)
        )
    assert info.value.body["error"]["message"] == "prompt is too long: 200 tokens > 100 maximum"  # type: ignore[index]


async def test_fail_first_fails_then_recovers_per_fault_string(
    sdk: Clients, sim_server: SimServer
) -> None:
    o = sdk.openai(sim_server)
    outcomes = []
    for _ in range(4):
        try:
            await o.chat.completions.create(
                model=MODEL, messages=user(), extra_headers=fault("fail_first:2")
            )
            outcomes.append(200)
        except openai.InternalServerError as exc:
            outcomes.append(exc.status_code)
    assert outcomes == [500, 500, 200, 200]
    assert sim_server.sim.request_count("fail_first:2") == 4
    with pytest.raises(openai.InternalServerError) as other:
        await o.chat.completions.create(
            model=MODEL, messages=user(), extra_headers=fault("fail_first:1;status:503")
        )
    assert other.value.status_code == 503


async def test_sdk_retries_ride_through_fail_first(sdk: Clients, sim_server: SimServer) -> None:
    c = sdk.anthropic(sim_server, max_retries=2)
    msg = await c.messages.create(
        model=MODEL,
        max_tokens=100,
        messages=user(),
        extra_headers={**fault("fail_first:1;status:429;retry_after:0"), "x-sim-scenario": "ride"},
    )
    assert msg.stop_reason == "end_turn"
    assert sim_server.sim.request_count("ride") == 2

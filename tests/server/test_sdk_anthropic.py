"""The official Anthropic SDK, unmodified, against a running `bastion serve` over HTTP."""

from __future__ import annotations

import time

import anthropic
import httpx2 as httpx
import pytest
from tests.conftest import RunningGateway

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
        "required": ["city"],
    },
}


@pytest.fixture
def client(gateway_proc: RunningGateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway_proc.url, api_key=gateway_proc.key, max_retries=0)


def test_create_returns_text_stop_reason_and_usage(client: anthropic.Anthropic) -> None:
    msg = client.messages.create(
        model="claude-sonnet-5",
        max_tokens=200,
        messages=[{"role": "user", "content": "Hello there"}],
    )
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.content[0].type == "text" and len(msg.content[0].text) > 10
    assert msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0


def test_scripted_reply_passes_through_exactly(client: anthropic.Anthropic) -> None:
    msg = client.messages.create(
        model="claude-sonnet-5",
        max_tokens=200,
        messages=[{"role": "user", "content": "[[sim:reply=The answer is 42.]]"}],
    )
    assert msg.content[0].text == "The answer is 42."


def test_missing_max_tokens_is_injected_not_rejected(client: anthropic.Anthropic) -> None:
    resp = httpx.post(
        f"{client.base_url}/v1/messages",
        headers={"x-api-key": client.api_key, "anthropic-version": "2023-06-01"},
        json={"model": "claude-sonnet-5", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["type"] == "message"


def test_stream_yields_text_and_final_usage(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model="claude-sonnet-5",
        max_tokens=200,
        messages=[{"role": "user", "content": "Stream please"}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and text == final.content[0].text
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0


def test_stream_is_relayed_chunk_by_chunk_not_buffered(client: anthropic.Anthropic) -> None:
    # upstream paces 8 pieces 150 ms apart: a buffering gateway would deliver them all at the end
    t0 = time.monotonic()
    arrivals: list[float] = []
    with client.messages.stream(
        model="slow-stream", max_tokens=200, messages=[{"role": "user", "content": "go"}]
    ) as stream:
        for _ in stream.text_stream:
            arrivals.append(time.monotonic() - t0)
    total = time.monotonic() - t0
    assert len(arrivals) >= 5
    assert arrivals[0] < total - 0.6, (arrivals, total)
    assert arrivals[-1] - arrivals[0] > 0.6


def test_tool_use_round_trip(client: anthropic.Anthropic) -> None:
    first = client.messages.create(
        model="claude-sonnet-5",
        max_tokens=300,
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    )
    assert first.stop_reason == "tool_use"
    call = next(b for b in first.content if b.type == "tool_use")
    assert call.name == "get_weather" and isinstance(call.input, dict) and "city" in call.input
    second = client.messages.create(
        model="claude-sonnet-5",
        max_tokens=300,
        tools=[WEATHER_TOOL],
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": first.content},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": call.id, "content": "Sunny, 21 C"}
                ],
            },
        ],
    )
    assert second.stop_reason == "end_turn"
    assert "Sunny, 21 C" in second.content[0].text


def test_streamed_tool_use_reassembles_arguments(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model="claude-sonnet-5",
        max_tokens=300,
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
    ) as stream:
        final = stream.get_final_message()
    block = next(b for b in final.content if b.type == "tool_use")
    assert final.stop_reason == "tool_use" and "city" in block.input


def test_bad_key_is_authentication_error(gateway_proc: RunningGateway) -> None:
    c = anthropic.Anthropic(base_url=gateway_proc.url, api_key="bst-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as ei:
        c.messages.create(
            model="claude-sonnet-5", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert ei.value.status_code == 401
    assert ei.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]


def test_unknown_model_is_not_found(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as ei:
        client.messages.create(
            model="no-such-model", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert "no-such-model" in str(ei.value)


def test_invalid_field_is_bad_request_naming_the_field(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as ei:
        client.messages.create(
            model="claude-sonnet-5",
            max_tokens=10,
            messages=[{"role": "robot", "content": "x"}],  # type: ignore[list-item,typeddict-item]
        )
    assert "messages.0.role" in str(ei.value)


def test_body_too_large_is_413(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.APIStatusError) as ei:
        client.messages.create(
            model="claude-sonnet-5",
            max_tokens=10,
            messages=[{"role": "user", "content": "x" * 300_000}],
        )
    assert ei.value.status_code == 413
    assert ei.value.body["error"]["type"] == "request_too_large"  # type: ignore[index]


def test_bad_json_is_400_in_anthropic_shape(gateway_proc: RunningGateway) -> None:
    resp = httpx.post(
        f"{gateway_proc.url}/v1/messages",
        headers={"x-api-key": gateway_proc.key, "content-type": "application/json"},
        content=b"{not json",
    )
    assert resp.status_code == 400
    body = resp.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"


def test_trace_id_is_taken_and_echoed(client: anthropic.Anthropic) -> None:
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    raw = client.messages.with_raw_response.create(
        model="claude-sonnet-5",
        max_tokens=20,
        messages=[{"role": "user", "content": "x"}],
        extra_headers={"traceparent": tp},
    )
    echoed = raw.headers["traceparent"]
    assert echoed.startswith("00-0af7651916cd43dd8448eb211c80319c-")
    assert echoed.split("-")[2] != "b7ad6b7169203331"  # our own span, child of the client's
    assert raw.headers["x-request-id"]


def test_models_list(client: anthropic.Anthropic) -> None:
    ids = [m.id for m in client.models.list()]
    assert "claude-sonnet-5" in ids

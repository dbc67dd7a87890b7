"""The official OpenAI SDK, unmodified, against a running `bastion serve` over HTTP."""

from __future__ import annotations

import json

import httpx2 as httpx
import openai
import pytest
from tests.conftest import RunningGateway

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture
def client(gateway_proc: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway_proc.url + "/v1", api_key=gateway_proc.key, max_retries=0)


def test_create_returns_text_finish_reason_and_usage(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="gpt-4.1", messages=[{"role": "user", "content": "Hello"}]
    )
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content and len(r.choices[0].message.content) > 10
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None and r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_stream_with_include_usage(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="gpt-4.1",
            messages=[{"role": "user", "content": "Stream"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert text and finish == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0


def test_stream_without_include_usage_has_no_usage_chunk(client: openai.OpenAI) -> None:
    # the gateway asks upstream for usage (it needs it for cost) but must not change what the client sees
    chunks = list(
        client.chat.completions.create(
            model="gpt-4.1",
            messages=[{"role": "user", "content": "Stream"}],
            stream=True,
        )
    )
    assert chunks and all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


def test_tool_call_round_trip(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(
        model="gpt-4.1",
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    )
    assert first.choices[0].finish_reason == "tool_calls"
    tc = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert tc.function.name == "get_weather"  # type: ignore[union-attr]
    assert "city" in json.loads(tc.function.arguments)  # type: ignore[union-attr]
    second = client.chat.completions.create(
        model="gpt-4.1",
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            first.choices[0].message.model_dump(exclude_none=True),  # type: ignore[list-item]
            {"role": "tool", "tool_call_id": tc.id, "content": "Sunny, 21 C"},
        ],
    )
    assert second.choices[0].finish_reason == "stop"
    assert "Sunny, 21 C" in (second.choices[0].message.content or "")


def test_streamed_tool_call_arguments_reassemble(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="gpt-4.1",
            tools=[WEATHER_TOOL],
            stream=True,  # type: ignore[list-item]
            messages=[{"role": "user", "content": "Weather in Oslo?"}],
        )
    )
    args = "".join(
        (c.choices[0].delta.tool_calls or [])[0].function.arguments or ""  # type: ignore[union-attr]
        for c in chunks
        if c.choices and c.choices[0].delta.tool_calls
    )
    assert "city" in json.loads(args)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_bad_key_is_401(gateway_proc: RunningGateway) -> None:
    c = openai.OpenAI(base_url=gateway_proc.url + "/v1", api_key="bst-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as ei:
        c.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": "x"}])
    assert ei.value.code == "invalid_api_key"


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as ei:
        client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "x"}]
        )
    assert ei.value.code == "model_not_found"


def test_invalid_field_is_400_naming_it(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(
            model="gpt-4.1", messages=[{"role": "user", "content": "x"}], temperature=7
        )
    assert ei.value.param == "temperature"


def test_body_too_large_is_413(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as ei:
        client.chat.completions.create(
            model="gpt-4.1", messages=[{"role": "user", "content": "x" * 300_000}]
        )
    assert ei.value.status_code == 413


def test_bad_json_is_400_in_openai_shape(gateway_proc: RunningGateway) -> None:
    resp = httpx.post(
        f"{gateway_proc.url}/v1/chat/completions",
        headers={"authorization": f"Bearer {gateway_proc.key}", "content-type": "application/json"},
        content=b"[1,2",
    )
    assert resp.status_code == 400
    assert resp.json()["error"]["type"] == "invalid_request_error"


def test_models_list(client: openai.OpenAI) -> None:
    assert "gpt-4.1" in [m.id for m in client.models.list()]


def test_health_and_readiness(gateway_proc: RunningGateway) -> None:
    assert httpx.get(gateway_proc.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(gateway_proc.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["store"]["ok"] is True

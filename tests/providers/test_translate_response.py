"""Non-streaming response translation: content, tool calls, stop reasons, usage, ids, model."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from anthropic.types import Message
from openai.types.chat import ChatCompletion

from bastion.providers.base import Format
from bastion.providers.translate import response_to

ANT, OAI = Format.ANTHROPIC, Format.OPENAI


def anthropic_response(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [
            {"type": "text", "text": "Checking the weather."},
            {
                "type": "tool_use",
                "id": "toolu_01A09q90qw90lq917835lq9",
                "name": "get_weather",
                "input": {"city": "Paris"},
            },
            {"type": "tool_use", "id": "toolu_01B", "name": "get_time", "input": {"tz": "CET"}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 25,
            "output_tokens": 60,
            "cache_creation_input_tokens": 10,
            "cache_read_input_tokens": 100,
        },
    }
    body.update(over)
    return body


def openai_response(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion",
        "created": 1741570283,
        "model": "gpt-4o-2024-08-06",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Checking the weather.",
                    "refusal": None,
                    "tool_calls": [
                        {
                            "id": "call_abc",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        },
                        {
                            "id": "call_def",
                            "type": "function",
                            "function": {"name": "get_time", "arguments": '{"tz":"CET"}'},
                        },
                    ],
                },
                "logprobs": None,
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {
            "prompt_tokens": 135,
            "completion_tokens": 60,
            "total_tokens": 195,
            "prompt_tokens_details": {"cached_tokens": 100},
        },
    }
    body.update(over)
    return body


def to_openai(body: dict[str, Any], model: str | None = None) -> dict[str, Any]:
    out = response_to(OAI, body, source=ANT, model=model)
    ChatCompletion.model_validate(out)
    return out


def to_anthropic(body: dict[str, Any], model: str | None = None) -> dict[str, Any]:
    out = response_to(ANT, body, source=OAI, model=model)
    Message.model_validate(out)
    return out


def test_anthropic_text_and_tool_use_become_content_and_tool_calls_with_ids_kept() -> None:
    out = to_openai(anthropic_response())
    msg = out["choices"][0]["message"]
    assert msg["content"] == "Checking the weather."
    assert msg["tool_calls"] == [
        {
            "id": "toolu_01A09q90qw90lq917835lq9",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        },
        {
            "id": "toolu_01B",
            "type": "function",
            "function": {"name": "get_time", "arguments": '{"tz":"CET"}'},
        },
    ]
    assert out["choices"][0]["finish_reason"] == "tool_calls"
    assert out["object"] == "chat.completion"


def test_openai_content_and_tool_calls_become_blocks_with_ids_kept() -> None:
    out = to_anthropic(openai_response())
    assert out["content"] == [
        {"type": "text", "text": "Checking the weather."},
        {"type": "tool_use", "id": "call_abc", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_def", "name": "get_time", "input": {"tz": "CET"}},
    ]
    assert out["stop_reason"] == "tool_use"
    assert out["stop_sequence"] is None


def test_tool_calls_without_text_leave_openai_content_null() -> None:
    body = anthropic_response(
        content=[{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}]
    )
    msg = to_openai(body)["choices"][0]["message"]
    assert msg["content"] is None
    assert msg["tool_calls"][0]["function"]["arguments"] == "{}"


def test_invalid_openai_arguments_survive_as_raw_and_come_back_identical() -> None:
    body = openai_response()
    body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = '{"city": "Pa'
    out = to_anthropic(body)
    assert out["content"][1]["input"] == {"_raw": '{"city": "Pa'}
    back = to_openai(out)
    assert back["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == '{"city": "Pa'


def test_anthropic_thinking_blocks_are_not_sent_as_openai_content() -> None:
    body = anthropic_response(
        content=[
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "text", "text": "Hi"},
        ],
        stop_reason="end_turn",
    )
    assert to_openai(body)["choices"][0]["message"]["content"] == "Hi"


def test_split_text_blocks_are_joined_without_separators() -> None:
    body = anthropic_response(
        content=[{"type": "text", "text": "Paris is "}, {"type": "text", "text": "in France."}],
        stop_reason="end_turn",
    )
    assert to_openai(body)["choices"][0]["message"]["content"] == "Paris is in France."


@pytest.mark.parametrize(
    ("anthropic_reason", "openai_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "length"),
    ],
)
def test_anthropic_stop_reason_maps_to_finish_reason(
    anthropic_reason: str, openai_reason: str
) -> None:
    out = to_openai(anthropic_response(stop_reason=anthropic_reason))
    assert out["choices"][0]["finish_reason"] == openai_reason


@pytest.mark.parametrize(
    ("openai_reason", "anthropic_reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("function_call", "tool_use"),
        ("content_filter", "refusal"),
    ],
)
def test_finish_reason_maps_to_anthropic_stop_reason(
    openai_reason: str, anthropic_reason: str
) -> None:
    body = openai_response()
    body["choices"][0]["finish_reason"] = openai_reason
    if openai_reason == "stop":
        del body["choices"][0]["message"]["tool_calls"]
    assert to_anthropic(body)["stop_reason"] == anthropic_reason


def test_stop_after_tool_calls_from_compatible_servers_still_means_tool_use() -> None:
    body = openai_response()
    body["choices"][0]["finish_reason"] = "stop"
    assert to_anthropic(body)["stop_reason"] == "tool_use"


def test_openai_refusal_becomes_anthropic_refusal_text() -> None:
    body = openai_response()
    body["choices"][0]["message"] = {
        "role": "assistant",
        "content": None,
        "refusal": "I can't help with that.",
    }
    body["choices"][0]["finish_reason"] = "stop"
    out = to_anthropic(body)
    assert out["content"] == [{"type": "text", "text": "I can't help with that."}]
    assert out["stop_reason"] == "refusal"


def test_a_fired_stop_sequence_is_a_plain_stop_for_openai_which_cannot_name_it() -> None:
    body = anthropic_response(
        content=[{"type": "text", "text": "1, 2, 3"}],
        stop_reason="stop_sequence",
        stop_sequence="END",
    )
    out = to_openai(body)
    assert out["choices"][0]["finish_reason"] == "stop"
    assert to_anthropic(out)["stop_reason"] == "end_turn"


def test_usage_to_openai_counts_cache_tokens_inside_prompt_tokens() -> None:
    usage = to_openai(anthropic_response())["usage"]
    assert usage == {
        "prompt_tokens": 135,
        "completion_tokens": 60,
        "total_tokens": 195,
        "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 10},
    }


def test_usage_to_anthropic_takes_cached_tokens_out_of_input() -> None:
    usage = to_anthropic(openai_response())["usage"]
    assert usage == {
        "input_tokens": 35,
        "output_tokens": 60,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 0,
    }


def test_usage_without_cache_details_is_plain() -> None:
    body = openai_response(usage={"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12})
    assert to_anthropic(body)["usage"]["input_tokens"] == 9
    no_cache = anthropic_response(usage={"input_tokens": 9, "output_tokens": 3})
    assert to_openai(no_cache)["usage"] == {
        "prompt_tokens": 9,
        "completion_tokens": 3,
        "total_tokens": 12,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def test_ids_are_derived_from_the_source_id_reversibly() -> None:
    out = to_openai(anthropic_response())
    assert out["id"] == "chatcmpl-01XFDUDYJgAACzvnptvVoYEL"
    assert to_anthropic(out)["id"] == "msg_01XFDUDYJgAACzvnptvVoYEL"
    assert to_anthropic(openai_response())["id"] == "msg_B9MHDbslfkBeAs8l4bebGdFOJ6PeG"


def test_model_is_the_upstreams_unless_given() -> None:
    assert to_openai(anthropic_response())["model"] == "claude-sonnet-4-5"
    assert to_openai(anthropic_response(), model="alias")["model"] == "alias"
    assert to_anthropic(openai_response(), model="alias")["model"] == "alias"


def test_anthropic_to_openai_to_anthropic_preserves_the_message() -> None:
    original = anthropic_response()
    back = to_anthropic(to_openai(original))
    assert back == original


def test_openai_to_anthropic_to_openai_preserves_the_completion() -> None:
    original = openai_response()
    back = to_openai(to_anthropic(original))
    expected = copy.deepcopy(original)
    assert back["created"] > 0
    back["created"] = expected["created"]
    assert back == expected


def test_same_format_response_passes_through() -> None:
    body = openai_response()
    assert response_to(OAI, body, source=OAI) is body
    assert response_to(ANT, anthropic_response(), source=ANT, model="alias")["model"] == "alias"


def test_malformed_bodies_do_not_crash() -> None:
    assert to_anthropic({"choices": []})["content"] == []
    out = to_openai({"content": None, "usage": {"input_tokens": "x"}})
    assert out["choices"][0]["message"]["content"] is None

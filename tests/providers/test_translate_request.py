"""Request translation matrix: every OpenAI ↔ Anthropic request mapping, in both directions."""

from __future__ import annotations

from typing import Any

import pytest
from anthropic.types import message_create_params as anthropic_params
from openai.types.chat import completion_create_params as openai_params
from pydantic import TypeAdapter

from bastion.providers.base import Format
from bastion.providers.translate import request_to

ANT, OAI = Format.ANTHROPIC, Format.OPENAI

_ANTHROPIC_REQ = TypeAdapter(anthropic_params.MessageCreateParamsStreaming)
_OPENAI_REQ = TypeAdapter(openai_params.CompletionCreateParamsStreaming)
# The installed anthropic SDK no longer lists sampling parameters on messages.create, but the
# Messages API still documents them for current models; they are checked separately.
_SAMPLING = ("temperature", "top_p")


def _force(value: Any) -> Any:
    """Walk a validated TypedDict so lazily validated iterables are checked too."""
    if isinstance(value, dict):
        return {k: _force(v) for k, v in value.items()}
    if isinstance(value, list | tuple) or type(value).__name__ == "ValidatorIterator":
        return [_force(v) for v in value]
    return value


def assert_valid_anthropic(body: dict[str, Any]) -> None:
    """The SDK's own param types accept the body and know every key in it (none is dropped)."""
    core = {k: v for k, v in body.items() if k not in _SAMPLING}
    assert _force(_ANTHROPIC_REQ.validate_python({**core, "stream": True})) == {
        **core,
        "stream": True,
    }


def assert_valid_openai(body: dict[str, Any]) -> None:
    """Same check against the OpenAI SDK's Chat Completions params."""
    full = {**body, "stream": True}
    assert _force(_OPENAI_REQ.validate_python(full)) == full


def to_anthropic(body: dict[str, Any]) -> dict[str, Any]:
    out = request_to(ANT, body, source=OAI, model="claude-x")
    assert_valid_anthropic(out)
    return out


def to_openai(body: dict[str, Any]) -> dict[str, Any]:
    out = request_to(OAI, body, source=ANT, model="gpt-x")
    assert_valid_openai(out)
    return out


def oa(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "alias", "messages": list(messages), **extra}


def an(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "alias", "max_tokens": 100, "messages": list(messages), **extra}


USER = {"role": "user", "content": "hi"}
WEATHER_TOOL_OA = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
WEATHER_TOOL_AN = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


# --- system ----------------------------------------------------------------------------


def test_openai_system_and_developer_messages_become_one_anthropic_system_in_order() -> None:
    body = oa(
        {"role": "system", "content": "one"},
        {"role": "developer", "content": [{"type": "text", "text": "two"}]},
        USER,
        {"role": "system", "content": "three"},
    )
    out = to_anthropic(body)
    assert out["system"] == "one\n\ntwo\n\nthree"
    assert out["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]


@pytest.mark.parametrize(
    "system",
    ["be brief", [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}]],
)
def test_anthropic_system_string_or_blocks_becomes_a_leading_system_message(system: Any) -> None:
    out = to_openai(an(USER, system=system))
    assert out["messages"][0] == {"role": "system", "content": "be brief"}
    assert out["messages"][1] == {"role": "user", "content": "hi"}


# --- turns -----------------------------------------------------------------------------


def test_consecutive_same_role_messages_merge_for_anthropic() -> None:
    body = oa(
        USER,
        {"role": "user", "content": "again"},
        {"role": "assistant", "content": "a"},
        {"role": "assistant", "content": "b"},
    )
    msgs = to_anthropic(body)["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant"]
    assert [b["text"] for b in msgs[0]["content"]] == ["hi", "again"]
    assert [b["text"] for b in msgs[1]["content"]] == ["a", "b"]


def test_conversation_opening_with_assistant_gets_a_user_turn_first_for_anthropic() -> None:
    msgs = to_anthropic(oa({"role": "assistant", "content": "Hello!"}, USER))["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]


def test_empty_text_is_dropped_rather_than_sent_as_an_empty_anthropic_block() -> None:
    msgs = to_anthropic(oa(USER, {"role": "assistant", "content": ""}, USER))["messages"]
    assert msgs == [{"role": "user", "content": [{"type": "text", "text": "hi"}] * 2}]


def test_multi_turn_anthropic_conversation_keeps_order_for_openai() -> None:
    body = an(USER, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "bye"})
    msgs = to_openai(body)["messages"]
    assert msgs == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "bye"},
    ]


# --- images ----------------------------------------------------------------------------


def test_openai_data_url_image_becomes_anthropic_base64_source_and_back() -> None:
    part = {
        "type": "image_url",
        "image_url": {"url": "data:image/jpeg;base64,QUJD", "detail": "low"},
    }
    body = oa({"role": "user", "content": [{"type": "text", "text": "what?"}, part]})
    out = to_anthropic(body)
    assert out["messages"][0]["content"][1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/jpeg", "data": "QUJD"},
    }
    back = to_openai(out)
    assert back["messages"][0]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/jpeg;base64,QUJD"},
    }


def test_http_image_url_maps_to_anthropic_url_source_and_back() -> None:
    url = "https://example.com/cat.png"
    body = oa({"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]})
    out = to_anthropic(body)
    assert out["messages"][0]["content"] == [
        {"type": "image", "source": {"type": "url", "url": url}}
    ]
    assert to_openai(out)["messages"][0]["content"] == [
        {"type": "image_url", "image_url": {"url": url}}
    ]


# --- tools -----------------------------------------------------------------------------


def test_function_tools_map_to_input_schema_tools_and_back() -> None:
    out = to_anthropic(oa(USER, tools=[WEATHER_TOOL_OA]))
    assert out["tools"] == [WEATHER_TOOL_AN]
    assert to_openai(out)["tools"] == [WEATHER_TOOL_OA]


def test_tools_without_counterpart_are_dropped() -> None:
    custom = {"type": "custom", "custom": {"name": "grammar"}}
    assert to_anthropic(oa(USER, tools=[custom, WEATHER_TOOL_OA]))["tools"] == [WEATHER_TOOL_AN]
    server = {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}
    assert to_openai(an(USER, tools=[server, WEATHER_TOOL_AN]))["tools"] == [WEATHER_TOOL_OA]


def test_function_without_parameters_gets_an_empty_object_schema() -> None:
    tool = {"type": "function", "function": {"name": "now"}}
    assert to_anthropic(oa(USER, tools=[tool]))["tools"] == [
        {"name": "now", "input_schema": {"type": "object", "properties": {}}}
    ]


def _assistant_calls(*calls: tuple[str, str, str]) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": i, "type": "function", "function": {"name": n, "arguments": a}}
            for i, n, a in calls
        ],
    }


def test_tool_call_arguments_string_becomes_input_object_and_back_with_ids_kept() -> None:
    body = oa(USER, _assistant_calls(("call_1", "get_weather", '{"city":"Paris"}')))
    out = to_anthropic(body)
    assert out["messages"][1] == {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}
        ],
    }
    back = to_openai(out)
    assert back["messages"][1] == body["messages"][1]


def test_invalid_json_arguments_are_kept_raw_instead_of_crashing() -> None:
    out = to_anthropic(oa(USER, _assistant_calls(("call_1", "f", '{"city": "Par'))))
    assert out["messages"][1]["content"][0]["input"] == {"_raw": '{"city": "Par'}
    back = to_openai(out)
    assert back["messages"][1]["tool_calls"][0]["function"]["arguments"] == '{"city": "Par'


def test_empty_arguments_mean_no_arguments() -> None:
    out = to_anthropic(oa(USER, _assistant_calls(("call_1", "now", ""))))
    assert out["messages"][1]["content"][0]["input"] == {}


def test_assistant_text_and_tool_calls_travel_together() -> None:
    msg = _assistant_calls(("call_1", "f", "{}"))
    msg["content"] = "Let me check."
    out = to_anthropic(oa(USER, msg))
    assert [b["type"] for b in out["messages"][1]["content"]] == ["text", "tool_use"]
    assert to_openai(out)["messages"][1]["content"] == "Let me check."


def test_consecutive_tool_messages_merge_into_one_user_turn_with_tool_results_first() -> None:
    body = oa(
        USER,
        _assistant_calls(("call_1", "f", "{}"), ("call_2", "g", "{}")),
        {"role": "tool", "tool_call_id": "call_1", "content": "r1"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "r2"}]},
        {"role": "user", "content": "thanks"},
    )
    msgs = to_anthropic(body)["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    assert msgs[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "r1"},
        {"type": "tool_result", "tool_use_id": "call_2", "content": "r2"},
        {"type": "text", "text": "thanks"},
    ]


def test_anthropic_tool_results_become_tool_messages_before_the_user_text() -> None:
    body = an(
        USER,
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [{"type": "text", "text": "42"}],
                },
                {"type": "text", "text": "and?"},
            ],
        },
    )
    msgs = to_openai(body)["messages"]
    assert msgs[1]["tool_calls"][0]["id"] == "toolu_1"
    assert msgs[2:] == [
        {"role": "tool", "tool_call_id": "toolu_1", "content": "42"},
        {"role": "user", "content": "and?"},
    ]


def test_tool_result_error_flag_becomes_a_prefix_and_is_read_back() -> None:
    body = an(
        USER,
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": "boom",
                    "is_error": True,
                }
            ],
        },
    )
    out = to_openai(body)
    assert out["messages"][2] == {
        "role": "tool",
        "tool_call_id": "toolu_1",
        "content": "[tool error] boom",
    }
    back = request_to(ANT, out, source=OAI, model="c")
    assert back["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "boom", "is_error": True}
    ]


def test_images_in_a_tool_result_follow_as_a_user_message_for_openai() -> None:
    img = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}
    body = an(
        USER,
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "shot", "input": {}}],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [{"type": "text", "text": "done"}, img],
                }
            ],
        },
    )
    msgs = to_openai(body)["messages"]
    assert msgs[2] == {"role": "tool", "tool_call_id": "toolu_1", "content": "done"}
    assert msgs[3] == {
        "role": "user",
        "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}],
    }


def test_tool_ids_anthropic_would_reject_are_rewritten_identically_in_call_and_result() -> None:
    body = oa(
        USER,
        _assistant_calls(("functions.lookup:0", "lookup", "{}")),
        {"role": "tool", "tool_call_id": "functions.lookup:0", "content": "ok"},
    )
    msgs = to_anthropic(body)["messages"]
    call_id = msgs[1]["content"][0]["id"]
    assert call_id.startswith("functions_lookup_0_")  # allowed characters kept, plus a digest
    assert msgs[2]["content"][0]["tool_use_id"] == call_id


# --- tool choice -----------------------------------------------------------------------

CHOICES = [
    ("auto", {"type": "auto"}),
    ("required", {"type": "any"}),
    ("none", {"type": "none"}),
    (
        {"type": "function", "function": {"name": "get_weather"}},
        {"type": "tool", "name": "get_weather"},
    ),
]


@pytest.mark.parametrize(("openai_choice", "anthropic_choice"), CHOICES)
def test_tool_choice_maps_both_ways(openai_choice: Any, anthropic_choice: dict[str, Any]) -> None:
    out = to_anthropic(oa(USER, tools=[WEATHER_TOOL_OA], tool_choice=openai_choice))
    assert out["tool_choice"] == anthropic_choice
    back = to_openai(an(USER, tools=[WEATHER_TOOL_AN], tool_choice=anthropic_choice))
    assert back["tool_choice"] == openai_choice


def test_parallel_tool_calls_false_means_disable_parallel_tool_use() -> None:
    out = to_anthropic(
        oa(USER, tools=[WEATHER_TOOL_OA], tool_choice="required", parallel_tool_calls=False)
    )
    assert out["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    back = to_openai(out)
    assert back["parallel_tool_calls"] is False
    assert back["tool_choice"] == "required"


def test_parallel_tool_calls_false_alone_becomes_auto_with_parallel_disabled() -> None:
    out = to_anthropic(oa(USER, tools=[WEATHER_TOOL_OA], parallel_tool_calls=False))
    assert out["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    assert "tool_choice" not in to_anthropic(oa(USER, tools=[WEATHER_TOOL_OA]))


def test_tool_choice_without_tools_is_dropped_because_both_apis_reject_it() -> None:
    assert "tool_choice" not in to_anthropic(
        oa(USER, tool_choice="auto", parallel_tool_calls=False)
    )
    out = to_openai(an(USER, tool_choice={"type": "auto", "disable_parallel_tool_use": True}))
    assert "tool_choice" not in out
    assert "parallel_tool_calls" not in out


# --- sampling and limits ---------------------------------------------------------------


@pytest.mark.parametrize(("stop", "expected"), [("END", ["END"]), (["a", "b"], ["a", "b"])])
def test_stop_string_or_list_becomes_stop_sequences(stop: Any, expected: list[str]) -> None:
    assert to_anthropic(oa(USER, stop=stop))["stop_sequences"] == expected


def test_whitespace_only_stop_sequences_are_dropped_for_anthropic() -> None:
    assert to_anthropic(oa(USER, stop=["\n", "END"]))["stop_sequences"] == ["END"]
    assert "stop_sequences" not in to_anthropic(oa(USER, stop="\n"))


def test_stop_sequences_become_stop_limited_to_openais_four() -> None:
    assert to_openai(an(USER, stop_sequences=list("abcdef")))["stop"] == list("abcd")


@pytest.mark.parametrize("key", ["max_tokens", "max_completion_tokens"])
def test_openai_token_limits_become_max_tokens(key: str) -> None:
    assert to_anthropic(oa(USER, **{key: 77}))["max_tokens"] == 77


def test_max_completion_tokens_wins_over_legacy_max_tokens() -> None:
    assert to_anthropic(oa(USER, max_tokens=10, max_completion_tokens=20))["max_tokens"] == 20


def test_missing_limit_gets_a_default_because_anthropic_requires_one() -> None:
    assert to_anthropic(oa(USER))["max_tokens"] == 4096


def test_anthropic_max_tokens_becomes_max_completion_tokens() -> None:
    out = to_openai(an(USER))
    assert out["max_completion_tokens"] == 100
    assert "max_tokens" not in out


@pytest.mark.parametrize(("given", "sent"), [(1.7, 1.0), (0.3, 0.3), (-1.0, 0.0), (0, 0.0)])
def test_temperature_is_clamped_to_anthropics_range(given: float, sent: float) -> None:
    assert to_anthropic(oa(USER, temperature=given))["temperature"] == sent


def test_temperature_and_top_p_pass_to_openai() -> None:
    out = to_openai(an(USER, temperature=0.5, top_p=0.9))
    assert (out["temperature"], out["top_p"]) == (0.5, 0.9)
    assert to_anthropic(oa(USER, top_p=0.8))["top_p"] == 0.8


def test_user_maps_to_metadata_user_id_and_back() -> None:
    out = to_anthropic(oa(USER, user="u-42"))
    assert out["metadata"] == {"user_id": "u-42"}
    assert to_openai(out)["user"] == "u-42"


def test_streaming_openai_request_always_asks_for_usage() -> None:
    out = to_openai(an(USER, stream=True))
    assert out["stream"] is True
    assert out["stream_options"] == {"include_usage": True}
    assert "stream_options" not in to_openai(an(USER))
    assert (
        to_anthropic(oa(USER, stream=True, stream_options={"include_usage": False}))["stream"]
        is True
    )


def test_fields_without_counterpart_are_not_sent() -> None:
    out = to_anthropic(
        oa(
            USER,
            n=2,
            seed=1,
            response_format={"type": "json_object"},
            logprobs=True,
            frequency_penalty=1,
        )
    )
    assert set(out) == {"model", "max_tokens", "messages"}
    back = to_openai(an(USER, top_k=5, thinking={"type": "enabled", "budget_tokens": 2000}))
    assert set(back) == {"model", "messages", "max_completion_tokens"}


def test_thinking_blocks_in_history_are_dropped_for_openai() -> None:
    thinking = {"type": "thinking", "thinking": "hmm", "signature": "sig"}
    body = an(USER, {"role": "assistant", "content": [thinking, {"type": "text", "text": "ok"}]})
    assert to_openai(body)["messages"][1] == {"role": "assistant", "content": "ok"}


def test_same_format_passes_through_with_the_upstream_model() -> None:
    body = oa(USER, n=3, stream=True)
    out = request_to(OAI, body, source=OAI, model="gpt-real")
    assert out == {**body, "model": "gpt-real"}
    assert body["model"] == "alias"


def test_target_model_name_is_used() -> None:
    assert to_anthropic(oa(USER))["model"] == "claude-x"
    assert to_openai(an(USER))["model"] == "gpt-x"

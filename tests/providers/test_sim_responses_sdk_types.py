"""Every body and every stream event the simulator's Responses API writes is the SDK's own type.

The simulator's ``/v1/responses`` is written apart from the gateway's Responses code, from
OpenAI's documented format; here random requests (text or item input, instructions, tools and
tool choices, token limits that end an answer early, text formats, echoed settings, in-band
errors) are run in-process and each unary body must validate as ``openai.types.responses.
Response`` and each event as its ``ResponseStreamEvent`` member, with no field missing and
none the SDK does not declare. The stream must also hold together: sequence numbers from 0, the
lifecycle order, deltas that add up to each ``done``, the SDK's own accumulator rebuilding the
final output (one content part per message: ``output_item.added`` carries ``content: []``),
and the same answer as the unary call.
"""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _responses_sdk_strict import events, replay, strict_event, strict_response
from bastion.providers.sim import responses_answer
from bastion.providers.sim.core import Simulator

WEATHER: dict[str, Any] = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
SCHEMA = {
    "type": "json_schema",
    "name": "answer",
    "schema": {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
    "strict": True,
}
TERMINAL = ("response.completed", "response.incomplete", "response.failed")

words = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=24)
inputs = st.one_of(
    words,
    st.just([{"role": "user", "content": [{"type": "input_text", "text": "Weather in Oslo?"}]}]),
    st.just(
        [
            {"role": "user", "content": "Weather in Oslo?"},
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": '{"city":"Oslo"}',
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "Snow, -3 C"},
        ]
    ),
)
requests = st.fixed_dictionaries(
    {
        "model": st.sampled_from(  # mostly whole answers, some cut by an in-band error
            ["sim-small"] * 4 + ["sim-small+fault=error_after:0", "sim-small+fault=error_after:4"]
        ),
        "input": inputs,
    },
    optional={
        "instructions": words,
        "tools": st.just([WEATHER]),
        "tool_choice": st.sampled_from(
            ["auto", "none", "required", {"type": "function", "name": "get_weather"}]
        ),
        "parallel_tool_calls": st.booleans(),
        "max_output_tokens": st.integers(1, 40),  # the answer is 24 tokens: some end early
        "temperature": st.sampled_from([0.0, 0.7, 2.0]),
        "top_p": st.sampled_from([0.1, 1.0]),
        "text": st.sampled_from(
            [{"format": {"type": "json_object"}}, {"format": SCHEMA}, {"verbosity": "low"}]
        ),
        "reasoning": st.sampled_from([{"effort": "low"}, {"effort": None}]),
        "metadata": st.dictionaries(st.sampled_from(["a", "b"]), words, max_size=2),
        "store": st.booleans(),
        "truncation": st.sampled_from(["auto", "disabled"]),
        "user": words,
        "safety_identifier": words,
        "prompt_cache_key": words,
        "service_tier": st.sampled_from(["auto", "default", "flex"]),
        "max_tool_calls": st.integers(1, 3),
        "top_logprobs": st.integers(0, 5),
    },
)


async def _call(sim: Simulator, body: dict[str, Any]) -> tuple[int, bytes]:
    result = await sim.handle("POST", "/v1/responses", {}, orjson.dumps(body))
    return result.status, await result.read()


def _texts(output: list[Any]) -> list[tuple[str, ...]]:
    """What an output says: each message's parts' texts, each call's name and arguments."""
    out: list[tuple[str, ...]] = []
    for item in output:
        if item.type == "message":
            out.append(("message", *(p.text for p in item.content)))
        else:
            out.append(("function_call", item.name, item.arguments))
    return out


def check_stream(body: bytes, request: dict[str, Any]) -> Any:
    """Every event strictly typed and the sequence whole; returns the terminal response."""
    raw = events(body)
    parsed = [strict_event(e) for e in raw]
    kinds = [e.type for e in parsed]
    assert [e.sequence_number for e in parsed] == list(range(len(parsed)))
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] in TERMINAL and sum(k in TERMINAL for k in kinds) == 1
    for start in parsed[:2]:
        assert start.response.status == "in_progress" and start.response.output == []
    final = parsed[-1].response
    assert all(e.response.id == final.id for e in parsed if hasattr(e, "response"))
    if kinds[-1] == "response.failed":
        assert kinds[-2] == "error" and final.status == "failed" and final.error is not None
        return final
    added = [e for e in parsed if e.type == "response.output_item.added"]
    done = [e for e in parsed if e.type == "response.output_item.done"]
    assert [e.output_index for e in added] == [e.output_index for e in done]
    assert [e.output_index for e in added] == list(range(len(final.output)))
    for a in added:
        assert a.item.status == "in_progress"
        assert a.item.type != "message" or a.item.content == []  # its part comes next
    assert [e.item.model_dump() for e in done] == [i.model_dump() for i in final.output]
    for i, item in enumerate(final.output):
        mine = [e for e in parsed if getattr(e, "output_index", None) == i]
        if item.type == "message":
            deltas = "".join(e.delta for e in mine if e.type == "response.output_text.delta")
            (text_done,) = (e for e in mine if e.type == "response.output_text.done")
            assert deltas == text_done.text == item.content[0].text
        else:
            deltas = "".join(
                e.delta for e in mine if e.type == "response.function_call_arguments.delta"
            )
            (args_done,) = (e for e in mine if e.type == "response.function_call_arguments.done")
            assert deltas == args_done.arguments == item.arguments
    # the SDK's own accumulator, fed every event before the terminal one, rebuilds the output
    assert _texts(replay(parsed).output) == _texts(final.output)
    assert final.usage is not None and final.model == "sim-small"
    return final


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=requests)
async def test_every_sim_body_and_event_is_the_sdks_type(request: dict[str, Any]) -> None:
    sim = Simulator(seed=7)
    status, body = await _call(sim, {**request, "stream": False})
    assert status == 200, body
    unary = strict_response(orjson.loads(body))
    assert unary.status in ("completed", "incomplete") and unary.model == "sim-small"
    limit = request.get("max_output_tokens")
    ended_early = unary.status == "incomplete"
    assert not ended_early or limit is not None
    if ended_early:
        assert unary.incomplete_details is not None
        assert unary.incomplete_details.reason == "max_output_tokens"
    assert unary.usage is not None
    assert unary.usage.total_tokens == unary.usage.input_tokens + unary.usage.output_tokens
    assert unary.instructions == request.get("instructions")
    assert unary.metadata == request.get("metadata", {})
    assert unary.tools == [] or unary.tools[0].strict is True  # the Responses API's default
    status, body = await _call(sim, {**request, "stream": True})
    assert status == 200, body
    final = check_stream(body, request)
    if final.status != "failed":  # the same answer, streamed
        assert (final.status, _texts(final.output)) == (unary.status, _texts(unary.output))


async def test_a_streamed_function_call_is_typed_event_by_event() -> None:
    sim = Simulator(seed=1)
    request = {"model": "sim-small", "input": "Weather in Oslo?", "tools": [WEATHER]}
    status, body = await _call(sim, {**request, "stream": True})
    final = check_stream(body, request)
    kinds = [e["type"] for e in events(body)]
    assert status == 200 and "response.function_call_arguments.done" in kinds
    (call,) = final.output
    assert call.type == "function_call" and call.name == "get_weather" and call.id.startswith("fc_")


async def test_an_in_band_error_is_an_error_event_then_response_failed() -> None:
    sim = Simulator(seed=1)
    status, body = await _call(
        sim, {"model": "sim-small+fault=error_after:3", "input": "Hi", "stream": True}
    )
    raw = events(body)
    assert status == 200 and [e["type"] for e in raw[-2:]] == ["error", "response.failed"]
    assert raw[-2]["code"] == raw[-1]["response"]["error"]["code"] == "server_error"
    failed = strict_event(raw[-1]).response
    assert failed.status == "failed" and failed.completed_at is None
    assert [i.status for i in failed.output] == ["incomplete"]  # cut short, never done


async def test_a_stream_without_its_final_chat_event_ends_without_a_terminal_event() -> None:
    sim = Simulator(seed=1)
    status, body = await _call(
        sim, {"model": "sim-small+fault=no_final", "input": "Hi", "stream": True}
    )
    kinds = [e["type"] for e in events(body)]
    assert status == 200 and "response.output_text.delta" in kinds
    assert not set(kinds) & set(TERMINAL)


async def test_request_errors_name_the_field_as_the_api_does() -> None:
    sim = Simulator(seed=1)
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"input": "Hi"}, "model", "missing_required_parameter"),
        (
            {"model": "sim-small", "input": [{"type": "function_call_output", "output": "x"}]},
            "input[0].call_id",
            "missing_required_parameter",
        ),
        (
            {"model": "sim-small", "input": [{"role": "user", "content": [{"type": "x"}]}]},
            "input[0].content[0].type",
            "invalid_value",
        ),
        ({"model": "sim-small", "input": "Hi", "max_output_tokens": 0}, "max_output_tokens", ""),
        ({"model": "sim-small", "input": "Hi", "previous_response_id": "resp_1"}, "", ""),
    ]
    for body, param, code in cases:
        status, raw = await _call(sim, body)
        err = orjson.loads(raw)["error"]
        assert status == 400 and err["type"] == "invalid_request_error", raw
        assert err["param"] == (param or next(k for k in body if k not in ("model", "input")))
        assert not code or err["code"] == code


def test_the_answer_module_builds_on_the_sims_chat_shape_only() -> None:
    """A chat body with text and a call becomes one message item and one call item."""
    chat = {
        "model": "m",
        "choices": [
            {
                "message": {
                    "content": "Hi",
                    "tool_calls": [{"id": "call_9", "function": {"name": "f", "arguments": "{}"}}],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2},
    }
    echo = {"model": "m", "tools": [], "tool_choice": "auto", "parallel_tool_calls": True}
    r = strict_response(orjson.loads(responses_answer.response_body(chat, "resp_1", echo, 1)))
    assert [i.type for i in r.output] == ["message", "function_call"]
    assert r.output[1].call_id == "call_9" and r.usage is not None and r.usage.total_tokens == 7

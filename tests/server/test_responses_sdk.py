"""The official OpenAI SDK's Responses API (`client.responses`) against a real `bastion serve`."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import openai
import pydantic
import pytest
from tests.conftest import RunningGateway, start_gateway, stop, write_config

from bastion.store import open_store
from bastion.store.models import CallRecord

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
EMAIL = "jane.doe@example.com"
TEXT_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    tmp = tmp_path_factory.mktemp("responses")
    features = {
        "default": {"pii_output": "off"},  # answers as the model wrote them
        "broke": {"daily_budget_usd": 0.0},
        "redact": {"pii_output": "redact"},
        "scrub_in": {"pii_provider": True, "pii_output": "off"},
        "off": {"degraded": {"mode": "message", "message": "Manual mode, sorry."}},
    }
    g = start_gateway(write_config(tmp, features=features))
    yield g
    stop(g.proc)


@pytest.fixture
def client(gw: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.key, max_retries=0)


def _feature(name: str) -> dict[str, Any]:
    return {"extra_headers": {"x-bastion-feature": name}}


def _record(gw: RunningGateway, request_id: str) -> CallRecord:
    """The call's record, read back from the gateway's own store (written off the hot path)."""
    url = f"sqlite:///{gw.config_path.parent / 'bastion.db'}"

    async def find() -> CallRecord | None:
        async with open_store(url) as store:
            recs = await store.recent_calls(200)
        return next((r for r in recs if r.request_id == request_id), None)

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rec = asyncio.run(find())
        if rec is not None:
            return rec
        time.sleep(0.1)
    raise AssertionError(f"no record for {request_id}")


def test_create_returns_a_response_object_with_text_usage_and_its_record(
    client: openai.OpenAI, gw: RunningGateway
) -> None:
    r = client.responses.create(model="gpt-4.1", instructions="Be brief.", input="Hello there")
    assert r.object == "response" and r.id.startswith("resp_")
    assert r.status == "completed" and r.error is None and r.incomplete_details is None
    assert r.instructions == "Be brief."
    [item] = r.output
    assert item.type == "message" and item.role == "assistant" and item.status == "completed"
    assert item.content[0].type == "output_text" and len(r.output_text) > 10
    u = r.usage
    assert u is not None and u.input_tokens > 0 and u.output_tokens > 0
    assert u.total_tokens == u.input_tokens + u.output_tokens
    assert u.input_tokens_details.cached_tokens == 0
    assert u.output_tokens_details.reasoning_tokens == 0
    rec = _record(gw, "req_" + r.id.removeprefix("resp_"))
    assert rec.status == 200 and rec.output_text == r.output_text
    assert "Hello there" in (rec.input_text or "") and rec.cost_usd > 0
    assert (rec.input_tokens, rec.output_tokens) == (u.input_tokens, u.output_tokens)


def test_stream_events_follow_the_documented_sequence_with_sequence_numbers(
    client: openai.OpenAI,
) -> None:
    with client.responses.stream(model="gpt-4.1", input="Stream please") as s:
        events = list(s)
        final = s.get_final_response()
    kinds = [e.type for e in events]
    collapsed = [k for i, k in enumerate(kinds) if i == 0 or k != kinds[i - 1]]
    assert collapsed == TEXT_EVENTS
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    done = next(e for e in events if e.type == "response.output_text.done")
    assert deltas == done.text == final.output_text and len(deltas) > 10
    ids = {e.response.id for e in events if hasattr(e, "response")}
    assert ids == {final.id}
    assert final.status == "completed" and final.usage is not None
    assert final.usage.output_tokens > 0


def test_create_with_stream_true_yields_the_same_events(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model="gpt-4.1", input="Raw stream", stream=True))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_tool_call_round_trip(client: openai.OpenAI) -> None:
    first = client.responses.create(model="gpt-4.1", input="Weather in Paris?", tools=[WEATHER])  # type: ignore[list-item]
    [call] = first.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.call_id and json.loads(call.arguments)["city"]
    second = client.responses.create(
        model="gpt-4.1",
        tools=[WEATHER],  # type: ignore[list-item]
        input=[
            {"role": "user", "content": "Weather in Paris?"},
            call.model_dump(exclude_none=True),  # type: ignore[list-item]
            {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"},
        ],
    )
    assert second.status == "completed"
    assert "Sunny, 21 C" in second.output_text


def test_earlier_output_items_sent_back_as_input_continue_the_conversation(
    client: openai.OpenAI, gw: RunningGateway
) -> None:
    first = client.responses.create(model="gpt-4.1", input="Name a colour.")
    history: list[Any] = [
        {"role": "user", "content": "Name a colour."},
        *[o.model_dump(exclude_none=True) for o in first.output],
        {"role": "user", "content": [{"type": "input_text", "text": "And another?"}]},
    ]
    second = client.responses.create(model="gpt-4.1", input=history)
    assert second.status == "completed" and second.output_text
    assert first.usage is not None and second.usage is not None
    # the earlier answer went upstream as the assistant's turn: it is counted as input
    assert second.usage.input_tokens > first.usage.output_tokens
    rec = _record(gw, "req_" + second.id.removeprefix("resp_"))
    assert "And another?" in (rec.input_text or "")


def test_an_idempotent_retry_replays_the_same_response(client: openai.OpenAI) -> None:
    for stream in (False, True):
        key = {"idempotency-key": f"resp-idem-{stream}"}
        if stream:
            a, b = (
                list(
                    client.responses.create(
                        model="gpt-4.1", input="Once", stream=True, extra_headers=key
                    )
                )
                for _ in range(2)
            )
            assert len(a) == len(b) > 5
            for x, y in zip(a, b, strict=True):
                if x.type == "response.completed" and y.type == "response.completed":
                    # when this delivery completed; everything else is the stored answer
                    x.response.completed_at = y.response.completed_at = None
                assert x.to_dict() == y.to_dict()
        else:
            one = client.responses.create(model="gpt-4.1", input="Once", extra_headers=key)
            two = client.responses.create(model="gpt-4.1", input="Once", extra_headers=key)
            assert one.id == two.id and one.output_text == two.output_text


def test_streamed_tool_call_arguments_reassemble(client: openai.OpenAI) -> None:
    with client.responses.stream(model="gpt-4.1", input="Weather in Oslo?", tools=[WEATHER]) as s:  # type: ignore[list-item]
        events = list(s)
        final = s.get_final_response()
    kinds = [e.type for e in events]
    assert "response.function_call_arguments.delta" in kinds
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    [call] = final.output
    assert call.type == "function_call" and deltas == done.arguments == call.arguments
    assert json.loads(call.arguments)["city"]


class City(pydantic.BaseModel):
    name: str
    population: int


def test_structured_output_parses_into_the_callers_model(client: openai.OpenAI) -> None:
    # text.format (json_schema) becomes the chat response_format the simulator and guards honour
    r = client.responses.parse(model="gpt-4.1", input="Biggest city?", text_format=City)
    assert isinstance(r.output_parsed, City) and r.output_parsed.population >= 0
    assert r.text is not None and r.text.format is not None
    assert r.text.format.type == "json_schema"
    with client.responses.stream(model="gpt-4.1", input="Biggest city?", text_format=City) as s:
        list(s)
        assert isinstance(s.get_final_response().output_parsed, City)


def test_max_output_tokens_ends_incomplete_in_body_and_stream(client: openai.OpenAI) -> None:
    r = client.responses.create(model="gpt-4.1", input="Write at length", max_output_tokens=3)
    assert r.status == "incomplete" and r.incomplete_details is not None
    assert r.incomplete_details.reason == "max_output_tokens" and r.max_output_tokens == 3
    events = list(
        client.responses.create(
            model="gpt-4.1", input="Write at length", max_output_tokens=3, stream=True
        )
    )
    last = events[-1]
    assert last.type == "response.incomplete"
    assert last.response.incomplete_details.reason == "max_output_tokens"  # type: ignore[union-attr]


def test_budget_refusal_is_a_429_in_openai_format(client: openai.OpenAI) -> None:
    for stream in (False, True):
        with pytest.raises(openai.RateLimitError) as ei:
            client.responses.create(model="gpt-4.1", input="Hi", stream=stream, **_feature("broke"))
        assert ei.value.status_code == 429 and ei.value.code == "budget_exceeded"


def test_pii_in_answers_is_redacted_when_the_feature_asks(client: openai.OpenAI) -> None:
    prompt = f"[[sim:reply=Write to {EMAIL} today.]]"
    r = client.responses.create(model="gpt-4.1", input=prompt, **_feature("redact"))
    assert "Write to" in r.output_text and EMAIL not in r.output_text
    with client.responses.stream(model="gpt-4.1", input=prompt, **_feature("redact")) as s:
        events = list(s)
        final = s.get_final_response()
    streamed = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert "Write to" in final.output_text and EMAIL not in streamed + final.output_text
    # without the feature the same answer is passed through as written
    assert EMAIL in client.responses.create(model="gpt-4.1", input=prompt).output_text


def test_pii_in_a_function_call_output_is_scrubbed_before_the_provider(
    client: openai.OpenAI,
) -> None:
    def ask(feature: str) -> str:
        return client.responses.create(
            model="gpt-4.1",
            tools=[WEATHER],  # type: ignore[list-item]
            input=[
                {"role": "user", "content": "Who reported the weather?"},
                {
                    "type": "function_call",
                    "call_id": "call_1",
                    "name": "get_weather",
                    "arguments": "{}",
                },
                {"type": "function_call_output", "call_id": "call_1", "output": f"By {EMAIL}"},
            ],
            **_feature(feature),
        ).output_text

    assert EMAIL in ask("default")  # the simulator repeats the tool's output
    assert EMAIL not in ask("scrub_in")  # answers are not redacted here: the input was


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"previous_response_id": "resp_123"}, "previous_response_id"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
        ({"input": [{"role": "user", "content": 5}]}, "input[0].content"),
        ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"input": []}, "input"),
    ],
)
def test_bad_input_gets_a_clear_400_naming_the_field(
    client: openai.OpenAI, extra: dict[str, Any], param: str
) -> None:
    body: dict[str, Any] = {"model": "gpt-4.1", "input": "Hi", **extra}
    with pytest.raises(openai.BadRequestError) as ei:
        client.responses.create(**body)
    err = ei.value.body
    assert isinstance(err, dict) and err["param"] == param
    assert err["type"] == "invalid_request_error" and err["message"].startswith(param)


def test_unknown_model_is_a_404_and_retrieve_is_not_offered(
    client: openai.OpenAI, tmp_path: Path
) -> None:
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-model", input="Hi")
    r = client.responses.create(model="gpt-4.1", input="Hi")
    assert r.to_dict()["store"] is False  # nothing is stored, so nothing can be retrieved
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)


def test_a_stream_cut_upstream_ends_failed_never_completed(client: openai.OpenAI) -> None:
    events = list(
        client.responses.create(model="sim-cut+fault=error_after:3", input="Stream", stream=True)
    )
    kinds = [e.type for e in events]
    assert "response.completed" not in kinds
    assert kinds[-2:] == ["error", "response.failed"]
    assert events[-1].response.status == "failed"  # type: ignore[union-attr]


def test_the_kill_switch_answers_with_the_degraded_message_as_a_response(
    client: openai.OpenAI, gw: RunningGateway
) -> None:
    def kill(on: bool) -> None:
        r = httpx.post(
            gw.url + "/admin/kill",
            json={"feature": "off", "on": on},
            headers={"authorization": f"Bearer {gw.key}"},
        )
        assert r.status_code == 200, r.text

    kill(True)
    try:
        r = client.responses.create(model="gpt-4.1", input="Hi", **_feature("off"))
        assert r.status == "completed" and r.output_text == "Manual mode, sorry."
        with client.responses.stream(model="gpt-4.1", input="Hi", **_feature("off")) as s:
            kinds = [e.type for e in s]
            final = s.get_final_response()
        assert kinds[-1] == "response.completed" and final.output_text == "Manual mode, sorry."
    finally:
        kill(False)
    assert client.responses.create(model="gpt-4.1", input="Hi", **_feature("off")).output_text != (
        "Manual mode, sorry."
    )

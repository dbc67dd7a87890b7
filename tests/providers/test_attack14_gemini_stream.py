"""Attacks (issue #14) on Gemini streams.

A Gemini function call without arguments (``args: {}``, or no ``args``)
reached a streaming OpenAI client with ``arguments: ""``, which is not JSON: ``json.loads`` of
the accumulated arguments fails, where the same call unstreamed (and every other provider,
streamed or not) gives ``"{}"``. The Responses API's function_call item carried ``""`` too.

A stream chunk that is not JSON was dropped without a trace where every other provider's is
counted in the call's record (``malformed_events``): the record now says so for Gemini too,
and the stream still ends cleanly with the rest of the answer.

Real `bastion serve` + a separate `bastion sim` speaking Gemini, reached by the OpenAI SDK.
"""

from __future__ import annotations

import json
from typing import Any

import openai
from hypothesis import given
from hypothesis import strategies as st
from tests.conftest import RunningGateway
from tests.providers._foreign_sdk_harness import (
    GEMINI_KEY_ENV,
    dep,
    gateway_fixture,
    gemini_providers,
    record,
    sim_url_fixture,
    text_and_finals,
)

from bastion.providers.base import Format
from bastion.providers.sse import SSEEvent
from bastion.providers.translate import StreamTranslator

TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {"name": "ping", "parameters": {"type": "object", "properties": {}}},
    }
]
ASK: list[Any] = [{"role": "user", "content": "ping now"}]


def _models() -> dict[str, Any]:
    return {
        "gem": {"deployments": [dep("gem", "gemini-2.5-flash")]},
        "gem-bad-chunk": {
            "deployments": [dep("gem", "gemini-2.5-flash", {"x-sim-fault": "malformed_after:2"})]
        },
    }


sim_url = sim_url_fixture()
gw = gateway_fixture("atk14gem", gemini_providers, _models, {GEMINI_KEY_ENV: "test-key"})


def test_an_argumentless_call_streams_as_json_to_openai_clients(gw: RunningGateway) -> None:
    oa = openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.key, max_retries=0)
    args = ""
    for chunk in oa.chat.completions.create(
        model="gem", messages=ASK, tools=TOOLS, tool_choice="required", stream=True
    ):
        for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            args += (call.function.arguments or "") if call.function else ""
    assert json.loads(args) == {}
    unary = oa.chat.completions.create(
        model="gem", messages=ASK, tools=TOOLS, tool_choice="required"
    )
    (whole,) = unary.choices[0].message.tool_calls or []
    assert whole.type == "function" and json.loads(whole.function.arguments) == {}


def test_an_argumentless_call_streams_as_json_to_responses_clients(gw: RunningGateway) -> None:
    oa = openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.key, max_retries=0)
    tools: list[Any] = [{"type": "function", "name": "ping", "parameters": {"type": "object"}}]
    with oa.responses.stream(
        model="gem", input="ping now", tools=tools, tool_choice="required"
    ) as s:
        final = s.get_final_response()
    (item,) = [i for i in final.output if i.type == "function_call"]
    assert json.loads(item.arguments) == {}


@given(st.sampled_from([{}, None]), st.booleans())
def test_any_gemini_call_streams_arguments_openai_clients_can_parse(
    args: dict[str, Any] | None, with_text: bool
) -> None:
    call: dict[str, Any] = {"name": "ping"}
    if args is not None:
        call["args"] = args
    parts: list[Any] = [{"text": "ok"}] if with_text else []
    parts.append({"functionCall": call})
    chunk = {
        "candidates": [
            {"content": {"role": "model", "parts": parts}, "index": 0, "finishReason": "STOP"}
        ],
        "modelVersion": "gemini-2.5-flash",
    }
    tr = StreamTranslator(Format.GEMINI, Format.OPENAI, model="gem", include_usage=False)
    data = json.dumps(chunk).encode()
    out = tr.feed(SSEEvent(raw=b"data: " + data + b"\n\n", event=None, data=data)) + tr.finish()
    got = ""
    for raw in b"".join(out).split(b"\n\n"):
        data = raw.removeprefix(b"data: ")
        if not data or data == b"[DONE]":
            continue
        for ch in json.loads(data)["choices"]:
            for c in ch["delta"].get("tool_calls") or ():
                got += c["function"].get("arguments") or ""
    assert json.loads(got) == {}


def test_a_malformed_gemini_chunk_is_counted_in_the_record(gw: RunningGateway) -> None:
    oa = openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.key, max_retries=0)
    raw = oa.chat.completions.with_raw_response.create(
        model="gem-bad-chunk", messages=ASK, stream=True
    )
    finish = text_and_finals(list(raw.parse()))[1]
    assert finish == ["stop"]  # the rest of the answer still came, and ended cleanly
    rec = record(gw, raw.headers["x-request-id"])
    assert rec.flags.get("malformed_events") == 1

"""The gateway's own Responses builders write the SDK's types, and a stream the SDK rebuilds.

``request.to_chat`` turns random Responses requests into chat bodies, the simulator answers them
(unary and streamed, in-band errors included), and the gateway's ``response.from_chat`` and
``stream.ResponsesEmitter`` write the answers: every body must validate as
``openai.types.responses.Response`` and every event as its ``ResponseStreamEvent`` member,
strictly (nothing required missing, nothing undeclared but the two fields OpenAI's own examples
carry and the SDK's types leave out: ``store`` on the response and ``name`` on
``function_call_arguments.done``). Fed to the SDK's stream accumulator, the events must rebuild
the final output: before the fix a message's ``output_item.added`` carried a text part and its
``content_part.added`` a second one, so the SDK's snapshot held every message twice over
(``['Hello', '']``); OpenAI documents ``content: []`` there.
"""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _responses_sdk_strict import events, replay, strict_event, strict_response
from bastion.providers.sim.core import Simulator
from bastion.responses.request import to_chat
from bastion.responses.response import from_chat
from bastion.responses.stream import ResponsesEmitter

WEATHER: dict[str, Any] = {
    "type": "function",
    "name": "get_weather",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
TERMINAL = ("response.completed", "response.incomplete", "response.failed")
# in OpenAI's examples, not in the SDK's types
DOCUMENTED = frozenset({"$.response.store", "$.name"})

requests = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["sim-small", "sim-small+fault=error_after:3"]),
        "input": st.sampled_from(["Hi", "Weather in Oslo?", "Write at length"]),
    },
    optional={
        "instructions": st.just("Be brief."),
        "tools": st.just([WEATHER]),
        "tool_choice": st.sampled_from(["auto", "required"]),
        "max_output_tokens": st.integers(1, 40),
        "metadata": st.just({"k": "v"}),
    },
)


def _texts(output: list[Any]) -> list[tuple[str, ...]]:
    return [
        ("message", *(p.text for p in i.content))
        if i.type == "message"
        else ("function_call", i.name, i.arguments)
        for i in output
    ]


async def _chat(sim: Simulator, chat: dict[str, Any]) -> bytes:
    result = await sim.handle("POST", "/v1/chat/completions", {}, orjson.dumps(chat))
    assert result.status == 200
    return await result.read()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=requests)
async def test_gateway_bodies_and_events_are_the_sdks_types(request: dict[str, Any]) -> None:
    sim = Simulator(seed=3)
    translated = to_chat({**request, "stream": True})
    echo = translated.echo
    unary_chat = {k: v for k, v in translated.chat.items() if k not in ("stream", "stream_options")}
    body = from_chat(orjson.loads(await _chat(sim, unary_chat)), "resp_1", echo, now=1)
    assert body.get("store") is False  # OpenAI's examples echo it; the SDK's type has no field
    unary = strict_response({k: v for k, v in body.items() if k != "store"})
    emitter = ResponsesEmitter("resp_2", echo, created_at=1)
    out = emitter.feed(await _chat(sim, translated.chat)) + emitter.finish()
    parsed = [strict_event(e, DOCUMENTED) for e in events(b"".join(out))]
    kinds = [e.type for e in parsed]
    assert [e.sequence_number for e in parsed] == list(range(len(parsed)))
    assert kinds[-1] in TERMINAL
    for added in (e for e in parsed if e.type == "response.output_item.added"):
        assert added.item.type != "message" or added.item.content == []
    final = parsed[-1].response
    if final.status != "failed":
        assert _texts(replay(parsed).output) == _texts(final.output)
        assert (final.status, _texts(final.output)) == (unary.status, _texts(unary.output))


async def test_the_sdk_snapshot_holds_one_part_per_message() -> None:
    """The regression, plainly: the snapshot after ``output_text.done`` is the text, once."""
    sim = Simulator(seed=3)
    translated = to_chat({"model": "sim-small", "input": "Hi", "stream": True})
    emitter = ResponsesEmitter("resp_3", translated.echo, created_at=1)
    out = emitter.feed(await _chat(sim, translated.chat)) + emitter.finish()
    parsed = [strict_event(e, DOCUMENTED) for e in events(b"".join(out))]
    (message,) = replay(parsed).output
    assert [p.text for p in message.content] == [parsed[-1].response.output_text]

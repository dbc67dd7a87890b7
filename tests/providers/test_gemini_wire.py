"""The simulator's Gemini wire, checked by Google's own SDK (google-genai) over HTTP against a
`bastion sim` process: what the SDK sends is accepted and what the fake answers parses into the
SDK's types. The checks the SDK cannot make (refusals, stream framing, faults) use raw HTTP
and the in-process simulator.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from tests.cost._cost_support import inproc_config, sim_process

from bastion.gateway import Gateway
from bastion.providers.sim.core import Simulator

MODEL = "gemini-2.5-flash"
WEATHER = types.FunctionDeclaration(
    name="get_weather",
    description="Weather for a city",
    parameters_json_schema={
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
)
ASK = "Use the get_weather tool for Paris"


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    with sim_process() as url:
        yield url


def _client(sim_url: str, headers: dict[str, str] | None = None) -> genai.Client:
    opts = types.HttpOptions(base_url=sim_url, api_version="v1beta", headers=headers or {})
    return genai.Client(api_key="sim-key", http_options=opts)


def _post(url: str, body: Any, headers: dict[str, str]) -> tuple[int, bytes]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    req = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _body(text: str = "Say hello") -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": text}]}]}


def test_sdk_generate_content_text_and_usage(sim_url: str) -> None:
    cfg = types.GenerateContentConfig(system_instruction="Be brief.", max_output_tokens=64)
    client = _client(sim_url)
    res = client.models.generate_content(model=MODEL, contents="Say hello", config=cfg)
    assert res.text
    (cand,) = res.candidates or []
    assert cand.finish_reason == types.FinishReason.STOP
    assert cand.content is not None and cand.content.role == "model"
    usage = res.usage_metadata
    assert usage is not None and usage.prompt_token_count and usage.candidates_token_count
    assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count
    assert res.model_version == MODEL and res.response_id


def test_sdk_stream_pieces_then_one_finish_with_usage(sim_url: str) -> None:
    client = _client(sim_url)
    chunks = list(client.models.generate_content_stream(model=MODEL, contents="Tell me more"))
    assert len(chunks) > 2
    finishes = [c.candidates[0].finish_reason for c in chunks if c.candidates]
    assert [f for f in finishes if f is not None] == [types.FinishReason.STOP]
    assert finishes[-1] == types.FinishReason.STOP  # the finish is on the last chunk
    assert "".join(c.text or "" for c in chunks)
    last = chunks[-1].usage_metadata
    assert last is not None and last.candidates_token_count and last.prompt_token_count


def test_sdk_function_call_and_response_round_trip(sim_url: str) -> None:
    cfg = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[WEATHER])],
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )
    client = _client(sim_url)
    res = client.models.generate_content(model=MODEL, contents=ASK, config=cfg)
    (call,) = res.function_calls or []
    assert call.name == "get_weather" and call.args == {"city": "Paris"}
    assert call.id is None  # optional in FunctionCall; this API leaves it out
    contents: list[Any] = [
        types.Content(role="user", parts=[types.Part(text=ASK)]),
        res.candidates[0].content,  # type: ignore[index]
        types.Content(
            role="user",
            parts=[
                types.Part.from_function_response(name="get_weather", response={"output": "18C"})
            ],
        ),
    ]
    again = client.models.generate_content(model=MODEL, contents=contents, config=cfg)
    assert again.text and not again.function_calls
    stream = list(client.models.generate_content_stream(model=MODEL, contents=ASK, config=cfg))
    calls = [fc for c in stream for fc in (c.function_calls or [])]
    assert [(c.name, c.args) for c in calls] == [("get_weather", {"city": "Paris"})]


@pytest.mark.parametrize(
    ("fault", "code", "status"),
    [
        ("status:429;retry_after:7", 429, "RESOURCE_EXHAUSTED"),
        ("status:500", 500, "INTERNAL"),
        ("status:503", 503, "UNAVAILABLE"),
        ("status:529", 503, "UNAVAILABLE"),
        ("context_length", 400, "INVALID_ARGUMENT"),
    ],
)
def test_sdk_errors_carry_googles_code_and_status(
    sim_url: str, fault: str, code: int, status: str
) -> None:
    client = _client(sim_url, {"x-sim-fault": fault})
    with pytest.raises(genai_errors.APIError) as err:
        client.models.generate_content(model=MODEL, contents="hi")
    assert err.value.code == code and err.value.status == status
    if code == 429:
        details = err.value.details["error"]["details"]
        assert details == [
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}
        ]
    if fault == "context_length":
        assert "exceeds the maximum number of tokens allowed" in (err.value.message or "")


def test_sdk_blocked_prompt_has_prompt_feedback_and_no_candidates(sim_url: str) -> None:
    client = _client(sim_url, {"x-sim-fault": "content_policy"})
    res = client.models.generate_content(model=MODEL, contents="hi")
    assert not res.candidates
    assert res.prompt_feedback is not None
    assert res.prompt_feedback.block_reason == types.BlockedReason.SAFETY


def test_key_is_required_and_checked_in_googles_words() -> None:
    async def run() -> None:
        sim = Simulator(api_key="right")
        path = f"/v1beta/models/{MODEL}:generateContent"
        none = await sim.handle("POST", path, {}, orjson.dumps(_body()))
        err = orjson.loads(await none.read())["error"]
        assert none.status == 403 and err["status"] == "PERMISSION_DENIED"
        wrong = await sim.handle("POST", path, {"x-goog-api-key": "bad"}, orjson.dumps(_body()))
        err = orjson.loads(await wrong.read())["error"]
        assert wrong.status == 400 and err["status"] == "INVALID_ARGUMENT"
        assert err["details"][0]["reason"] == "API_KEY_INVALID"
        ok = await sim.handle("POST", path + "?key=right", {}, orjson.dumps(_body()))
        assert ok.status == 200

    asyncio.run(run())


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({**_body(), "model": MODEL}, 'Unknown name "model"'),
        ({**_body(), "stream": True}, 'Unknown name "stream"'),
        ({**_body(), "max_tokens": 5}, 'Unknown name "max_tokens"'),
        ({"contents": []}, "contents is not specified"),
        ({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}, "valid role"),
        ({"contents": [{"role": "user", "parts": []}]}, "must not be empty"),
        (
            {**_body(), "generationConfig": {"stopSequences": list("abcdef")}},
            "at most 5 stop sequences",
        ),
        (
            {
                **_body(),
                "tools": [
                    {
                        "functionDeclarations": [
                            {"name": "f", "parameters": {}, "parametersJsonSchema": {}}
                        ]
                    }
                ],
            },
            "mutually exclusive",
        ),
        (b"{not json", "Invalid JSON payload"),
    ],
)
def test_bodies_the_api_refuses_are_400_invalid_argument(
    sim_url: str, body: Any, says: str
) -> None:
    status, raw = _post(
        f"{sim_url}/v1beta/models/{MODEL}:generateContent",
        body,
        {"x-goog-api-key": "k", "content-type": "application/json"},
    )
    err = json.loads(raw)["error"]
    assert status == 400 and err["code"] == 400 and err["status"] == "INVALID_ARGUMENT"
    assert says in err["message"]


def test_sse_framing_has_no_done_and_a_json_array_without_alt(sim_url: str) -> None:
    url = f"{sim_url}/v1beta/models/{MODEL}:streamGenerateContent"
    hs = {"x-goog-api-key": "k", "content-type": "application/json"}
    status, raw = _post(url + "?alt=sse", _body(), hs)
    assert status == 200 and b"[DONE]" not in raw
    events = [e for e in raw.split(b"\r\n\r\n") if e]
    assert all(e.startswith(b"data: ") for e in events)
    objs = [json.loads(e[6:]) for e in events]
    assert objs[-1]["candidates"][0]["finishReason"] == "STOP"
    assert all("finishReason" not in o["candidates"][0] for o in objs[:-1])
    status, raw = _post(url, _body(), hs)
    array = json.loads(raw)
    assert status == 200 and isinstance(array, list) and len(array) == len(objs)


def test_a_cut_stream_never_carries_a_finish_and_an_error_midway_is_googles(
    sim_url: str,
) -> None:
    url = f"{sim_url}/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
    hs = {"x-goog-api-key": "k", "content-type": "application/json"}
    _, raw = _post(url, _body(), {**hs, "x-sim-fault": "no_final"})
    assert b"finishReason" not in raw and b"data: " in raw
    _, raw = _post(url, _body(), {**hs, "x-sim-fault": "error_after:2"})
    last = json.loads(raw.strip().split(b"\r\n\r\n")[-1][6:])
    assert last == {
        "error": {
            "code": 500,
            "message": last["error"]["message"],
            "status": "INTERNAL",
        }
    }


async def test_a_simulated_gemini_provider_answers_the_library_in_both_formats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``base_url: sim://...`` keeps Gemini in-process: no key to a real endpoint, no socket."""
    cfg = inproc_config(
        tmp_path,
        providers={"g": {"kind": "gemini", "base_url": "sim://gemini", "api_key_env": "GEM_K"}},
        models={"m": {"deployments": [{"provider": "g", "model": MODEL}]}},
    )
    monkeypatch.setenv("GEM_K", "k")
    ask = [{"role": "user", "content": "Say hello"}]
    async with Gateway(cfg) as gw:
        msg = await gw.messages({"model": "m", "max_tokens": 50, "messages": ask})
        assert msg["content"][0]["text"] and msg["stop_reason"] == "end_turn"
        chunks = [c async for c in gw.stream_chat_completions({"model": "m", "messages": ask})]
        assert "".join(
            c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]
        )
        first, second = gw.simulator.requests
        assert first.path == f"/v1beta/models/{MODEL}:generateContent"
        assert second.path == f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
        assert second.headers["x-goog-api-key"] == "k" and "model" not in second.body


def test_gemini_3_signs_function_calls_and_refuses_a_replay_without_the_signature(
    sim_url: str,
) -> None:
    cfg = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[WEATHER])],
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )
    client = _client(sim_url)
    res = client.models.generate_content(model="gemini-3-flash", contents=ASK, config=cfg)
    turn = res.candidates[0].content  # type: ignore[index]
    assert turn is not None and turn.parts and turn.parts[0].thought_signature
    answer = types.Part.from_function_response(name="get_weather", response={"output": "18C"})
    history: list[Any] = [
        types.Content(role="user", parts=[types.Part(text=ASK)]),
        turn,  # replayed as received: the SDK sends the signature back
        types.Content(role="user", parts=[answer]),
    ]
    again = client.models.generate_content(model="gemini-3-flash", contents=history, config=cfg)
    assert again.text
    bare = types.Content(
        role="model", parts=[types.Part(function_call=turn.parts[0].function_call)]
    )
    with pytest.raises(genai_errors.ClientError) as err:
        client.models.generate_content(
            model="gemini-3-flash", contents=[history[0], bare, history[2]], config=cfg
        )
    assert err.value.code == 400 and "missing a thought_signature" in (err.value.message or "")
    # Gemini 2.5 neither signs nor asks
    old = client.models.generate_content(model=MODEL, contents=ASK, config=cfg)
    assert not old.candidates[0].content.parts[0].thought_signature  # type: ignore[index,union-attr]

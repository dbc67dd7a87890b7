"""The simulator's Bedrock Converse wire, checked against AWS's own client and signer.

botocore's ``bedrock-runtime`` client (its service model, its SigV4 signer, its eventstream and
error parsers) talks to a `bastion sim` process over HTTP: whatever it accepts, a real AWS SDK
would. Signature checks, request validation and faults are driven with requests signed by
botocore's ``SigV4Auth`` and sent raw.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer
from botocore.exceptions import ClientError, EventStreamError
from botocore.session import Session
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.cost._cost_support import sim_process

from bastion.providers import bedrock
from bastion.providers.sim import Simulator
from bastion.providers.sim.bedrock_wire import (
    REGION_HEADER,
    SIM_ACCESS_KEY_ID,
    SIM_SECRET_ACCESS_KEY,
    validate,
)
from bastion.providers.sim.transport import SimTransport

MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
REGION = "eu-west-3"
MSGS: list[Any] = [{"role": "user", "content": [{"text": "Say hello to the team"}]}]
TOOLS: dict[str, Any] = {
    "tools": [
        {
            "toolSpec": {
                "name": "get_weather",
                "description": "Weather for a city",
                "inputSchema": {
                    "json": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}},
                        "required": ["city"],
                    }
                },
            }
        }
    ],
    "toolChoice": {"any": {}},
}


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    with sim_process() as url:
        yield url


def _client(url: str, secret: str = SIM_SECRET_ACCESS_KEY) -> Any:
    return Session().create_client(
        "bedrock-runtime",
        region_name=REGION,
        endpoint_url=url,
        aws_access_key_id=SIM_ACCESS_KEY_ID,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}),
    )


def _requests(url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(url + "/_sim/requests", timeout=10) as r:
        recs: list[dict[str, Any]] = json.loads(r.read())
    return [x for x in recs if x["path"].startswith("/model/")]


def test_botocore_converse_parses_the_answer_and_the_region_is_the_signed_one(
    sim_url: str,
) -> None:
    before = len(_requests(sim_url))
    out = _client(sim_url).converse(
        modelId=MODEL,
        messages=MSGS,
        system=[{"text": "Be brief."}],
        inferenceConfig={"maxTokens": 64, "temperature": 0.2},
    )
    assert out["stopReason"] == "end_turn"
    assert out["output"]["message"]["role"] == "assistant"
    assert out["output"]["message"]["content"][0]["text"]
    usage = out["usage"]
    assert usage["inputTokens"] > 0 and usage["outputTokens"] > 0
    assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"]
    assert out["metrics"]["latencyMs"] >= 1
    assert out["ResponseMetadata"]["RequestId"]
    (seen,) = _requests(sim_url)[before:]
    assert seen["path"] == "/model/anthropic.claude-3-5-sonnet-20240620-v1:0/converse"
    assert seen["headers"][REGION_HEADER] == REGION


def test_botocore_converse_stream_reads_every_event_in_order(sim_url: str) -> None:
    out = _client(sim_url).converse_stream(
        modelId=MODEL, messages=MSGS, inferenceConfig={"maxTokens": 64}
    )
    events = list(out["stream"])
    names = [next(iter(e)) for e in events]
    assert names[0] == "messageStart" and events[0]["messageStart"]["role"] == "assistant"
    assert names[-2:] == ["messageStop", "metadata"]
    assert set(names[1:-3]) == {"contentBlockDelta"} and names[-3] == "contentBlockStop"
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events[1:-3])
    assert text
    assert events[-2]["messageStop"]["stopReason"] == "end_turn"
    meta = events[-1]["metadata"]
    assert meta["usage"]["outputTokens"] > 0 and meta["usage"]["inputTokens"] > 0
    assert meta["metrics"]["latencyMs"] >= 1


def test_botocore_tool_use_unary_and_streamed(sim_url: str) -> None:
    client = _client(sim_url)
    ask: list[Any] = [{"role": "user", "content": [{"text": "Weather in Paris?"}]}]
    out = client.converse(modelId=MODEL, messages=ask, toolConfig=TOOLS)
    assert out["stopReason"] == "tool_use"
    (use,) = [b["toolUse"] for b in out["output"]["message"]["content"] if "toolUse" in b]
    assert use["name"] == "get_weather" and isinstance(use["input"], dict) and use["toolUseId"]
    follow: list[Any] = [
        *ask,
        out["output"]["message"],
        {
            "role": "user",
            "content": [
                {"toolResult": {"toolUseId": use["toolUseId"], "content": [{"text": "Sunny"}]}}
            ],
        },
    ]
    again = client.converse(modelId=MODEL, messages=follow, toolConfig={"tools": TOOLS["tools"]})
    assert again["stopReason"] == "end_turn"
    events = list(client.converse_stream(modelId=MODEL, messages=ask, toolConfig=TOOLS)["stream"])
    starts = [e["contentBlockStart"] for e in events if "contentBlockStart" in e]
    assert starts and starts[0]["start"]["toolUse"]["name"] == "get_weather"
    index = starts[0]["contentBlockIndex"]
    args = "".join(
        e["contentBlockDelta"]["delta"]["toolUse"]["input"]
        for e in events
        if "contentBlockDelta" in e and e["contentBlockDelta"]["contentBlockIndex"] == index
    )
    assert isinstance(json.loads(args), dict)
    assert [e["messageStop"]["stopReason"] for e in events if "messageStop" in e] == ["tool_use"]


@pytest.mark.parametrize(
    ("fault", "code", "status"),
    [
        ("status:429", "ThrottlingException", 429),
        ("status:503", "ServiceUnavailableException", 503),
        ("status:500", "InternalServerException", 500),
    ],
)
def test_botocore_reads_fault_errors_by_their_errortype(
    sim_url: str, fault: str, code: str, status: int
) -> None:
    client = _client(sim_url)

    def add_fault(request: Any, **_: Any) -> None:
        request.headers["x-sim-fault"] = fault

    client.meta.events.register_first("before-sign.bedrock-runtime.Converse", add_fault)
    with pytest.raises(ClientError) as err:
        client.converse(modelId=MODEL, messages=MSGS)
    assert err.value.response["Error"]["Code"] == code
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert err.value.response["Error"]["Message"]


def test_botocore_validation_exception_names_the_problem(sim_url: str) -> None:
    client = _client(sim_url)
    bad: list[Any] = [{"role": "assistant", "content": [{"text": "I start"}]}]
    with pytest.raises(ClientError) as err:
        client.converse(modelId=MODEL, messages=bad)
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert "must start with a user message" in err.value.response["Error"]["Message"]


def test_botocore_with_a_wrong_secret_is_refused_as_a_bad_signature(sim_url: str) -> None:
    with pytest.raises(ClientError) as err:
        _client(sim_url, secret="not-the-secret").converse(modelId=MODEL, messages=MSGS)
    assert err.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_mid_stream_error_is_an_exception_frame_botocore_raises(sim_url: str) -> None:
    client = _client(sim_url)

    def add_fault(request: Any, **_: Any) -> None:
        request.headers["x-sim-fault"] = "error_after:3"

    client.meta.events.register_first("before-sign.bedrock-runtime.ConverseStream", add_fault)
    out = client.converse_stream(modelId=MODEL, messages=MSGS)
    with pytest.raises(EventStreamError) as err:
        list(out["stream"])
    assert err.value.response["Error"]["Code"] in (
        "serviceUnavailableException",
        "internalServerException",
        "throttlingException",
    )


# --- raw, in-process ---------------------------------------------------------------------


def _signed(
    body: dict[str, Any] | bytes,
    *,
    stream: bool = False,
    key: str = SIM_ACCESS_KEY_ID,
    secret: str = SIM_SECRET_ACCESS_KEY,
    service: str = "bedrock",
    when: datetime | None = None,
    extra: dict[str, str] | None = None,
) -> tuple[str, dict[str, str], bytes]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    path = bedrock.model_url("", MODEL, stream=stream)
    headers = {"content-type": "application/json", "host": "bedrock", **(extra or {})}
    req = AWSRequest(method="POST", url="http://bedrock" + path, data=data, headers=headers)
    auth = SigV4Auth(Credentials(key, secret), service, REGION)
    if when is None:
        auth.add_auth(req)
    else:
        stamp = when.strftime("%Y%m%dT%H%M%SZ")
        req.headers["X-Amz-Date"] = stamp
        req.context["timestamp"] = stamp
        canonical = auth.canonical_request(req)
        sig = auth.signature(auth.string_to_sign(req, canonical), req)
        scope = f"{key}/{stamp[:8]}/{REGION}/{service}/aws4_request"
        signed = ";".join(sorted(k.lower() for k in req.headers))
        req.headers["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders={signed}, Signature={sig}"
        )
    return path, {k.lower(): v for k, v in req.headers.items()}, data


async def _answer(
    path: str, headers: dict[str, str], data: bytes
) -> tuple[int, dict[str, str], bytes]:
    result = await Simulator().handle("POST", path, headers, data)
    return result.status, result.headers, await result.read()


@pytest.mark.parametrize(
    ("kw", "code"),
    [
        ({"secret": "wrong"}, "InvalidSignatureException"),
        ({"key": "AKIAUNKNOWNKEY000000"}, "UnrecognizedClientException"),
        ({"service": "bedrock-runtime"}, "InvalidSignatureException"),
        ({"when": datetime.now(UTC) - timedelta(minutes=20)}, "InvalidSignatureException"),
    ],
)
async def test_signature_problems_are_403_with_aws_error_types(
    kw: dict[str, Any], code: str
) -> None:
    path, headers, data = _signed({"messages": MSGS}, **kw)
    status, h, body = await _answer(path, headers, data)
    assert status == 403 and h["x-amzn-errortype"].split(":")[0] == code
    assert orjson.loads(body)["message"]


async def test_unsigned_and_tampered_requests_are_refused() -> None:
    path, headers, data = _signed({"messages": MSGS})
    status, h, _ = await _answer(
        path, {k: v for k, v in headers.items() if k != "authorization"}, data
    )
    assert status == 403 and h["x-amzn-errortype"].startswith("MissingAuthenticationToken")
    tampered = data.replace(b"hello", b"HELLO")
    status, h, _ = await _answer(path, headers, tampered)
    assert status == 403 and h["x-amzn-errortype"].startswith("InvalidSignatureException")
    ok = await _answer(path, headers, data)
    assert ok[0] == 200


async def test_a_backdated_signature_within_five_minutes_is_accepted() -> None:
    path, headers, data = _signed({"messages": MSGS}, when=datetime.now(UTC) - timedelta(minutes=3))
    assert (await _answer(path, headers, data))[0] == 200


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"messages": MSGS, "maxTokens": 5}, "extraneous key [maxTokens]"),
        ({"messages": [{"role": "bot", "content": [{"text": "x"}]}]}, "enum value set"),
        ({"messages": MSGS, "inferenceConfig": {"temperature": 1.5}}, "less than or equal to 1"),
        ({"messages": MSGS, "inferenceConfig": {"maxTokens": 0}}, "greater than or equal to 1"),
        ({"messages": [{"role": "user", "content": [{"text": "a", "image": {}}]}]}, "exactly one"),
        ({"messages": [{"role": "user"}]}, "Member must not be null"),
        ({"messages": [*MSGS, *MSGS]}, "must alternate"),
        (
            {
                "messages": MSGS,
                "toolConfig": {
                    "tools": [{"toolSpec": {"name": "get weather", "inputSchema": {"json": {}}}}]
                },
            },
            "regular expression pattern",
        ),
        ({"messages": [{"role": "user", "content": [{"text": "  "}]}]}, "is blank"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"toolResult": {"toolUseId": "t1", "content": [{"text": "x"}]}}
                        ],
                    }
                ]
            },
            "toolConfig field must be defined",
        ),
    ],
)
async def test_invalid_bodies_are_validation_exceptions(body: dict[str, Any], words: str) -> None:
    path, headers, data = _signed(body)
    status, h, raw = await _answer(path, headers, data)
    assert status == 400 and h["x-amzn-errortype"].startswith("ValidationException:")
    assert words in orjson.loads(raw)["message"]


def test_every_request_the_gateway_translation_writes_is_valid_converse() -> None:
    """What ``build_request`` sends for typical Anthropic bodies passes the shape check."""
    body: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 100,
        "system": "sys",
        "temperature": 0.3,
        "stop_sequences": ["END"],
        "tools": [{"name": "f", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": "f"},
        "messages": [
            {"role": "assistant", "content": "prefill first"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "call.1", "name": "f", "input": {}}],
            },
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "and"},
                    {"type": "tool_result", "tool_use_id": "call.1", "content": ""},
                ],
            },
        ],
    }
    for stream in (False, True):
        req = bedrock.build_request("http://x", body, {}, stream=stream)
        assert validate(orjson.loads(req.body), stream=stream) is None


async def test_stream_frames_decode_with_botocore_and_carry_padding() -> None:
    path, headers, data = _signed({"messages": MSGS}, stream=True)
    status, h, raw = await _answer(path, headers, data)
    assert status == 200 and h["content-type"] == "application/vnd.amazon.eventstream"
    buf = EventStreamBuffer()
    buf.add_data(raw)
    frames = list(buf)
    assert all(f.headers[":message-type"] == "event" for f in frames)
    assert all(f.headers[":content-type"] == "application/json" for f in frames)
    assert all("p" in orjson.loads(f.payload) for f in frames)
    assert [f.headers[":event-type"] for f in frames][-2:] == ["messageStop", "metadata"]


# --- the gateway's transport against the in-process fake ----------------------------------


def _transport(sim: Simulator) -> bedrock.BedrockTransport:
    return bedrock.transport(SimTransport(sim), region=REGION, base_url="sim://bedrock")


ANTHROPIC_BODY: dict[str, Any] = {
    "model": MODEL,
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "Say hello"}],
}


@pytest.mark.parametrize(
    ("fault", "status", "etype"),
    [
        ("status:429", 429, "rate_limit_error"),
        ("status:503", 529, "overloaded_error"),
        ("status:500", 500, "api_error"),
        ("status:400", 400, "invalid_request_error"),
    ],
)
async def test_transport_reads_bedrock_errors_as_the_anthropic_error_they_mean(
    fault: str, status: int, etype: str
) -> None:
    t = _transport(Simulator())
    req = bedrock.build_request(
        "sim://bedrock", ANTHROPIC_BODY, {"x-sim-fault": fault}, stream=False
    )
    resp = await t.send(req, timeout=5)
    body = orjson.loads(await resp.read())
    assert resp.status == status and body["type"] == "error"
    assert body["error"]["type"] == etype and body["error"]["message"]
    assert resp.headers["x-request-id"] == resp.headers["x-amzn-requestid"]


async def test_transport_turns_a_corrupt_frame_into_an_in_band_error() -> None:
    t = _transport(Simulator())
    req = bedrock.build_request(
        "sim://bedrock", ANTHROPIC_BODY, {"x-sim-fault": "malformed_after:3"}, stream=True
    )
    resp = await t.send(req, timeout=5)
    text = (await resp.read()).decode()
    assert "event: message_start" in text and text.rstrip().splitlines()[-2] == "event: error"
    assert "message_stop" not in text


async def test_transport_stream_cut_leaves_no_message_stop() -> None:
    t = _transport(Simulator())
    req = bedrock.build_request(
        "sim://bedrock", ANTHROPIC_BODY, {"x-sim-fault": "cut_after:6"}, stream=True
    )
    resp = await t.send(req, timeout=5)
    text = (await asyncio.wait_for(resp.read(), 5)).decode()
    assert "content_block_delta" in text and "message_stop" not in text


model_ids = st.from_regex(r"[a-z]{2,8}\.[a-z0-9-]{1,12}(-v\d:\d)?", fullmatch=True) | st.just(
    "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-x"
)
regions = st.from_regex(r"[a-z]{2}-(east|west|central|south)-[1-3]", fullmatch=True)


@settings(max_examples=40, deadline=None)
@given(model_ids, regions, st.text(max_size=40), st.data())
async def test_any_botocore_signature_verifies_and_any_changed_byte_does_not(
    model: str, region: str, text: str, data: st.DataObject
) -> None:
    """Whatever the model id (``:``, ``/`` in ARNs), region and body, what botocore signed for
    the request's region is accepted and the region recorded; one changed body byte is a 403.
    (A blank text is replaced: Converse refuses it, and so does the fake, before the signature.)"""
    body = orjson.dumps({"messages": [{"role": "user", "content": [{"text": text if text.strip() else "x"}]}]})
    url = bedrock.model_url("sim://bedrock", model, stream=False)
    path = url[len("sim://bedrock") :]
    req = AWSRequest(method="POST", url=url, data=body, headers={"host": "bedrock"})
    SigV4Auth(Credentials(SIM_ACCESS_KEY_ID, SIM_SECRET_ACCESS_KEY), "bedrock", region).add_auth(
        req
    )
    headers = {k.lower(): v for k, v in req.headers.items()}
    sim = Simulator()
    ok = await sim.handle("POST", path, headers, body)
    assert ok.status == 200, await ok.read()
    assert sim.requests[-1].headers[REGION_HEADER] == region and sim.requests[-1].model == model
    i = data.draw(st.integers(0, len(body) - 1))
    changed = body[:i] + bytes([body[i] ^ 1]) + body[i + 1 :]
    refused = await sim.handle("POST", path, headers, changed)
    assert refused.status == 403
    assert refused.headers["x-amzn-errortype"].startswith("InvalidSignatureException")

"""AWS Bedrock's Converse wire, as its API reference documents it, over the simulator's Anthropic
Messages.

Routes: ``POST /model/{modelId}/converse`` (JSON answer) and ``POST /model/{modelId}/converse-stream``
(an ``application/vnd.amazon.eventstream`` answer, one frame per event). Everything else is 404
``UnknownOperationException``. Before anything else the request's SigV4 signature is checked
the way AWS checks it, recomputed by botocore with the simulator's test credentials
(``SIM_ACCESS_KEY_ID`` / ``SIM_SECRET_ACCESS_KEY``): no ``Authorization`` is 403
``MissingAuthenticationTokenException``, an unknown key 403 ``UnrecognizedClientException``, a
scope naming another service, a stale ``X-Amz-Date`` or a wrong signature 403
``InvalidSignatureException``. The region the request was signed for is kept in the record
(``x-sim-bedrock-region``), so a test sees it.

The body is checked against the request shape of botocore's service model (unknown members,
required members, unions holding exactly one member, enums, lengths, ranges) and against the
conversation rules Converse adds (starts with a user turn, roles alternate, text not blank,
``toolConfig`` present when tool blocks are; ``bedrock_validation.py``): a 400
``ValidationException`` names the first problem. The answer comes from the simulator's Messages
(faults, pacing, tools, usage and prompt caching included) and is written as Converse writes it:

- body: ``{output: {message}, stopReason, usage: {inputTokens, outputTokens, totalTokens,
  cacheRead/WriteInputTokens}, metrics: {latencyMs}}``;
- stream: ``messageStart``, per block ``contentBlockStart`` (tool blocks only),
  ``contentBlockDelta``…, ``contentBlockStop``, then ``messageStop`` and ``metadata``; every
  payload carries a ``p`` padding field as Bedrock's do; an error mid-stream is an exception
  frame (``:message-type: exception``);
- errors: ``{"message"}`` with ``x-amzn-errortype`` and ``x-amzn-requestid``: 429
  ``ThrottlingException``, 400 ``ValidationException``, 503 ``ServiceUnavailableException``,
  500 ``InternalServerException``, 408 ``ModelTimeoutException``, 404
  ``ResourceNotFoundException``.
"""

from __future__ import annotations

import hmac
import re
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

import orjson

from ..eventstream import encode
from ..sse import SSEDecoder
from .bedrock_validation import validate
from .result import SimCut, SimResult, once
from .scenario import split_model

if TYPE_CHECKING:
    from .core import Simulator

__all__ = [
    "REGION_HEADER",
    "SIM_ACCESS_KEY_ID",
    "SIM_SECRET_ACCESS_KEY",
    "handle",
    "is_bedrock_path",
]

SIM_ACCESS_KEY_ID = "AKIASIMBEDROCK000001"
SIM_SECRET_ACCESS_KEY = "sim/bedrock/secret/key/not/a/real/one/0000"
REGION_HEADER = "x-sim-bedrock-region"  # recorded only: the region the request was signed for
# a stopReason to end the answer with instead of the one the Messages answer implies (a
# ``malformed_tool_use`` or ``malformed_model_output`` that only a real model produces)
STOP_REASON_HEADER = "x-sim-bedrock-stop-reason"
EVENTSTREAM = "application/vnd.amazon.eventstream"
_ROUTE = re.compile(r"/model/(.+)/(converse|converse-stream)")
_AUTH = re.compile(
    r"AWS4-HMAC-SHA256 Credential=([^/,]+)/(\d{8})/([^/,]+)/([^/,]+)/aws4_request,\s*"
    r"SignedHeaders=([a-z0-9;.-]+),\s*Signature=([0-9a-f]{64})"
)
_MAX_SKEW_S = 300  # AWS refuses a signature more than 5 minutes off
_ERRTYPE_NS = ":http://internal.amazon.com/coral/com.amazon.bedrock/"
_PAD = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0"
_SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check "
    "your AWS Secret Access Key and signing method. Consult the service documentation for "
    "details."
)
_STOP = {
    "end_turn": "end_turn",
    "tool_use": "tool_use",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "refusal": "content_filtered",
    "pause_turn": "end_turn",
    "model_context_window_exceeded": "model_context_window_exceeded",
}
# the simulator's Anthropic errors in Bedrock's words: status -> (status, type, message)
_ERRORS: dict[int, tuple[int, str, str]] = {
    400: (400, "ValidationException", ""),
    404: (404, "ResourceNotFoundException", "The requested resource could not be found."),
    408: (408, "ModelTimeoutException", "Model has timed out in processing the request."),
    413: (400, "ValidationException", "Input is too long for requested model."),
    429: (429, "ThrottlingException", "Too many requests, please wait before trying again."),
    500: (500, "InternalServerException", "The system encountered an unexpected error."),
    503: (503, "ServiceUnavailableException", "Bedrock is unable to process your request."),
    504: (408, "ModelTimeoutException", "Model has timed out in processing the request."),
    529: (503, "ServiceUnavailableException", "Bedrock is unable to process your request."),
}
_STREAM_EXCEPTIONS = {
    "rate_limit_error": "throttlingException",
    "overloaded_error": "serviceUnavailableException",
    "invalid_request_error": "validationException",
}


def is_bedrock_path(path: str) -> bool:
    return path.startswith("/model/")


def _error(status: int, etype: str, message: str, rid: str) -> SimResult:
    body = orjson.dumps({"message": message})
    headers = {
        "content-type": "application/json",
        "content-length": str(len(body)),
        "x-amzn-requestid": rid,
        "x-amzn-errortype": etype + _ERRTYPE_NS,
    }
    return SimResult(status, headers, once(body))


async def handle(
    sim: Simulator, method: str, path: str, h: Mapping[str, str], body: bytes
) -> SimResult:
    """Answer one request on Bedrock's routes (``h`` has lower-case names)."""
    rid = str(uuid.uuid4())
    route = path.split("?", 1)[0]
    match = _ROUTE.fullmatch(route)
    model = unquote(match.group(1)) if match else None
    try:
        parsed: Any = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = None
    region, refusal = _check_signature(method, path, model, match, h, body, rid)
    recorded = {**h, REGION_HEADER: region} if region else dict(h)
    sim._record(method, path, recorded, parsed, model, split_model(model)[1] if model else None)
    if refusal is not None:
        return refusal
    if match is None or model is None or method != "POST":
        return _error(404, "UnknownOperationException", "Unknown operation", rid)
    if not isinstance(parsed, dict):
        return _error(400, "SerializationException", "Malformed request body", rid)
    problem = validate(parsed, stream=match.group(2) == "converse-stream")
    if problem is not None:
        return _error(400, "ValidationException", problem, rid)
    stream = match.group(2) == "converse-stream"
    inner = {k: v for k, v in h.items() if k.startswith("x-sim-")}
    inner["anthropic-version"] = "2023-06-01"
    if sim.api_key is not None:
        inner["x-api-key"] = sim.api_key
    anthropic = _to_anthropic(parsed, model, stream)
    started = time.monotonic()
    result = await sim.handle("POST", "/v1/messages", inner, orjson.dumps(anthropic), record=False)
    if result.status != 200:
        return await _bedrock_error(result, rid)
    if stream:
        headers = {"content-type": EVENTSTREAM, "x-amzn-requestid": rid}
        return SimResult(200, headers, _stream(result.body, started, h.get(STOP_REASON_HEADER)))
    chunks: list[bytes] = []
    headers = {"content-type": "application/json", "x-amzn-requestid": rid}
    try:
        async for c in result.body:
            chunks.append(c)
    except SimCut:
        return SimResult(200, headers, _cut(chunks))
    data = _converse_body(b"".join(chunks), started, h.get(STOP_REASON_HEADER))
    headers["content-length"] = str(len(data))
    return SimResult(200, headers, once(data))


# --- SigV4 ------------------------------------------------------------------------------


def _check_signature(
    method: str,
    path: str,
    model: str | None,
    match: re.Match[str] | None,
    h: Mapping[str, str],
    body: bytes,
    rid: str,
) -> tuple[str | None, SimResult | None]:
    """(the region signed for, a refusal or None): AWS's own check, redone by botocore."""
    auth = h.get("authorization")
    if not auth:
        return None, _error(
            403, "MissingAuthenticationTokenException", "Missing Authentication Token", rid
        )
    m = _AUTH.fullmatch(auth.strip())
    if m is None:
        return None, _error(
            400,
            "IncompleteSignatureException",
            "Authorization header requires 'Credential', "
            "'SignedHeaders' and 'Signature' parameters.",
            rid,
        )
    key_id, day, region, service, signed, signature = m.groups()
    if key_id != SIM_ACCESS_KEY_ID:
        return region, _error(
            403,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
            rid,
        )
    if service != "bedrock":
        return region, _error(
            403,
            "InvalidSignatureException",
            "Credential should be scoped to correct service: 'bedrock'. ",
            rid,
        )
    amz_date = h.get("x-amz-date", "")
    try:
        when = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return region, _error(
            403, "InvalidSignatureException", "Missing or invalid X-Amz-Date.", rid
        )
    if not amz_date.startswith(day):
        return region, _error(
            403, "InvalidSignatureException", "Credential should be scoped to a valid date.", rid
        )
    if abs(time.time() - when.timestamp()) > _MAX_SKEW_S:
        return region, _error(
            403,
            "InvalidSignatureException",
            f"Signature expired: {amz_date} is now earlier than the allowed 5 minute window.",
            rid,
        )
    names = signed.split(";")
    if "host" not in names or any(n not in h for n in names):
        return region, _error(403, "InvalidSignatureException", _SIGNATURE_MISMATCH, rid)
    expected = _signature(method, path, model, match, h, names, body, region, amz_date)
    if not hmac.compare_digest(expected, signature):
        return region, _error(403, "InvalidSignatureException", _SIGNATURE_MISMATCH, rid)
    return region, None


def _signature(
    method: str,
    path: str,
    model: str | None,
    match: re.Match[str] | None,
    h: Mapping[str, str],
    names: list[str],
    body: bytes,
    region: str,
    amz_date: str,
) -> str:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    route, _, query = path.partition("?")
    if match is not None and model is not None:  # the model id as one encoded segment again
        route = f"/model/{quote(model, safe='')}/{match.group(2)}"
    url = f"http://{h['host']}{route}" + (f"?{query}" if query else "")
    request = AWSRequest(method=method, url=url, data=body, headers={n: h[n] for n in names})
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(
        Credentials(SIM_ACCESS_KEY_ID, SIM_SECRET_ACCESS_KEY, h.get("x-amz-security-token")),
        "bedrock",
        region,
    )
    canonical = signer.canonical_request(request)
    return str(signer.signature(signer.string_to_sign(request, canonical), request))


# --- Converse -> the simulator's Messages -----------------------------------------------


def _to_anthropic(body: dict[str, Any], model: str, stream: bool) -> dict[str, Any]:
    """The same conversation as a Messages request for the simulator to answer."""
    inference = body.get("inferenceConfig") or {}
    out: dict[str, Any] = {
        "model": model,
        "max_tokens": inference.get("maxTokens", 4096),
        "messages": [
            {"role": m["role"], "content": [_block(b) for b in m["content"]]}
            for m in body["messages"]
        ],
    }
    system = [b["text"] for b in body.get("system") or () if "text" in b]
    if system:
        out["system"] = "\n\n".join(system)
    if inference.get("stopSequences"):
        out["stop_sequences"] = inference["stopSequences"]
    for ours, theirs in (("temperature", "temperature"), ("topP", "top_p")):
        if ours in inference:
            out[theirs] = inference[ours]
    config = body.get("toolConfig") or {}
    tools = [t["toolSpec"] for t in config.get("tools") or () if "toolSpec" in t]
    if tools:
        out["tools"] = [
            {
                "name": t["name"],
                "description": t.get("description", ""),
                "input_schema": t["inputSchema"].get("json") or {"type": "object"},
            }
            for t in tools
        ]
        choice = config.get("toolChoice") or {}
        if "any" in choice:
            out["tool_choice"] = {"type": "any"}
        elif "tool" in choice:
            out["tool_choice"] = {"type": "tool", "name": choice["tool"]["name"]}
    if stream:
        out["stream"] = True
    return out


def _block(block: dict[str, Any]) -> dict[str, Any]:
    if "text" in block:
        return {"type": "text", "text": block["text"]}
    if "image" in block:
        image = block["image"]
        data = image.get("source", {}).get("bytes", "")
        media = "image/" + image.get("format", "png")
        return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
    if "toolUse" in block:
        use = block["toolUse"]
        return {
            "type": "tool_use",
            "id": _anthropic_id(use["toolUseId"]),
            "name": use["name"],
            "input": use.get("input") if isinstance(use.get("input"), dict) else {},
        }
    if "toolResult" in block:
        result = block["toolResult"]
        texts = [
            c["text"] if "text" in c else orjson.dumps(c["json"]).decode()
            for c in result.get("content") or ()
            if "text" in c or "json" in c
        ]
        out: dict[str, Any] = {
            "type": "tool_result",
            "tool_use_id": _anthropic_id(result["toolUseId"]),
            "content": "\n".join(texts),
        }
        if result.get("status") == "error":
            out["is_error"] = True
        return out
    return {"type": "text", "text": "(unsupported content)"}


def _anthropic_id(tool_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", tool_id)


# --- the simulator's answers -> Converse ------------------------------------------------


def _usage(u: Mapping[str, Any]) -> dict[str, int]:
    inp = int(u.get("input_tokens") or 0)
    out_ = int(u.get("output_tokens") or 0)
    read = int(u.get("cache_read_input_tokens") or 0)
    write = int(u.get("cache_creation_input_tokens") or 0)
    usage = {"inputTokens": inp, "outputTokens": out_, "totalTokens": inp + out_ + read + write}
    if read:
        usage["cacheReadInputTokens"] = read
    if write:
        usage["cacheWriteInputTokens"] = write
    return usage


def _converse_body(data: bytes, started: float, forced_stop: str | None = None) -> bytes:
    try:
        msg = orjson.loads(data)
    except orjson.JSONDecodeError:
        return data  # a malformed-body fault stays malformed
    if not isinstance(msg, dict):
        return data
    content: list[dict[str, Any]] = []
    for block in msg.get("content") or ():
        if block.get("type") == "text":
            content.append({"text": block["text"]})
        elif block.get("type") == "tool_use":
            content.append(
                {
                    "toolUse": {
                        "toolUseId": block["id"],
                        "name": block["name"],
                        "input": block["input"],
                    }
                }
            )
    body = {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": forced_stop or _STOP.get(str(msg.get("stop_reason")), "end_turn"),
        "usage": _usage(msg.get("usage") or {}),
        "metrics": {"latencyMs": _latency(started)},
    }
    return orjson.dumps(body)


def _latency(started: float) -> int:
    return max(1, round((time.monotonic() - started) * 1000))


async def _bedrock_error(result: SimResult, rid: str) -> SimResult:
    raw = b"".join([c async for c in result.body])
    try:
        err = orjson.loads(raw).get("error") or {}
    except (orjson.JSONDecodeError, AttributeError):
        err = {}
    status, etype, message = _ERRORS.get(
        result.status,
        (
            result.status,
            "InternalServerException" if result.status >= 500 else "ValidationException",
            "",
        ),
    )
    out = _error(status, etype, message or str(err.get("message") or etype), rid)
    if "retry-after" in result.headers:
        out.headers["retry-after"] = result.headers["retry-after"]
    return out


def _frame(event: str, payload: dict[str, Any]) -> bytes:
    """One event frame; the payload padded with ``p`` as Bedrock pads its own."""
    padded = {**payload, "p": _PAD[: 1 + len(event) % len(_PAD)]}
    headers = {":event-type": event, ":content-type": "application/json", ":message-type": "event"}
    return encode(headers, orjson.dumps(padded))


def _exception(name: str, message: str) -> bytes:
    headers = {
        ":exception-type": name,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return encode(headers, orjson.dumps({"message": message}))


def _corrupt_frame() -> bytes:
    frame = _frame("contentBlockDelta", {"delta": {"text": ""}, "contentBlockIndex": 0})
    return frame[:-4] + bytes(b ^ 0xFF for b in frame[-4:])


async def _cut(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for c in chunks:
        yield c
    raise SimCut("cut by a simulated fault")


async def _stream(
    frames: AsyncIterator[bytes], started: float, forced_stop: str | None = None
) -> AsyncIterator[bytes]:
    """The simulator's Messages stream re-framed as ConverseStream events as it arrives."""
    decoder = SSEDecoder()
    stop = "end_turn"
    usage: dict[str, Any] = {}
    text_blocks: set[int] = set()
    try:
        async for chunk in frames:
            out: list[bytes] = []
            for ev in decoder.feed(chunk):
                try:
                    data = orjson.loads(ev.data)
                except orjson.JSONDecodeError:
                    out.append(_corrupt_frame())  # a malformed-event fault: a frame whose CRC fails
                    continue
                kind = data.get("type")
                if kind == "message_start":
                    usage = dict(data.get("message", {}).get("usage") or {})
                    out.append(_frame("messageStart", {"role": "assistant"}))
                elif kind == "content_block_start":
                    block = data.get("content_block") or {}
                    index = data.get("index", 0)
                    if block.get("type") == "tool_use":
                        use = {"toolUseId": block["id"], "name": block["name"]}
                        out.append(
                            _frame(
                                "contentBlockStart",
                                {"start": {"toolUse": use}, "contentBlockIndex": index},
                            )
                        )
                    else:
                        text_blocks.add(index)
                elif kind == "content_block_delta":
                    delta = data.get("delta") or {}
                    index = data.get("index", 0)
                    if delta.get("type") == "text_delta":
                        out.append(
                            _frame(
                                "contentBlockDelta",
                                {"delta": {"text": delta["text"]}, "contentBlockIndex": index},
                            )
                        )
                    elif delta.get("type") == "input_json_delta":
                        out.append(
                            _frame(
                                "contentBlockDelta",
                                {
                                    "delta": {"toolUse": {"input": delta["partial_json"]}},
                                    "contentBlockIndex": index,
                                },
                            )
                        )
                elif kind == "content_block_stop":
                    out.append(
                        _frame("contentBlockStop", {"contentBlockIndex": data.get("index", 0)})
                    )
                elif kind == "message_delta":
                    stop = _STOP.get(str((data.get("delta") or {}).get("stop_reason")), "end_turn")
                    usage.update(
                        {k: v for k, v in (data.get("usage") or {}).items() if v is not None}
                    )
                elif kind == "message_stop":
                    out.append(_frame("messageStop", {"stopReason": forced_stop or stop}))
                    metrics = {"latencyMs": _latency(started)}
                    out.append(_frame("metadata", {"usage": _usage(usage), "metrics": metrics}))
                elif kind == "error":
                    err = data.get("error") or {}
                    name = _STREAM_EXCEPTIONS.get(str(err.get("type")), "internalServerException")
                    out.append(_exception(name, str(err.get("message") or name)))
            if out:
                yield b"".join(out)
    finally:  # a client that hangs up closes the simulator's stream too (a stall included)
        closer = getattr(frames, "aclose", None)
        if closer is not None:
            await closer()

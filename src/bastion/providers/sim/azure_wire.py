"""Azure OpenAI's wire, as its REST reference documents it, over the simulator's OpenAI chat.

Routes: ``POST /openai/deployments/{deployment}/chat/completions?api-version=...`` (api-version
required: without it, or with one not of the ``YYYY-MM-DD[-preview]`` form, Azure answers 404
"Resource not found") and ``POST /openai/v1/chat/completions`` (the deployment is the body's
``model``). A credential is required: ``api-key`` or ``Authorization: Bearer`` (checked against
``Simulator.api_key`` when one is set; a 401 in Azure's shape otherwise). What differs from
OpenAI's answers:

- bodies carry ``prompt_filter_results`` and each choice ``content_filter_results``;
- a stream opens with a chunk whose ``choices`` is empty and which carries
  ``prompt_filter_results``;
- the ``content_policy`` fault is Azure's 400 ``content_filter`` error (``innererror``
  ``ResponsibleAIPolicyViolation`` with per-category results); a 429 says when to retry; an
  unknown model (``reject_unknown_models``) is ``DeploymentNotFound``;
- ``x-sim-azure-filter: output`` filters the completion: finish reason ``content_filter``.

Everything else (faults, pacing, usage, tools) is the simulator's OpenAI chat.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

import orjson

from .result import SimCut, SimResult, once
from .scenario import split_model

if TYPE_CHECKING:
    from .core import Simulator

__all__ = ["FILTER_HEADER", "handle", "is_azure_path"]

FILTER_HEADER = "x-sim-azure-filter"
_DEPLOYMENT = re.compile(r"/openai/deployments/([^/]+)/chat/completions")
_V1 = "/openai/v1/chat/completions"
_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}(-preview)?")
_CATEGORIES = ("hate", "self_harm", "sexual", "violence")
_FILTERED_BY = "violence"
_DENIED = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide "
    "a valid key for an active subscription and use a correct regional API endpoint for your "
    "resource."
)
_PROMPT_FILTERED = (
    "The response was filtered due to the prompt triggering Azure OpenAI's content management "
    "policy. Please modify your prompt and retry. To learn more about our content filtering "
    "policies please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766"
)


def is_azure_path(path: str) -> bool:
    return path.startswith("/openai/")


def filter_results(filtered: str | None = None) -> dict[str, Any]:
    """One ``content_filter_results`` object: every category safe except ``filtered``."""
    out: dict[str, Any] = {
        c: {"filtered": c == filtered, "severity": "medium" if c == filtered else "safe"}
        for c in _CATEGORIES
    }
    out["jailbreak"] = {"filtered": False, "detected": False}
    return out


def _error(http: int, code: str, message: str, **extra: Any) -> SimResult:
    body = orjson.dumps({"error": {"code": code, "message": message, **extra}})
    headers = {"content-type": "application/json", "content-length": str(len(body))}
    return SimResult(http, headers, once(body))


def _credential_ok(sim: Simulator, h: Mapping[str, str]) -> bool:
    key = h.get("api-key")
    auth = h.get("authorization", "")
    token = auth[7:] if auth[:7].lower() == "bearer " else None
    if sim.api_key is None:
        return bool(key) or bool(token)
    return sim.api_key in (key, token)


async def handle(
    sim: Simulator, method: str, path: str, h: Mapping[str, str], body: bytes
) -> SimResult:
    """Answer one request on Azure's routes (``h`` has lower-case names)."""
    route, _, query = path.partition("?")
    params = parse_qs(query, keep_blank_values=True)
    match = _DEPLOYMENT.fullmatch(route)
    try:
        parsed: Any = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = None
    deployment = unquote(match.group(1)) if match else None
    model = deployment if deployment is not None else _body_model(parsed)
    spec = split_model(model)[1] if model else None
    sim._record(method, path, dict(h), parsed, model, spec)
    if match is None and route != _V1:
        return _error(404, "404", "Resource not found")
    versions = params.get("api-version", [])
    if match is not None and (len(versions) != 1 or not _VERSION.fullmatch(versions[0])):
        return _error(404, "404", "Resource not found")
    if method != "POST":
        return _error(405, "405", "Method Not Allowed")
    if not _credential_ok(sim, h):
        return _error(401, "401", _DENIED)
    inner = {k: v for k, v in h.items() if k not in ("api-key", "authorization")}
    if sim.api_key is not None:
        inner["authorization"] = "Bearer " + sim.api_key
    if isinstance(parsed, dict) and deployment is not None:
        body = orjson.dumps({**parsed, "model": deployment})
    result = await sim.handle("POST", "/v1/chat/completions", inner, body, record=False)
    filtered = h.get(FILTER_HEADER) == "output"
    if result.status != 200:
        return await _azure_error(result, versions[0] if versions else "v1")
    if result.headers.get("content-type", "").startswith("text/event-stream"):
        return SimResult(200, _azure_headers(result.headers), _stream(result.body, filtered))
    headers = _azure_headers(result.headers)
    chunks: list[bytes] = []
    try:
        async for c in result.body:
            chunks.append(c)
    except SimCut:
        return SimResult(200, headers, _cut(chunks))
    data = _annotate_body(b"".join(chunks), filtered)
    headers["content-length"] = str(len(data))
    return SimResult(200, headers, once(data))


def _body_model(parsed: Any) -> str | None:
    model = parsed.get("model") if isinstance(parsed, dict) else None
    return model if isinstance(model, str) else None


def _azure_headers(headers: Mapping[str, str]) -> dict[str, str]:
    out = {k: v for k, v in headers.items() if not k.startswith("openai-")}
    rid = out.get("x-request-id")
    if rid:
        out["apim-request-id"] = rid
    out["x-ms-region"] = "Sim Central"
    return out


async def _azure_error(result: SimResult, version: str) -> SimResult:
    """The simulator's OpenAI error, in Azure's words where Azure has its own."""
    raw = b"".join([c async for c in result.body])
    try:
        err = orjson.loads(raw).get("error") or {}
    except (orjson.JSONDecodeError, AttributeError):
        err = {}
    headers = _azure_headers(result.headers)
    if result.status == 400 and err.get("code") == "content_policy_violation":
        out = _error(
            400,
            "content_filter",
            _PROMPT_FILTERED,
            param="prompt",
            type=None,
            status=400,
            innererror={
                "code": "ResponsibleAIPolicyViolation",
                "content_filter_result": filter_results(_FILTERED_BY),
            },
        )
    elif result.status == 404:
        out = _error(
            404,
            "DeploymentNotFound",
            "The API deployment for this resource does not exist. If you created the deployment "
            "within the last 5 minutes, please wait a moment and try again.",
        )
    elif result.status == 429:
        wait = headers.get("retry-after", "1")
        out = _error(
            429,
            "429",
            f"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version "
            f"{version} have exceeded call rate limit of your current OpenAI S0 pricing tier. "
            f"Please retry after {wait} seconds.",
        )
    else:
        return SimResult(result.status, headers, once(raw))
    headers.update(out.headers)
    return SimResult(out.status, headers, out.body)


def _annotate_body(data: bytes, filtered: bool) -> bytes:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return data  # a malformed-body fault stays malformed
    if not isinstance(obj, dict):
        return data
    obj["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": filter_results()}]
    for choice in obj.get("choices") or ():
        if isinstance(choice, dict):
            if filtered and choice.get("finish_reason") == "stop":
                choice["finish_reason"] = "content_filter"
            by = _FILTERED_BY if filtered else None
            choice["content_filter_results"] = filter_results(by)
    return orjson.dumps(obj)


async def _cut(chunks: list[bytes]) -> AsyncIterator[bytes]:
    """A body cut by a fault stays cut: what came, then the cut."""
    for c in chunks:
        yield c
    raise SimCut("cut by a simulated fault")


def _first_chunk() -> bytes:
    """Azure's opening chunk: no choices, the prompt's filter results."""
    chunk = {
        "choices": [],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": filter_results()}],
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


async def _stream(frames: AsyncIterator[bytes], filtered: bool) -> AsyncIterator[bytes]:
    try:
        yield _first_chunk()
        async for frame in frames:
            if filtered:
                frame = frame.replace(
                    b'"finish_reason":"stop"', b'"finish_reason":"content_filter"'
                )
            yield frame
    finally:  # a client that hangs up closes the simulator's stream too (a stall included)
        closer = getattr(frames, "aclose", None)
        if closer is not None:
            await closer()

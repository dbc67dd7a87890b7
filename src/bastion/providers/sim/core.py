"""The ``Simulator``: one object holding all simulated-provider state, answering raw requests.

Both the in-process transport and the ASGI app call ``Simulator.handle`` with the
method, path, headers and body bytes, so the two ways of reaching the simulator
behave the same. Routes (with or without the ``/v1`` prefix):
``POST /v1/messages``, ``POST /v1/messages/count_tokens``,
``POST /v1/chat/completions``, ``POST /v1/responses``, ``POST /v1/embeddings``, ``GET /v1/models``,
``GET /v1/models/{id}``.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ..base import Format
from . import (
    anthropic_wire,
    azure_wire,
    bedrock_wire,
    embeddings,
    gemini_wire,
    openai_wire,
    refusals,
    responses_wire,
)
from .answers import Answer, compose_answer
from .cache import PrefixCache, anthropic_usage, openai_usage, tokens_of
from .models import DEFAULT_MODELS, get_model, list_models
from .pacing import forever, malformed_unary, paced_stream, unary_body, unary_delay_s
from .quality import QualityProfile
from .ratelimit import RateLimiter
from .result import Ids, SimReset, SimResult, WireError, once
from .scenario import (
    SCENARIO_HEADER,
    Fault,
    Pacing,
    ScenarioError,
    combined_fault,
    read_pacing,
    split_model,
)
from .spacing import spaced, spaced_frames
from .wire_errors import error_result, retry_headers

_SSE = "text/event-stream; charset=utf-8"


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as it reached the simulated provider."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    time: float
    model: str | None
    scenario: str | None


class Simulator:
    """A provider speaking both the Anthropic and OpenAI wire formats, with scripted faults."""

    def __init__(
        self,
        *,
        ttft_ms: float = 0.0,
        chunk_ms: float = 0.0,
        reply_tokens: int = 24,
        obey_injections: bool = False,
        min_cache_tokens: int = 1024,
        openai_min_cache_tokens: int = 1024,
        cache_ttl_s: float = 300.0,
        context_window: int = 200_000,
        models: Sequence[str] = DEFAULT_MODELS,
        reject_unknown_models: bool = False,
        api_key: str | None = None,
        require_anthropic_version: bool = True,
        max_records: int = 1000,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        quality: Mapping[str, QualityProfile] | None = None,
    ) -> None:
        self.ttft_ms = ttft_ms
        self.chunk_ms = chunk_ms
        self.reply_tokens = reply_tokens
        self.obey_injections = obey_injections
        self.min_cache_tokens = min_cache_tokens
        self.openai_min_cache_tokens = openai_min_cache_tokens
        self.cache_ttl_s = cache_ttl_s
        self.context_window = context_window
        self.models = tuple(models)
        self.reject_unknown_models = reject_unknown_models
        self.api_key = api_key
        self.require_anthropic_version = require_anthropic_version
        self._clock = clock
        self.quality = dict(quality or {})
        self._ids = Ids(seed)
        self._records: deque[RecordedRequest] = deque(maxlen=max_records)
        self._counts: Counter[str | None] = Counter()
        self._total = 0
        self._fault_seen: Counter[str] = Counter()
        self._flap_start: dict[str, float] = {}
        self._cache = PrefixCache()
        self._limits = RateLimiter()

    @property
    def requests(self) -> list[RecordedRequest]:
        """The most recent requests (bounded), oldest first."""
        return list(self._records)

    def request_count(self, scenario_key: str | None = None) -> int:
        """All requests, or those whose ``x-sim-scenario`` (else fault string) matches."""
        return self._total if scenario_key is None else self._counts[scenario_key]

    def reset(self) -> None:
        """Forget records, fault counters and the prompt cache."""
        self._records.clear()
        self._counts.clear()
        self._total = 0
        self._fault_seen.clear()
        self._flap_start.clear()
        self._cache.clear()
        self._limits.clear()

    async def handle(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        record: bool = True,  # False: a wire translated to this one recorded what it received
    ) -> SimResult:
        """Answer one raw request; raises ``SimReset`` for a reset, never returns for silence."""
        h = {k.lower(): v for k, v in headers.items()}
        if azure_wire.is_azure_path(path):
            return await azure_wire.handle(self, method, path, h, body)
        if bedrock_wire.is_bedrock_path(path):
            return await bedrock_wire.handle(self, method, path, h, body)
        if gemini_wire.is_gemini_path(path):
            return await gemini_wire.handle(self, method, path, h, body)
        route = path.split("?", 1)[0].rstrip("/")
        if route.startswith("/v1/"):
            route = route[3:]
        if route == responses_wire.ROUTE:
            return await responses_wire.handle(self, method, path, h, body)
        if route.startswith("/messages"):
            fmt = Format.ANTHROPIC
        elif route == "/chat/completions" or "anthropic-version" not in h:
            fmt = Format.OPENAI
        else:
            fmt = Format.ANTHROPIC
        rid = self._request_id(fmt)
        parsed, bad_json = _load(body)
        model = parsed.get("model") if isinstance(parsed, dict) else None
        model_str = model if isinstance(model, str) else None
        spec = split_model(model_str)[1] if model_str else None
        if record:
            self._record(method, path, h, parsed, model_str, spec)
        if route == "/models" or route.startswith("/models/"):
            if method != "GET":
                return error_result(fmt, 405, rid, message="Method Not Allowed")
            if route.startswith("/models/"):
                return get_model(fmt, self.models, route[len("/models/") :], rid)
            return list_models(fmt, self.models, rid)
        if route not in ("/messages", "/messages/count_tokens", "/chat/completions", "/embeddings"):
            message = "Not Found" if fmt is Format.ANTHROPIC else f"Invalid URL ({method} {path})"
            return error_result(fmt, 404, rid, message=message)
        if method != "POST":
            return error_result(fmt, 405, rid, message="Method Not Allowed")
        refusal = refusals.check_auth(
            fmt,
            h,
            rid,
            api_key=self.api_key,
            require_anthropic_version=self.require_anthropic_version,
        )
        if refusal is not None:
            return refusal
        if bad_json:
            return refusals.bad_json(fmt, rid)
        if not model_str:
            return refusals.missing_model(fmt, rid)
        try:
            fault = combined_fault(h, spec)
            pacing = read_pacing(
                h, ttft_ms=self.ttft_ms, chunk_ms=self.chunk_ms, reply_tokens=self.reply_tokens
            )
        except ScenarioError as exc:
            return error_result(fmt, 400, rid, message=str(exc))
        if fault.reset:
            raise SimReset("connection reset by simulated peer")
        if fault.silence:
            await forever()
        base_model = split_model(model_str)[0]
        verdict = None
        if fault.rate_limit is not None:
            verdict = self._limits.admit(
                fault.key, fault.rate_limit, fault.rate_window_s, self._clock(), fmt
            )
            if not verdict.allowed:
                return error_result(fmt, 429, rid, headers=verdict.headers)
        try:
            if route == "/embeddings":
                result = self._embeddings(parsed, base_model, fault, rid)
            elif route == "/chat/completions":
                result = await self._openai(parsed, base_model, fault, pacing, rid)
            else:
                result = await self._anthropic(parsed, base_model, fault, pacing, rid, route)
            if verdict is not None:
                result.headers.update(verdict.headers)
            return result
        except WireError as exc:
            return error_result(
                fmt,
                exc.status,
                rid,
                message=exc.message,
                param=exc.param,
                code=exc.code,
                etype=exc.etype,
            )

    async def _anthropic(
        self, body: Any, model: str, fault: Fault, pacing: Pacing, rid: str, route: str
    ) -> SimResult:
        fmt = Format.ANTHROPIC
        counting = route == "/messages/count_tokens"
        call = anthropic_wire.parse(body, model=model, count_only=counting)
        total = tokens_of(sum(s.weight for s in call.segments))
        if counting:
            data = orjson.dumps({"input_tokens": total})
            return SimResult(200, _json_headers(fmt, rid, data), once(data))
        if fault.no_prefill and not call.prompt.last_is_user:  # roles are user or assistant
            return refusals.prefill_unsupported(rid)
        early = self._early_failure(fmt, model, fault, total, rid)
        if early is not None:
            return early
        answer = self._answer(call.prompt, pacing, self._ids.anthropic_tool, model)
        usage = anthropic_usage(
            self._cache,
            salt=model.encode(),
            segments=call.segments,
            min_tokens=self.min_cache_tokens,
            ttl_5m=self.cache_ttl_s,
            now=self._clock(),
        )
        msg_id = self._ids.anthropic_message()
        if call.stream:
            frames = anthropic_wire.stream_frames(call, answer, usage, msg_id)
            if fault.spaced_json:
                frames = spaced_frames(frames)
            headers = {"content-type": _SSE, "cache-control": "no-cache", "request-id": rid}
            return SimResult(200, headers, paced_stream(frames, pacing, fault, fmt))
        data = anthropic_wire.message_body(call, answer, usage, msg_id)
        return await self._unary(fmt, data, answer, pacing, fault, rid)

    async def _openai(
        self, body: Any, model: str, fault: Fault, pacing: Pacing, rid: str
    ) -> SimResult:
        fmt = Format.OPENAI
        call = openai_wire.parse(body, model=model)
        early = self._early_failure(fmt, model, fault, tokens_of(len(call.prompt_bytes)), rid)
        if early is not None:
            return early
        answer = self._answer(call.prompt, pacing, self._ids.openai_tool, model)
        usage = openai_usage(
            self._cache,
            salt=b"openai\0" + model.encode() + b"\0" + call.cache_key.encode(),
            prompt=call.prompt_bytes,
            min_tokens=self.openai_min_cache_tokens,
            ttl=self.cache_ttl_s,
            now=self._clock(),
        )
        cid = self._ids.openai_completion()
        if call.stream:
            frames = openai_wire.stream_frames(call, answer, usage, cid)
            if fault.spaced_json:
                frames = spaced_frames(frames)
            headers = {"content-type": _SSE, "x-request-id": rid, **_openai_extra()}
            return SimResult(200, headers, paced_stream(frames, pacing, fault, fmt))
        data = openai_wire.completion_body(call, answer, usage, cid)
        return await self._unary(fmt, data, answer, pacing, fault, rid)

    def _embeddings(self, body: Any, model: str, fault: Fault, rid: str) -> SimResult:
        """OpenAI's embeddings endpoint: deterministic unit vectors (see ``embeddings``)."""
        done = embeddings.answer(body, model)  # a bad body is the provider's 400 first
        early = self._early_failure(Format.OPENAI, model, fault, done.prompt_tokens, rid)
        if early is not None:
            return early
        return SimResult(200, _json_headers(Format.OPENAI, rid, done.body), once(done.body))

    def _answer(
        self, prompt: Any, pacing: Pacing, new_tool_id: Callable[[], str], model: str
    ) -> Answer:
        return compose_answer(
            prompt,
            reply_tokens=pacing.reply_tokens,
            obey_injections=self.obey_injections,
            new_tool_id=new_tool_id,
            model=model,
            profiles=self.quality,
        )

    async def _unary(
        self, fmt: Format, data: bytes, answer: Answer, pacing: Pacing, fault: Fault, rid: str
    ) -> SimResult:
        delay = unary_delay_s(pacing, fault, answer.output_tokens)
        if delay > 0:
            await asyncio.sleep(delay)
        if fault.spaced_json:
            data = spaced(data)
        if fault.malformed_after is not None:
            data = malformed_unary(data)
        headers = _json_headers(fmt, rid, data)
        return SimResult(200, headers, unary_body(data, fault))

    def _early_failure(
        self, fmt: Format, model: str, fault: Fault, input_tokens: int, rid: str
    ) -> SimResult | None:
        """Refusals decided before generating: unknown model, context, policy, status faults."""
        if self.reject_unknown_models and model not in self.models:
            return refusals.unknown_model(fmt, model, rid)
        if fault.context_length or input_tokens > self.context_window:
            window = self.context_window
            return refusals.context_too_long(fmt, max(input_tokens, window + 1), window, rid)
        if fault.content_policy:
            return refusals.content_policy(fmt, rid)
        status = self._failing_status(fault)
        if status is None:
            return None
        return error_result(fmt, status, rid, headers=retry_headers(fmt, fault.retry_after, status))

    def _failing_status(self, fault: Fault) -> int | None:
        """The status this request fails with, if its fault says it fails (counters live here)."""
        if not fault.conditional:
            if fault.status is None or fault.status < 400 or fault.error_after is not None:
                return None
            return fault.status
        key = fault.key
        n = self._fault_seen[key]
        self._fault_seen[key] = n + 1
        if fault.fail_first is not None and n < fault.fail_first:
            return fault.status or 500
        if fault.fail_every is not None and (n + 1) % fault.fail_every == 0:
            return fault.status or 503
        if fault.flap_s is not None:
            start = self._flap_start.setdefault(key, self._clock())
            if self._clock() - start < fault.flap_s:
                return fault.status or 503
        if fault.fail_rate is not None and _unit(fault.seed, n) < fault.fail_rate:
            return fault.status or 500
        return None

    def _record(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: Any,
        model: str | None,
        spec: str | None,
    ) -> None:
        scenario = headers.get(SCENARIO_HEADER)
        if scenario is None:
            try:
                scenario = combined_fault(headers, spec).key or None
            except ScenarioError:
                scenario = None
        self._records.append(
            RecordedRequest(method, path, headers, body, time.time(), model, scenario)
        )
        self._total += 1
        if scenario is not None:
            self._counts[scenario] += 1

    def _request_id(self, fmt: Format) -> str:
        return (
            self._ids.anthropic_request() if fmt is Format.ANTHROPIC else self._ids.openai_request()
        )


def _load(body: bytes) -> tuple[Any, bool]:
    if not body:
        return None, False
    try:
        return orjson.loads(body), False
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace"), True


def _json_headers(fmt: Format, rid: str, data: bytes) -> dict[str, str]:
    headers = {"content-type": "application/json", "content-length": str(len(data))}
    if fmt is Format.ANTHROPIC:
        headers["request-id"] = rid
    else:
        headers["x-request-id"] = rid
        headers.update(_openai_extra())
    return headers


def _openai_extra() -> dict[str, str]:
    return {"openai-version": "2020-10-01", "openai-processing-ms": "1"}


def _unit(seed: int, n: int) -> float:
    """A reproducible uniform draw in [0, 1) for the ``n``-th request of a ``fail_rate`` fault."""
    digest = hashlib.blake2b(f"{seed}:{n}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64

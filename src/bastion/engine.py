"""Runs a call against its deployments: fast path when formats match, translation when not.

The attempt loop lives here; which failures move on to the next deployment is
decided by ``is_transient``. Retries with backoff, breakers and hedging wrap
this loop in ``reliability/`` without changing how one attempt works.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from .call import Attempt, Call
from .errors import (
    AIUnavailable,
    BastionError,
    InvalidRequest,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from .providers import translate
from .providers.adapters import retry_after, usage_from_anthropic, usage_from_openai
from .providers.base import Format
from .reliability.router import Deployment, Router
from .streams import StreamRelay

TRANSIENT_STATUS = frozenset({401, 403, 408, 409, 429, 500, 502, 503, 504, 529})


@dataclass(slots=True)
class Reply:
    """What goes back to the client: a body, or a primed stream of SSE bytes."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    stream: AsyncIterator[bytes] | None = None


class UpstreamStatusError(UpstreamError):
    """A provider answered with an error status; ``fmt`` is the format of its body."""

    def __init__(self, status: int, body: bytes, fmt: Format, headers: dict[str, str]) -> None:
        super().__init__(
            f"upstream returned HTTP {status}",
            upstream_status=status,
            upstream_body=body,
            retry_after=retry_after(headers),
        )
        self.fmt = fmt

    def http_status(self) -> int:
        return self.upstream_status or 502


def is_transient(err: UpstreamError) -> bool:
    """Worth another deployment: transport failures, and statuses that say 'not now' or 'not our key'."""
    if isinstance(err, UpstreamStatusError):
        return (err.upstream_status or 0) in TRANSIENT_STATUS
    return True


def upstream_body(call: Call, dep: Deployment) -> dict[str, Any]:
    """The body as the deployment's provider expects it (same dict on the fast path)."""
    target = dep.endpoint.format
    if target is call.client_format:
        body = dict(call.body)
        body["model"] = dep.model
    else:
        body = translate.request_to(target, call.body, source=call.client_format, model=dep.model)
    if call.stream and target is Format.OPENAI:
        so = body.get("stream_options")
        body["stream_options"] = {**(so if isinstance(so, dict) else {}), "include_usage": True}
    return body


OnEnd = Callable[[BaseException | None], Awaitable[None]]


class Engine:
    """Executes calls; one instance per gateway."""

    __slots__ = ("_router",)

    def __init__(self, router: Router) -> None:
        self._router = router

    async def run(self, call: Call, passthrough: dict[str, str], on_end: OnEnd) -> Reply:
        deployments = self._router.resolve(call.requested_model)
        last: UpstreamError | None = None
        for dep in deployments:
            if call.remaining() <= 0:
                break
            attempt = Attempt(dep.name, dep.endpoint.name, dep.model, started=time.monotonic())
            call.attempts.append(attempt)
            try:
                if call.stream:
                    return await self._stream(call, dep, passthrough, on_end)
                return await self._unary(call, dep, passthrough)
            except UpstreamError as exc:
                attempt.error = type(exc).__name__
                attempt.status = exc.upstream_status
                last = exc
                if not is_transient(exc):
                    break
            finally:
                attempt.ended = time.monotonic()
        if last is None:
            raise AIUnavailable(
                "the call's deadline passed before any deployment answered", reason="deadline"
            )
        raise last

    def _pick(self, call: Call, dep: Deployment) -> None:
        call.deployment = dep.name
        call.provider = dep.endpoint.name
        if call.served_model is None:
            call.served_model = dep.model

    async def _send(
        self,
        call: Call,
        dep: Deployment,
        body: dict[str, Any],
        passthrough: dict[str, str],
        timeout: float,
    ) -> Any:
        req = dep.endpoint.build(
            body, stream=call.stream, extra_headers=dep.headers, passthrough=passthrough
        )
        resp = await dep.transport.send(req, timeout=min(timeout, call.remaining()))
        if resp.status != 200:
            try:
                err_body = await _read(resp, min(dep.timeouts.total, call.remaining()))
            finally:
                await resp.aclose()
            raise UpstreamStatusError(
                resp.status, err_body, dep.endpoint.format, dict(resp.headers)
            )
        return resp

    async def _unary(self, call: Call, dep: Deployment, passthrough: dict[str, str]) -> Reply:
        body = upstream_body(call, dep)
        t = dep.timeouts
        resp = await self._send(call, dep, body, passthrough, t.connect + t.first_token)
        try:
            raw = await _read(resp, min(t.total, call.remaining()))
        finally:
            await resp.aclose()
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError("upstream sent a malformed JSON body") from None
        if not isinstance(obj, dict):
            raise UpstreamProtocolError("upstream sent a non-object JSON body")
        self._pick(call, dep)
        _observe_response(call, obj, dep.endpoint.format)
        call.first_byte = time.monotonic()
        if dep.endpoint.format is not call.client_format:
            obj = translate.response_to(
                call.client_format, obj, source=dep.endpoint.format, model=None
            )
            raw = orjson.dumps(obj)
        call.status = 200
        return Reply(200, {"content-type": "application/json"}, body=raw)

    async def _stream(
        self, call: Call, dep: Deployment, passthrough: dict[str, str], on_end: OnEnd
    ) -> Reply:
        body = upstream_body(call, dep)
        t = dep.timeouts
        resp = await self._send(call, dep, body, passthrough, t.connect + t.first_token)
        emit = None
        if dep.endpoint.format is not call.client_format:
            tr = translate.StreamTranslator(
                dep.endpoint.format,
                call.client_format,
                model=None,
                include_usage=call.include_usage,
            )
            emit = tr.feed
        relay = StreamRelay(
            call, resp, dep.endpoint.format, emit=emit, idle_timeout=t.idle, on_end=on_end
        )
        try:
            first = await relay.prime(t.first_token)
        except BaseException:
            await resp.aclose()
            raise
        self._pick(call, dep)
        call.status = 200
        return Reply(200, {}, stream=relay.run(first))


async def _read(resp: Any, timeout: float) -> bytes:
    import asyncio

    try:
        async with asyncio.timeout(max(timeout, 0.0)):
            data: bytes = await resp.read()
            return data
    except TimeoutError:
        raise UpstreamTimeout(f"upstream body not complete within {timeout:.3g}s") from None


def _observe_response(call: Call, obj: dict[str, Any], fmt: Format) -> None:
    model = obj.get("model")
    if isinstance(model, str):
        call.served_model = model
    u = obj.get("usage")
    if fmt is Format.ANTHROPIC:
        if isinstance(u, dict):
            usage_from_anthropic(u, call.usage)
        for block in obj.get("content") or ():
            if isinstance(block, dict) and isinstance(block.get("text"), str):
                call.output_text.append(block["text"])
    else:
        if isinstance(u, dict):
            usage_from_openai(u, call.usage)
        for choice in obj.get("choices") or ():
            msg = choice.get("message") if isinstance(choice, dict) else None
            if isinstance(msg, dict) and isinstance(msg.get("content"), str):
                call.output_text.append(msg["content"])


def render_error(err: BaseException, client: Format) -> tuple[int, dict[str, str], bytes]:
    """An error as the client's API would have sent it; provider errors keep their status and meaning."""
    if isinstance(err, UpstreamStatusError) and err.upstream_body is not None:
        status = err.upstream_status or 502
        headers = {"content-type": "application/json"}
        if err.retry_after is not None:
            headers["retry-after"] = str(max(1, round(err.retry_after)))
        if status in (401, 403):
            # the provider rejected *our* credentials: not the client's fault
            cred = UpstreamError("the upstream provider rejected the gateway's credentials")
            return 502, headers, cred.render(client.value)
        if err.fmt is client:
            return status, headers, err.upstream_body
        status, body = translate.error_to(client, status, err.upstream_body, source=err.fmt)
        return status, headers, orjson.dumps(body)
    if isinstance(err, BastionError):
        headers = {"content-type": "application/json", **err.headers()}
        return err.http_status(), headers, err.render(client.value)
    internal = BastionError("internal error")
    return 500, {"content-type": "application/json"}, internal.render(client.value)


__all__ = ["Engine", "InvalidRequest", "Reply", "UpstreamStatusError", "render_error"]

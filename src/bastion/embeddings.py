"""``POST /v1/embeddings``: aliases, same-dimension failover, and the guards that apply to it.

An embeddings call is a ``Call`` like any other, so the guards that are about the call and not
about chat text run unchanged, from the gateway's own chain: kill switch, key model allow-list,
rate limits, the budget (each attempt reserves its worst case, every input token at its
deployment's input price, and is settled at the usage the provider reports), cost, records and
the spend ledger, metrics, access log and traces. Chat-only guards (templates, injection,
max_tokens, output filters) have nothing to act on here. PII in the input is scrubbed before the
provider sees it when the feature's ``pii_provider`` policy asks.

Failover: an alias's vectors must all be comparable, so only deployments declaring the first
one's ``dimensions`` are tried; the others are skipped and named on the record. What follows a
failure (retry, next, give up) is the same ``RetryPolicy`` decision as for chat, behind the
same circuit breakers (by deployment name, shared through the counter store). A deployment
whose answer has the wrong number of vectors or the wrong length is a malformed answer, and the
next one is tried.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from .auth import key_from_headers
from .call import Attempt, Call, Principal, Usage
from .cost.state_batch import flush_admit
from .embeddings_request import EmbeddingsRequest, parse_request, scrub_inputs
from .engine import Reply, UpstreamStatusError, new_attempt
from .errors import (
    BastionError,
    BudgetExceeded,
    InvalidRequest,
    PermissionDenied,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from .identity import resolve_user
from .observability.tracecontext import format_traceparent, new_id, parse_traceparent
from .pipeline import Pipeline
from .providers.base import Format, UpstreamRequest
from .reliability.exhaustion import Outcome
from .reliability.policy import Action
from .reliability.router import Deployment
from .schema import header_token, parse_body
from .upstream import provider_id_headers, provider_request_id

if TYPE_CHECKING:
    from .gateway import Gateway

__all__ = ["GUARDS", "EmbeddingsApi"]

# the gateway's guards that apply to an embeddings call, by name (the rest are about chat text)
GUARDS = frozenset(
    {
        "access_log",
        "metrics",
        "tracing",
        "record",
        "kill_switch",
        "key_models",
        "rate_limit",
        "budget",
        "cost",
    }
)
EMBEDDING_KINDS = frozenset({"openai", "openai-compatible", "sim"})
# returned to the caller as the provider said them: the request itself is at fault
# call context of the library entry point, as the headers a server call would carry
_CONTEXT = {"user": "x-bastion-user", "feature": "x-bastion-feature", "traceparent": "traceparent"}


class EmbeddingsApi:
    """Built once with the gateway; ``handle`` has the signature of ``Gateway.handle``."""

    def __init__(self, gateway: Gateway) -> None:
        self._gw = gateway
        self.pipeline = Pipeline([g for g in gateway.pipeline.guards if _name(g) in GUARDS])
        self._retry = gateway.config.reliability.retry

    async def create(self, body: Mapping[str, Any], **ctx: str) -> dict[str, Any]:
        """An embeddings call in-process (the library's way in); returns the response object.

        ``ctx`` takes ``user``, ``feature`` and ``traceparent``, as the server's headers would.
        """
        from .library import LIBRARY_PRINCIPAL  # the operator's own code: its user ids are trusted

        unknown = set(ctx) - set(_CONTEXT)
        if unknown:
            raise TypeError(f"unknown call context {sorted(unknown)}; expected {sorted(_CONTEXT)}")
        headers = {_CONTEXT[k]: v for k, v in ctx.items()}
        reply = await self.handle(
            Format.OPENAI, orjson.dumps(dict(body)), headers, principal=LIBRARY_PRINCIPAL
        )
        out: dict[str, Any] = orjson.loads(reply.body or b"{}")
        return out

    async def handle(
        self,
        fmt: Format,
        raw: bytes,
        headers: Mapping[str, str],
        *,
        principal: Principal | None = None,
        admit: Callable[[dict[str, Any], Principal], None] | None = None,
    ) -> Reply:
        """Validate, guard, route and run one embeddings call; raise ``BastionError`` to refuse."""
        gw = self._gw
        received = time.monotonic()
        if principal is None:
            principal = await gw.keys.resolve(key_from_headers(headers))
        feature = principal.feature or headers.get("x-bastion-feature")
        body: dict[str, Any] | None = None
        try:
            body = parse_body(raw)
            req = parse_request(body)
            if admit is not None:
                admit(body, principal)
            self._allowed(req.model, feature)
            deployments = self._deployments(req)
        except BastionError as exc:
            exc.request_id = await gw.refusals.refused(
                Format.OPENAI,
                exc,
                principal,
                body,
                headers,
                received,
                feature if feature in gw.config.features else None,
            )
            raise
        return await self._run(req, body, len(raw), headers, principal, deployments, received)

    def _allowed(self, model: str, feature: str | None) -> None:
        """A feature's model allow-list holds here too (its chat pin does not: it names a chat model)."""
        f = self._gw.config.features.get(feature) if feature else None
        if f is not None and f.allowed_models is not None and model not in f.allowed_models:
            raise PermissionDenied(
                f"model {model!r} is not allowed for feature {feature!r} "
                f"(allowed: {', '.join(f.allowed_models)})",
                param="model",
            )

    def _deployments(self, req: EmbeddingsRequest) -> list[Deployment]:
        """The deployments of the first one's dimension, in order; a chat model is a 400."""
        deps = self._gw.router.resolve(req.model)  # an unknown model is a 404
        dims = deps[0].dimensions
        if dims is None:
            raise InvalidRequest(
                f"model {req.model!r} is not an embedding model on this gateway; "
                "use /v1/chat/completions",
                param="model",
            )
        if req.dimensions is not None and req.dimensions > dims:
            raise InvalidRequest(
                f"dimensions: model {req.model!r} gives vectors of at most {dims} dimensions",
                param="dimensions",
            )
        return [d for d in deps if d.dimensions == dims and d.endpoint.kind in EMBEDDING_KINDS]

    async def _run(
        self,
        req: EmbeddingsRequest,
        body: dict[str, Any],
        body_bytes: int,
        headers: Mapping[str, str],
        principal: Principal,
        deployments: Sequence[Deployment],
        received: float,
    ) -> Reply:
        gw = self._gw
        trace_id, parent, flags = parse_traceparent(headers.get("traceparent"))
        span_id = new_id(8)
        call = Call(
            request_id="req_" + uuid.uuid4().hex,
            client_request_id=header_token(headers.get("x-request-id"), 128),
            trace_id=trace_id,
            span_id=span_id,
            client_format=Format.OPENAI,
            parent_span_id=parent,
            trace_flags=flags,
            principal=principal,
            body=body,
            requested_model=req.model,
            stream=False,
            feature=principal.feature or headers.get("x-bastion-feature"),
        )
        call.body_bytes = body_bytes
        call.flags["endpoint"] = "embeddings"
        call.user_id, call.cap_subject = resolve_user(
            principal,
            Format.OPENAI,
            body,
            headers,
            end_user_caps=gw.config.cost.caps.end_user_caps,
        )
        call.deadline = call.started + gw.config.feature(call.feature).deadline
        call.stages["auth_routing"] = (time.monotonic() - received) * 1000.0
        traceparent = format_traceparent(trace_id, span_id, flags)
        try:
            t_guards = time.monotonic()
            await self.pipeline.before(call)
            if gw.pii.policy(call).provider:
                req, finding = scrub_inputs(req, gw.scrubber.session(), gw.pii.version)
                if finding is not None:
                    call.add_finding(finding)
            call.stages["guards"] = (time.monotonic() - t_guards) * 1000.0
            skipped = [d.name for d in gw.router.resolve(req.model) if d not in deployments]
            if skipped:
                call.flags["skipped_deployments"] = skipped
            reply = await self._attempts(call, req, deployments, traceparent)
        except BaseException as exc:
            await self._finish(call, exc)
            raise
        reply.call = call
        reply.headers.update(
            {
                "x-request-id": call.request_id,
                "traceparent": traceparent,
                "x-bastion-attempts": str(len(call.attempts)),
            }
        )
        if call.client_request_id is not None:
            reply.headers["x-client-request-id"] = call.client_request_id
        if call.deployment:
            reply.headers["x-bastion-deployment"] = call.deployment
        await self._finish(call, None)
        return reply

    async def _attempts(
        self,
        call: Call,
        req: EmbeddingsRequest,
        deployments: Sequence[Deployment],
        traceparent: str,
    ) -> Reply:
        """Try the deployments in order; after each failure the policy says retry, next or stop."""
        engine = self._gw.engine  # the same breakers, retry policy and failure classes as chat
        out = Outcome()
        total = 0
        for i, dep in enumerate(deployments):
            if not await engine.breaker_allows(dep):
                out.skipped.append(dep.name)
                continue
            has_next = i + 1 < len(deployments)
            tries = 0
            while call.remaining() > 0 and total < self._retry.max_attempts:
                total += 1
                kind = "retry" if tries else ("failover" if call.attempts else "first")
                tries += 1
                attempt = new_attempt(dep, kind)
                call.attempts.append(attempt)
                budget = engine.attempt_budget(call, len(deployments) - i)
                try:
                    reply = await self._send(call, req, dep, attempt, traceparent, budget)
                except UpstreamError as exc:
                    decision = await engine.attempt_failed(
                        call, dep, attempt, exc, out, tries=tries, has_next=has_next
                    )
                    if decision.action is not Action.SAME:
                        break
                    await asyncio.sleep(decision.delay)
                    continue
                attempt.ended = time.monotonic()
                attempt.status = 200
                await engine.breaker_record(dep, True)
                return reply
        raise out.exhausted(call)

    async def _reserve(self, call: Call, req: EmbeddingsRequest, attempt: Attempt) -> None:
        """Hold this attempt's worst case: every input token it could bill, at its input price."""
        if not call.budget_caps:
            await flush_admit(call)  # the rate limits planned at admission, checked now
            return
        price = self._gw.prices.for_deployment(attempt.model, attempt.provider_kind)
        if price is None:
            raise BudgetExceeded(
                f"model {attempt.model!r} has no known price, so its spend cannot be capped",
                scope="unpriced_model",
            )
        await self._gw.budget.reserve(call, attempt, price.worst_case(req.input_upper_bound(), 0))

    async def _send(
        self,
        call: Call,
        req: EmbeddingsRequest,
        dep: Deployment,
        attempt: Attempt,
        traceparent: str,
        budget: float,
    ) -> Reply:
        """One upstream request: reserved first, then sent, checked and observed."""
        upstream = _upstream_request(req, dep, traceparent)
        await self._reserve(call, req, attempt)
        attempt.sent = True
        limit = min(dep.timeouts.total, budget, max(call.remaining(), 0.0))
        t_end = time.monotonic() + limit
        try:
            resp = await dep.transport.send(upstream, timeout=limit)
        except UpstreamConnectError as exc:
            if not exc.reached:
                attempt.usage = Usage()  # never reached the provider: nothing was billed
                await self._gw.budget.release_attempt(call, attempt)
            raise
        attempt.provider_request_id = provider_request_id(resp.headers)
        try:
            async with asyncio.timeout(max(t_end - time.monotonic(), 0.0)):
                raw = await resp.read()
        except TimeoutError:
            raise UpstreamTimeout(f"upstream body not complete within {limit:.3g}s") from None
        finally:
            await resp.aclose()
        if resp.status != 200:
            attempt.usage = Usage()  # an error answer is not billed
            await self._gw.budget.release_attempt(call, attempt)
            raise UpstreamStatusError(resp.status, raw, Format.OPENAI, dict(resp.headers))
        want = req.dimensions or dep.dimensions or 0
        if len(raw) > _PARSE_INLINE_BYTES:
            # a large batch (2048 inputs x 3072 floats is ~126 MB of JSON): parse it off the
            # event loop, so the other calls in flight are not held for the better part of a second
            obj = await asyncio.to_thread(_checked, raw, len(req.items), want)
        else:
            obj = _checked(raw, len(req.items), want)
        u = obj.get("usage")
        prompt = u.get("prompt_tokens") if isinstance(u, dict) else None
        if isinstance(prompt, int) and not isinstance(prompt, bool) and prompt >= 0:
            attempt.usage = Usage(input_tokens=prompt)
            call.usage = Usage(input_tokens=prompt)
        # else the usage is unknown and the attempt is settled at its reservation (cost.meter)
        model = obj.get("model")
        call.served_model = model if isinstance(model, str) else dep.model
        call.deployment = dep.name
        call.provider = dep.endpoint.name
        call.provider_kind = dep.endpoint.kind
        call.first_byte = time.monotonic()
        call.status = 200
        ids = provider_id_headers(Format.OPENAI, attempt.provider_request_id)
        return Reply(200, {"content-type": "application/json", **ids}, body=raw)

    async def _finish(self, call: Call, error: BaseException | None) -> None:
        call.ended = time.monotonic()
        call.stages["total"] = (call.ended - call.started) * 1000.0
        ids = [a.provider_request_id for a in call.attempts if a.provider_request_id]
        if ids:
            call.flags["provider_request_ids"] = ids
        if error is not None:
            call.error_type = type(error).__name__
            if isinstance(error, BastionError):
                error.request_id = call.request_id  # the error answer names its record
                call.status = error.http_status()
            elif call.status == 0:
                call.status = 499 if isinstance(error, GeneratorExit) else 500
        await self.pipeline.after(call, error)


def _name(guard: object) -> str:
    name = getattr(guard, "name", "")
    return name if isinstance(name, str) else ""


def _upstream_request(req: EmbeddingsRequest, dep: Deployment, traceparent: str) -> UpstreamRequest:
    """The provider's request: the client's fields Bastion acts on, with its deployment's model.

    The simulator is told the configured dimension when the client named none; a real provider
    answers at its model's own, which the configured ``dimensions`` must match.
    """
    ep = dep.endpoint
    body: dict[str, Any] = {"model": dep.model, "input": req.wire_input()}
    if req.encoding_format is not None:
        body["encoding_format"] = req.encoding_format
    dims = req.dimensions
    if dims is None and ep.kind == "sim":
        dims = dep.dimensions
    if dims is not None:
        body["dimensions"] = dims
    headers = {"content-type": "application/json", **ep.headers, **dep.headers}
    if ep.api_key:
        headers["authorization"] = "Bearer " + ep.api_key
    headers["traceparent"] = traceparent
    path = "/v1/embeddings" if ep.kind == "sim" else "/embeddings"
    return UpstreamRequest("POST", ep.base_url + path, headers, orjson.dumps(body))


_PARSE_INLINE_BYTES = 1 << 20


def _checked(raw: bytes, count: int, dimensions: int) -> dict[str, Any]:
    """The provider's answer, if it is one vector of the expected length per input, in order."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamProtocolError("upstream sent a malformed JSON body") from None
    data = obj.get("data") if isinstance(obj, dict) else None
    if not isinstance(obj, dict) or not isinstance(data, list) or len(data) != count:
        raise UpstreamProtocolError(f"upstream did not answer with {count} embeddings")
    for i, item in enumerate(data):
        vec = item.get("embedding") if isinstance(item, dict) else None
        if isinstance(vec, str):
            try:
                size = len(base64.b64decode(vec, validate=True)) // 4
            except (binascii.Error, ValueError):
                raise UpstreamProtocolError(f"embedding {i} is not valid base64") from None
        elif isinstance(vec, list):
            size = len(vec)
        else:
            raise UpstreamProtocolError(f"embedding {i} is missing")
        if item.get("index", i) != i or (dimensions and size != dimensions):
            raise UpstreamProtocolError(
                f"embedding {i} has {size} dimensions where {dimensions} were expected"
            )
    return obj

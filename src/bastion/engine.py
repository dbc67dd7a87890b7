"""Runs a call against its deployments: fast path when formats match, translation when not.

The attempt loop lives here; what follows a failure (the same deployment after a delay, the
next one, or the caller) is decided by the pure ``reliability.policy.RetryPolicy``. Breakers
and hedging wrap this loop without changing how one attempt works.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from .call import Attempt, Call, Usage
from .config import BreakerConfig, RetryConfig
from .cost.state_batch import BreakerDenied, plan_breaker_allow, plan_breaker_record, unplan
from .eager import within
from .error_reply import UpstreamStatusError, render_error
from .errors import (
    InvalidRequest,
    StateUnavailable,
    UpstreamConnectError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from .output import filter_body
from .providers import translate
from .providers.base import BufferedResponse, UpstreamResponse
from .providers.foreign import answer_format, as_client, error_headers
from .recovery import PrefillMemory, Recovery, Resumed, is_prefill_refusal, with_prefill
from .reliability.cooling import Cooling
from .reliability.exhaustion import Outcome
from .reliability.policy import Action, Decision, Failure, RetryPolicy, classify
from .reliability.router import Deployment, Router
from .state import BreakerPolicy, CounterStore
from .streams import Continuation, StreamRelay
from .upstream import provider_id_headers, provider_request_id, upstream_body
from .watch import observe_body


@dataclass(slots=True)
class Reply:
    """What goes back to the client: a body, or a primed stream of SSE bytes."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    stream: AsyncIterator[bytes] | None = None
    call: Call | None = None
    relay: StreamRelay | None = None


OnEnd = Callable[[BaseException | None], Awaitable[None]]
# breakers are advisory: during a counter-store outage a call waits this long for one, not
# the store client's own (seconds-long) timeout
BREAKER_TIMEOUT = 0.5
# returned to the caller as the provider said them: the request itself is at fault
_AS_PROVIDER_SAID = frozenset({Failure.CONTENT_POLICY, Failure.CLIENT, Failure.CONTEXT_LENGTH})
ReserveAttempt = Callable[[Call, Attempt, dict[str, Any], int], Awaitable[None]]
ReleaseAttempt = Callable[[Call, Attempt], Awaitable[None]]


class Engine:
    """Executes calls: retries with backoff inside a deployment, failover across them, breakers around each."""

    __slots__ = (
        "_breaker",
        "_cooling",
        "_policy",
        "_prefill",
        "_release",
        "_reserve",
        "_retry",
        "_router",
        "_state",
    )

    def __init__(
        self,
        router: Router,
        retry: RetryConfig | None = None,
        state: CounterStore | None = None,
        breaker: BreakerConfig | None = None,
        *,
        reserve: ReserveAttempt | None = None,
        release: ReleaseAttempt | None = None,
    ) -> None:
        self._router = router
        self._reserve = reserve
        self._release = release
        self._retry = retry or RetryConfig()
        self._policy = RetryPolicy(self._retry)
        self._cooling = Cooling(state)  # rate windows of the deployments, from their answers
        self._prefill = PrefillMemory()  # deployments that refused a prefill, for its lifetime
        self._state = state
        self._breaker: BreakerPolicy | None = None
        if state is not None and breaker is not None and breaker.enabled:
            self._breaker = BreakerPolicy(
                failure_threshold=breaker.failure_threshold,
                error_rate=breaker.error_rate,
                window_seconds=breaker.window_seconds,
                min_calls=breaker.min_calls,
                cooldown_seconds=breaker.cooldown_seconds,
            )

    async def breaker_allows(self, dep: Deployment) -> bool:
        """The deployment's breaker, shared with every replica through the counter store."""
        if self._breaker is None or self._state is None:
            return True
        try:
            async with asyncio.timeout(BREAKER_TIMEOUT):
                d = await self._state.breaker_allow("breaker:" + dep.name, self._breaker)
        except (StateUnavailable, TimeoutError):
            return (
                True  # breakers are advisory: a slow or absent counter store must not stop traffic
            )
        return d.allowed

    async def breaker_record(self, dep: Deployment, ok: bool) -> None:
        if self._breaker is None or self._state is None:
            return
        with contextlib.suppress(StateUnavailable, TimeoutError):
            async with asyncio.timeout(BREAKER_TIMEOUT):
                await self._state.breaker_record("breaker:" + dep.name, ok, self._breaker)

    async def attempt_failed(
        self,
        call: Call,
        dep: Deployment,
        attempt: Attempt,
        exc: UpstreamError,
        out: Outcome,
        *,
        tries: int,
        has_next: bool,
    ) -> Decision:
        """Settle what a failed attempt tells (its class, the breaker) and what comes next;
        raises ``exc`` itself when the caller's own error is to be returned as the provider said."""
        failure = classify(exc)
        attempt.ended = time.monotonic()
        attempt.error = failure.value
        attempt.status = exc.upstream_status
        out.fail(exc, failure)
        if self._policy.counts_against_breaker(failure):
            await self.breaker_record(dep, False)
        decision = self._policy.decide(
            failure,
            tries_here=tries,
            retry_after=exc.retry_after,
            remaining=call.remaining(),
            has_next=has_next,
        )
        if decision.action is Action.RETURN and failure in _AS_PROVIDER_SAID:
            raise exc
        return decision

    def attempt_budget(self, call: Call, deployments_left: int) -> float:
        """The seconds one attempt may use: its share of the deadline left."""
        return self._policy.attempt_budget(call.remaining(), deployments_left)

    async def run(self, call: Call, passthrough: dict[str, str], on_end: OnEnd) -> Reply:
        """Try deployments in order; after each failure the policy says retry, move on or stop."""
        deployments = list(self._router.resolve(call.requested_model))
        pol = self._retry
        out = Outcome()
        total = 0
        if call.hedge_delay is not None and len(deployments) >= 2 and call.remaining() > 0:
            allowed = [d for d in deployments[:2] if await self.breaker_allows(d)]
            if len(allowed) == 2:
                hedged, backup_started = await self._hedged(
                    call, allowed[0], allowed[1], passthrough, on_end
                )
                if isinstance(hedged, Reply):
                    return hedged
                out.fail(hedged, classify(hedged))
                total = len(call.attempts)
                if backup_started:  # both tried at once; a primary that failed early is not
                    deployments = deployments[2:]  # the end of the call: the backup still runs
        deployments = self._cooling.order(deployments)
        for i, dep in enumerate(deployments):
            gate = plan_breaker_allow(call, "breaker:" + dep.name, self._reserve and self._breaker)
            if gate is None and not await self.breaker_allows(dep):
                out.skipped.append(dep.name)
                continue
            has_next = i + 1 < len(deployments)
            tries = 0
            while call.remaining() > 0 and total < pol.max_attempts:
                # no request the provider would refuse: wait for its window when this is the
                # soonest place to go (or a retry here) and the wait fits, else go elsewhere
                free = has_next and self._cooling.wait(deployments[i + 1].name) == 0.0
                patience = (
                    0.0 if free and not tries else min(pol.max_retry_after, call.remaining() / 2)
                )
                ticket = await self._cooling.turn(dep.name, patience)
                if ticket is None:
                    out.cooled(self._cooling.soonest(dep.name))
                    break
                total += 1
                kind = (
                    "repair"
                    if call.repairing
                    else ("retry" if tries else ("failover" if call.attempts else "first"))
                )
                tries += 1
                attempt = new_attempt(dep, kind)
                call.attempts.append(attempt)
                budget = self._policy.attempt_budget(call.remaining(), len(deployments) - i)
                try:
                    if call.stream:
                        reply = await self._stream(
                            call, dep, passthrough, on_end, attempt, budget, ticket
                        )
                    else:
                        reply = await self._unary(call, dep, passthrough, attempt, budget, ticket)
                except BreakerDenied:  # checked in the attempt's batch: open, nothing was sent
                    call.attempts.remove(attempt)
                    total -= 1
                    out.skipped.append(dep.name)
                    break
                except UpstreamError as exc:
                    decision = await self.attempt_failed(
                        call, dep, attempt, exc, out, tries=tries, has_next=has_next
                    )
                    if decision.action is not Action.SAME:
                        break
                    await asyncio.sleep(decision.delay)
                    continue
                attempt.ended = time.monotonic()
                attempt.status = 200
                if not plan_breaker_record(call, "breaker:" + dep.name, True, self._breaker):
                    await self.breaker_record(dep, True)  # no settle batch to carry it
                return reply
            unplan(call, gate)  # no attempt here got as far as its batch: its probe is not taken
        raise out.exhausted(call)

    async def _one(
        self, call: Call, dep: Deployment, passthrough: dict[str, str], on_end: OnEnd, kind: str
    ) -> Reply:
        """One attempt on a shadow call of its own (hedging runs two at once)."""
        attempt = new_attempt(dep, kind)
        call.attempts.append(attempt)
        try:
            if call.stream:
                reply = await self._stream(call, dep, passthrough, on_end, attempt)
            else:
                reply = await self._unary(call, dep, passthrough, attempt)
        except UpstreamError as exc:
            failure = classify(exc)
            attempt.error = failure.value
            attempt.status = exc.upstream_status
            if self._policy.counts_against_breaker(failure):
                await self.breaker_record(dep, False)
            raise
        finally:
            attempt.ended = time.monotonic()
        attempt.status = 200
        await self.breaker_record(dep, True)
        return reply

    async def _hedged(
        self,
        call: Call,
        primary: Deployment,
        backup: Deployment,
        passthrough: dict[str, str],
        on_end: OnEnd,
    ) -> tuple[Reply | UpstreamError, bool]:
        """Start the backup too if the primary shows no first token within the hedge delay;
        the first to answer wins, the other is cancelled, and both count in cost."""
        shadows = {primary.name: call.shadow(), backup.name: call.shadow()}
        tasks: dict[asyncio.Task[Reply], Deployment] = {}
        t1 = asyncio.ensure_future(
            self._one(shadows[primary.name], primary, passthrough, on_end, "first")
        )
        tasks[t1] = primary
        assert call.hedge_delay is not None
        done, _ = await asyncio.wait({t1}, timeout=min(call.hedge_delay, max(call.remaining(), 0)))
        if not done:
            call.flags["hedged"] = True
            t2 = asyncio.ensure_future(
                self._one(shadows[backup.name], backup, passthrough, on_end, "hedge")
            )
            tasks[t2] = backup
        pending = set(tasks)
        last: UpstreamError = UpstreamError("hedged attempts failed")
        winner: tuple[Reply, Deployment] | None = None
        try:
            while pending and winner is None:
                done, pending = await asyncio.wait(
                    pending, timeout=max(call.remaining(), 0.0), return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    break
                for t in done:
                    exc = t.exception()
                    if exc is None:
                        winner = (t.result(), tasks[t])
                        break
                    if isinstance(exc, UpstreamError):
                        last = exc
                    else:
                        raise exc
        finally:
            for t in pending:
                t.cancel()
            for t in pending:
                with contextlib.suppress(BaseException):
                    await t
        for dep in (primary, backup):
            # the loser was billed too: its attempt stays on the call, priced on its own
            call.attempts.extend(shadows[dep.name].attempts)
        if winner is None:
            return last, len(tasks) == 2
        reply, dep = winner
        sh = shadows[dep.name]
        call.adopt(sh)
        self._pick(call, dep)
        call.status = 200
        if reply.relay is not None:
            reply.relay.adopt(call)
        return reply, True

    def _continuation(
        self, call: Call, dep: Deployment, passthrough: dict[str, str]
    ) -> Continuation | None:
        """After a cut mid-stream, carry the answer on at a fallback: by prefill where the
        deployment takes one, else by restarting the request there (see ``recovery``).

        The relay passes the call it writes into: a hedged stream's winner was adopted from
        a shadow, and the fallback's attempt must be settled with the call that is recorded.
        """
        rest = [d for d in self._router.resolve(call.requested_model) if d.name != dep.name]
        if not rest:
            return None
        memory = self._prefill

        async def send(
            call: Call, d: Deployment, body: dict[str, Any], kind: str
        ) -> tuple[Attempt, UpstreamResponse | UpstreamError]:
            attempt = new_attempt(d, kind)
            call.attempts.append(attempt)
            try:
                resp: UpstreamResponse = await self._send(
                    call, d, body, passthrough, d.timeouts.connect + d.timeouts.first_token, attempt
                )
            except UpstreamError as exc:
                attempt.error = type(exc).__name__
                attempt.status = exc.upstream_status
                attempt.ended = time.monotonic()
                return attempt, exc
            attempt.status = 200
            attempt.ended = time.monotonic()
            return attempt, resp

        def resumed(
            call: Call, d: Deployment, resp: UpstreamResponse, mode: Recovery, attempt: Attempt
        ) -> Resumed:
            call.deployment = d.name
            call.provider = d.endpoint.name
            call.provider_kind = d.endpoint.kind
            fmt = answer_format(d.endpoint.speaks(call.client_format), call.client_format)
            return Resumed(resp, fmt, mode, attempt, d.timeouts.idle)

        async def cont(call: Call, partial: str) -> Resumed | None:
            for d in rest:
                if call.remaining() <= 0 or not await self.breaker_allows(d):
                    continue
                body = upstream_body(call, d)
                fmt = d.endpoint.speaks(call.client_format)
                prefilled = (
                    with_prefill(body, partial, call.usage.output_tokens)
                    if memory.wants_prefill(d.name, d.prefill, fmt)
                    else None
                )
                if prefilled is not None:
                    attempt, got = await send(call, d, prefilled, "continuation")
                    if not isinstance(got, UpstreamError):
                        return resumed(call, d, got, "prefill", attempt)
                    if not (d.prefill == "auto" and is_prefill_refusal(got)):
                        await self.breaker_record(d, False)
                        continue
                    memory.refused(d.name)  # this model takes no prefill: restart it from now on
                    call.flags["prefill_refused"] = d.name
                attempt, got = await send(call, d, body, "restart")
                if isinstance(got, UpstreamError):
                    await self.breaker_record(d, False)
                    continue
                return resumed(call, d, got, "restart", attempt)
            return None

        return cont

    def _pick(self, call: Call, dep: Deployment) -> None:
        call.deployment = dep.name
        call.provider = dep.endpoint.name
        call.provider_kind = dep.endpoint.kind
        if call.served_model is None:
            call.served_model = dep.model

    async def _send(
        self,
        call: Call,
        dep: Deployment,
        body: dict[str, Any],
        passthrough: dict[str, str],
        timeout: float,
        attempt: Attempt,
        ticket: int | None = None,
    ) -> Any:
        """Send one attempt: reserved first (no upstream request skips the budget), and
        counted in its deployment's rate window (``ticket`` when it already waited its turn)."""
        target = dep.endpoint.speaks(call.client_format)
        req = dep.endpoint.build(
            body, target, stream=call.stream, extra_headers=dep.headers, passthrough=passthrough
        )
        if self._reserve is not None:
            await self._reserve(call, attempt, body, len(req.body))
        attempt.sent = True
        if ticket is None:
            ticket = self._cooling.take(dep.name)
        try:
            resp = await dep.transport.send(req, timeout=min(timeout, call.remaining()))
        except UpstreamConnectError as exc:
            if not exc.reached:
                attempt.usage = Usage()  # never reached the provider: nothing was billed
                if self._release is not None:
                    await self._release(call, attempt)
            raise
        attempt.provider_request_id = provider_request_id(resp.headers)
        await self._cooling.answered(dep.name, ticket, resp.status, resp.headers)
        if resp.status != 200:
            # an error answer is not billed, unless the provider said what it billed for it
            billed = resp.billed if isinstance(resp, BufferedResponse) else None
            attempt.usage = Usage() if billed is None else billed
            if billed is None and self._release is not None:
                await self._release(call, attempt)
            try:
                err_body = await _read(resp, min(dep.timeouts.total, call.remaining()))
            finally:
                await resp.aclose()
            headers = error_headers(target, resp.headers, err_body)
            raise UpstreamStatusError(resp.status, err_body, target, headers)
        return as_client(resp, target, call.client_format, stream=call.stream)

    async def _unary(
        self,
        call: Call,
        dep: Deployment,
        passthrough: dict[str, str],
        attempt: Attempt,
        budget: float | None = None,
        ticket: int | None = None,
    ) -> Reply:
        body = upstream_body(call, dep)
        t = dep.timeouts
        # a non-streaming answer sends its headers only once generated: bound the wait by total,
        # and by this attempt's share of the deadline so a silent provider leaves the rest time
        limit = t.total if budget is None else min(t.total, budget)
        t_end = time.monotonic() + limit
        resp = await self._send(call, dep, body, passthrough, limit, attempt, ticket)
        try:
            raw = await _read(resp, min(t_end - time.monotonic(), call.remaining()))
        finally:
            await resp.aclose()
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError("upstream sent a malformed JSON body") from None
        if not isinstance(obj, dict):
            raise UpstreamProtocolError("upstream sent a non-object JSON body")
        src = answer_format(dep.endpoint.speaks(call.client_format), call.client_format)
        self._pick(call, dep)
        if call.output_filters:
            obj = filter_body(obj, src, call.output_filters)
            raw = orjson.dumps(obj)
        attempt.usage = observe_body(call, obj, src)
        call.first_byte = time.monotonic()
        if src is not call.client_format:
            obj = translate.response_to(call.client_format, obj, source=src, model=None)
            raw = orjson.dumps(obj)
        call.status = 200
        ids = provider_id_headers(call.client_format, attempt.provider_request_id)
        return Reply(200, {"content-type": "application/json", **ids}, body=raw)

    async def _stream(
        self,
        call: Call,
        dep: Deployment,
        passthrough: dict[str, str],
        on_end: OnEnd,
        attempt: Attempt,
        budget: float | None = None,
        ticket: int | None = None,
    ) -> Reply:
        body = upstream_body(call, dep)
        t = dep.timeouts
        # one clock from sending to the first output, headers included (what a user calls time
        # to first token), within this attempt's share of the deadline
        first_by = time.monotonic() + (
            t.first_token if budget is None else min(t.first_token, budget)
        )
        resp = await self._send(
            call, dep, body, passthrough, first_by - time.monotonic(), attempt, ticket
        )
        src = answer_format(dep.endpoint.speaks(call.client_format), call.client_format)
        emit = None
        if src is not call.client_format:
            tr = translate.StreamTranslator(
                src,
                call.client_format,
                model=None,
                include_usage=call.include_usage,
            )
            emit = tr.feed
        relay = StreamRelay(
            call,
            resp,
            src,
            emit=emit,
            idle_timeout=t.idle,
            on_end=on_end,
            continuation=self._continuation(call, dep, passthrough),
            attempt=attempt,
        )
        try:
            first = await relay.prime(max(first_by - time.monotonic(), 0.0))
        except BaseException:
            await resp.aclose()
            raise
        self._pick(call, dep)
        call.status = 200
        ids = provider_id_headers(call.client_format, attempt.provider_request_id)
        return Reply(200, ids, stream=relay.run(first), relay=relay)


async def _read(resp: Any, timeout: float) -> bytes:
    try:
        # a body already in the buffer is taken without arming a timer (eager.py)
        data: bytes = await within(resp.read(), max(timeout, 0.0))
        return data
    except TimeoutError:
        raise UpstreamTimeout(f"upstream body not complete within {timeout:.3g}s") from None


def new_attempt(dep: Deployment, kind: str) -> Attempt:
    return Attempt(
        dep.name,
        dep.endpoint.name,
        dep.model,
        started=time.monotonic(),
        kind=kind,
        provider_kind=dep.endpoint.kind,
    )


__all__ = ["Engine", "InvalidRequest", "Reply", "UpstreamStatusError", "render_error"]

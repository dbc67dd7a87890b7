"""Calls that carry an ``Idempotency-Key``: claim the key, replay a finished answer, or run the
call once and keep its answer for the retries that follow.

Only a whole answer is kept (a unary 200, or a stream that ended in full): errors, degraded
stand-ins and cut streams give the key back, so a retry runs. A replay is a call of its own
(its own request id and record, ``replay_of`` naming the original), and the kill switch still
applies to it: a switched-off feature or key gets no replay either.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from .call import Call, Principal
from .config import Config
from .engine import Reply
from .errors import AIUnavailable
from .providers.base import Format
from .reliability.idempotency import (
    DEGRADED_HEADER,
    Idempotency,
    StoredResponse,
    answered_in_full,
    fingerprint,
    kept_headers,
    new_owner,
    replay_call,
    replay_headers,
    replay_stream,
)
from .reliability.idempotency import state_key as idem_state_key
from .reliability.killswitch import KillSwitchGuard
from .schema import header_token

Finish = Callable[[Call, BaseException | None], Awaitable[None]]
Canned = Callable[[Call, str], Reply]


def client_request_id(value: str | None) -> str | None:
    """The client's own request id, stored and echoed only when header-safe (never a key)."""
    return header_token(value, 128)


class IdempotentCalls:
    """Runs calls under an idempotency key; ``finish`` and ``canned`` are the gateway's own."""

    def __init__(
        self,
        config: Config,
        idempotency: Idempotency,
        kill_switch: KillSwitchGuard,
        *,
        finish: Finish,
        canned: Canned,
    ) -> None:
        self._config = config
        self._idempotency = idempotency
        self._kill_switch = kill_switch
        self._finish = finish
        self._canned = canned

    async def run(
        self,
        fmt: Format,
        body: dict[str, Any],
        headers: Mapping[str, str],
        principal: Principal,
        idem: str,
        call_once: Callable[[], Awaitable[Reply]],
    ) -> Reply:
        """Replay what the key holds, else run ``call_once`` and keep a whole answer."""
        stream = body.get("stream") is True
        feature = principal.feature or headers.get("x-bastion-feature")
        key = idem_state_key(principal.key_id, fmt.value, idem)
        fp = fingerprint({k: v for k, v in body.items() if k != "stream"})
        lock = self._config.feature(feature).deadline + 30
        owner = new_owner()  # this claim's token: what it gives back is its own claim only
        stored = await self._idempotency.claim(
            key, fp, stream=stream, lock_seconds=lock, owner=owner
        )
        if stored is not None:
            return await self._replay(stored, fmt, body, headers, principal, feature)
        try:
            reply = await call_once()
        except BaseException:
            await self._idempotency.abandon(key, owner)
            raise
        done = reply.call
        if done is None or DEGRADED_HEADER in reply.headers or not answered_in_full(done):
            await self._idempotency.abandon(key, owner)  # errors and stand-ins are not results
        elif reply.stream is not None:
            reply.stream = self._idempotency.wrap_stream(
                key, fp, reply.stream, reply.headers, lambda: answered_in_full(done), owner
            )
        elif reply.status == 200 and reply.body is not None:
            kept = StoredResponse(reply.body, False, kept_headers(reply.headers))
            await self._idempotency.complete(key, fp, kept)
        else:
            await self._idempotency.abandon(key, owner)
        return reply

    async def _replay(
        self,
        stored: StoredResponse,
        fmt: Format,
        body: dict[str, Any],
        headers: Mapping[str, str],
        principal: Principal,
        feature: str | None,
    ) -> Reply:
        call = replay_call(
            stored,
            fmt=fmt,
            body=body,
            principal=principal,
            feature=feature,
            traceparent=headers.get("traceparent"),
            client_request_id=client_request_id(headers.get("x-request-id")),
        )
        try:
            await self._kill_switch.before(call)  # a switched-off feature or key gets no replay
        except AIUnavailable as exc:
            call.flags["replay_withheld"] = stored.request_id
            call.flags["degraded"] = exc.reason
            degraded = self._config.feature(feature).degraded
            if degraded.mode != "message":
                await self._finish(call, exc)
                raise
            reply = self._canned(call, degraded.message)
            reply.headers["x-request-id"] = call.request_id
            if reply.stream is None:
                await self._finish(call, None)
            return reply
        except BaseException as exc:
            await self._finish(call, exc)
            raise
        call.status = 200
        call.flags["replay_of"] = stored.request_id
        await self._finish(call, None)
        hs = replay_headers(stored, call)
        if stored.stream:
            return Reply(200, hs, stream=replay_stream(stored.body), call=call)
        return Reply(200, hs, body=stored.body, call=call)

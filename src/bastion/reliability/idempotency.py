"""Idempotency keys: a request carrying ``Idempotency-Key`` runs at most once per principal.

A retry gets the stored response (as a stream again if it was streamed) with the
original's headers; a concurrent duplicate waits for the first, then gets its result
(or 409 if the wait runs out); the same key with a different body gets 422. The claim
lives in the counter store, so this holds across replicas.

Only a completed success is stored: a unary 200 that is not a degraded stand-in, or a
stream that ended cleanly. An error, a cut or errored stream, a client that went away
and a canned degraded answer abandon the claim instead, so the retry runs the request:
replaying a failure for a day would turn one upstream hiccup into a day of the same
error. The client's key is hashed into a state key scoped by the caller's key id, so
one key can never name (or read) another's stored result.

Each claim carries its claimer's own token. When the counter store times out on a claim, its
script may still run once the store answers again (it was sent; a stalled Redis runs it on
resuming): a claim that nobody runs, which would hold the client's retry off with a 409 for
the whole lock. So the claimer takes back its own claim (by token, never a later caller's)
once the store answers; likewise a give-back that could not land. A result that could not
be stored still reaches its caller, and its claim stays until the lock ends: the request ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import struct
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..call import Call, Principal
from ..dialects import Dialect, dialect_for
from ..errors import Conflict, StateUnavailable, UnprocessableRequest
from ..observability.tracecontext import format_traceparent, new_id, parse_traceparent
from ..state import CounterStore, IdemOutcome

log = logging.getLogger("bastion.reliability.idempotency")

REPLAY_HEADER = "x-bastion-idempotent-replay"
DEGRADED_HEADER = "x-bastion-degraded"
# headers that describe this delivery, not the stored answer: a replay sends its own
PER_DELIVERY_HEADERS = frozenset({"traceparent", "x-client-request-id", REPLAY_HEADER})
# stored as: a kind byte, a 4-byte header length, the headers as JSON, the body. (The state key
# changed with this format, so no value from before it is ever read.)
_JSON = b"j"
_SSE = b"s"
_LEN = struct.Struct(">I")
_TAKE_BACK_MAX = 10_000  # claims waiting to be taken back (beyond: their lock ends them)
_TAKE_BACK_TRIES = 3  # answered tries before a claim that never landed is let go


def new_owner() -> str:
    """A claimer's token: only the claim made with it can be taken back with it."""
    return uuid.uuid4().hex


def fingerprint(body: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def state_key(key_id: str, api_format: str, idempotency_key: str) -> str:
    """Where a key's claim lives: the caller's key id, and the client's value only hashed."""
    digest = hashlib.sha256(idempotency_key.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"idem:{key_id}:{api_format}:{digest}"


def answered_in_full(call: Call) -> bool:
    """Whether a served call is a complete success, the only kind worth replaying.

    A stream's end is judged after it ran: an error the relay passed on (an upstream error
    event) leaves no flag of its own, but the call ended with an error type.
    """
    f = call.flags
    if call.error_type is not None or call.status not in (0, 200):
        return False
    if f.get("degraded") or "stream_error" in f or "client_disconnected" in f:
        return False
    return "stream_cut" not in f or bool(f.get("continued"))


def kept_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The response headers a replay carries: all but those of one delivery."""
    return {k: v for k, v in headers.items() if k.lower() not in PER_DELIVERY_HEADERS}


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A completed success kept for replays: its bytes, whether it streamed, its headers."""

    body: bytes
    stream: bool
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def request_id(self) -> str | None:
        """The original call's id (its record is the one that holds the answer)."""
        return self.headers.get("x-request-id")

    def encode(self) -> bytes:
        hs = orjson.dumps(self.headers)
        return (_SSE if self.stream else _JSON) + _LEN.pack(len(hs)) + hs + self.body

    @classmethod
    def decode(cls, raw: bytes) -> StoredResponse:
        kind, rest = raw[:1], raw[1:]
        (n,) = _LEN.unpack_from(rest)
        start = _LEN.size
        headers = orjson.loads(rest[start : start + n])
        return cls(rest[start + n :], kind == _SSE, {str(k): str(v) for k, v in headers.items()})


class Idempotency:
    """Claims, waits for, stores and replays results for idempotent requests."""

    def __init__(
        self, state: CounterStore, *, ttl: float, wait: float, retry_seconds: float = 0.25
    ) -> None:
        self._state = state
        self._ttl = ttl
        self._wait = wait
        self._retry = retry_seconds
        # state key -> (owner, answered tries): claims of ours the store may hold unknown to us
        self._take_back: dict[str, tuple[str, int]] = {}
        self._sweeper: asyncio.Task[None] | None = None

    async def claim(
        self, key: str, fp: str, *, stream: bool, lock_seconds: float, owner: str = ""
    ) -> StoredResponse | None:
        """None: run the request (we own it). Otherwise the stored success to replay."""
        end = time.monotonic() + self._wait
        while True:
            try:
                b = await self._state.idem_begin(key, fp, self._ttl, lock_seconds, owner)
            except StateUnavailable:
                self._take_back_later(key, owner)  # it may still run when the store answers
                raise
            if b.outcome is IdemOutcome.NEW:
                return None
            if b.outcome is IdemOutcome.MISMATCH:
                raise UnprocessableRequest(
                    "this Idempotency-Key was already used with a different request body"
                )
            if b.outcome is IdemOutcome.DONE and b.response is not None:
                stored = StoredResponse.decode(b.response)
                if stored.stream != stream:
                    raise UnprocessableRequest(
                        "this Idempotency-Key was used with stream="
                        f"{str(stored.stream).lower()}; retry with the same setting"
                    )
                return stored
            if time.monotonic() >= end:
                raise Conflict("a request with this Idempotency-Key is still in progress")
            await asyncio.sleep(min(0.05, max(0.0, end - time.monotonic())))

    async def complete(self, key: str, fp: str, response: StoredResponse) -> None:
        """Keep a served answer for replays. If the store cannot take it, the answer still
        goes out; the claim stays until its lock ends (the request ran: a duplicate waiting
        now must not run it again, as it would if the claim were given back)."""
        try:
            await self._state.idem_complete(key, fp, response.encode(), self._ttl)
        except StateUnavailable:
            log.warning("could not keep an idempotent answer (counter store unreachable)")

    async def abandon(self, key: str, owner: str | None = None) -> None:
        """Give the key back so a retry runs (later, if the store cannot take it now)."""
        try:
            await self._state.idem_abandon(key, owner)
        except StateUnavailable:
            log.warning("could not give an idempotency key back now; retrying in background")
            self._take_back_later(key, owner or "")

    def _take_back_later(self, key: str, owner: str) -> None:
        if not owner:
            return  # without its token a claim could be a later caller's: never dropped blind
        if key not in self._take_back and len(self._take_back) >= _TAKE_BACK_MAX:
            del self._take_back[next(iter(self._take_back))]
        self._take_back[key] = (owner, 0)
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        """Take back our unconfirmed claims once the store answers (by token: a claim that
        landed late is ours to drop; one made since by a retry is not)."""
        while self._take_back:
            await asyncio.sleep(self._retry)
            for key, (owner, tries) in list(self._take_back.items()):
                try:
                    dropped = await self._state.idem_abandon(key, owner)
                except StateUnavailable:
                    break  # still down: all wait for the next round
                if self._take_back.get(key, ("", 0))[0] != owner:
                    continue  # re-queued meanwhile by another claim of ours
                if dropped or tries + 1 >= _TAKE_BACK_TRIES:
                    del self._take_back[key]
                else:  # not there (yet): a stalled script may land just after the store resumed
                    self._take_back[key] = (owner, tries + 1)

    async def aclose(self) -> None:
        """Stop taking back claims (their locks end them)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    def wrap_stream(
        self,
        key: str,
        fp: str,
        stream: AsyncIterator[bytes],
        headers: Mapping[str, str],
        succeeded: Callable[[], bool],
        owner: str = "",
    ) -> AsyncIterator[bytes]:
        """Pass the stream through, keeping a copy to store only if it ended cleanly."""

        async def gen() -> AsyncIterator[bytes]:
            kept: list[bytes] = []
            ok = False
            try:
                async for chunk in stream:
                    kept.append(chunk)
                    yield chunk
                ok = succeeded()
            finally:
                aclose: Callable[[], Awaitable[None]] | None = getattr(stream, "aclose", None)
                if aclose is not None:
                    await aclose()
                if ok:
                    kept_stream = StoredResponse(b"".join(kept), True, kept_headers(headers))
                    await self.complete(key, fp, kept_stream)
                else:
                    await self.abandon(key, owner or None)

        return gen()


def replay_call(
    stored: StoredResponse,
    *,
    fmt: str | Dialect,
    body: dict[str, Any],
    principal: Principal,
    feature: str | None,
    traceparent: str | None,
    client_request_id: str | None,
) -> Call:
    """The call a replay is: its own id and span, marked ``replay_of`` the original.

    It goes through the kill switch and the after-hooks (record, metrics, trace) like any
    call, so a replay is seen, and never served where the switch is on; it never reaches a
    budget or an upstream, since nothing is sent.
    """
    trace_id, parent, trace_flags = parse_traceparent(traceparent)
    call = Call(
        request_id="req_" + uuid.uuid4().hex,
        client_request_id=client_request_id,
        trace_id=trace_id,
        span_id=new_id(8),
        parent_span_id=parent,
        trace_flags=trace_flags,
        client_format=dialect_for(fmt).format,
        principal=principal,
        body=body,
        requested_model=str(body.get("model", "")),
        stream=stored.stream,
        user_id=principal.user,
        feature=feature,
    )
    call.deployment = stored.headers.get("x-bastion-deployment")
    return call


def replay_headers(stored: StoredResponse, call: Call) -> dict[str, str]:
    """The original's headers, marked as a replay, with this delivery's trace and client id."""
    hs = {
        **stored.headers,
        REPLAY_HEADER: "true",
        "traceparent": format_traceparent(call.trace_id, call.span_id, call.trace_flags),
    }
    if call.client_request_id is not None:
        hs["x-client-request-id"] = call.client_request_id
    return hs


async def replay_stream(data: bytes) -> AsyncIterator[bytes]:
    yield data

"""Idempotency keys: a request carrying ``Idempotency-Key`` runs at most once per principal.

A retry gets the stored response (as a stream again if it was streamed); a
concurrent duplicate waits for the first, then gets its result (or 409 if the
wait runs out); the same key with a different body gets 422. The claim lives in
the counter store, so this holds across replicas.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson

from ..errors import Conflict, UnprocessableRequest
from ..state import CounterStore, IdemOutcome

REPLAY_HEADER = "x-bastion-idempotent-replay"
_JSON = b"J"
_SSE = b"S"


def fingerprint(body: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


class Idempotency:
    """Claims, waits for, stores and replays results for idempotent requests."""

    def __init__(self, state: CounterStore, *, ttl: float, wait: float) -> None:
        self._state = state
        self._ttl = ttl
        self._wait = wait

    async def claim(
        self, key: str, fp: str, *, stream: bool, lock_seconds: float
    ) -> tuple[int, bytes, bool] | None:
        """None: run the request (we own it). Otherwise (status, stored bytes, is_stream) to replay."""
        end = time.monotonic() + self._wait
        while True:
            b = await self._state.idem_begin(key, fp, self._ttl, lock_seconds)
            if b.outcome is IdemOutcome.NEW:
                return None
            if b.outcome is IdemOutcome.MISMATCH:
                raise UnprocessableRequest(
                    "this Idempotency-Key was already used with a different request body"
                )
            if b.outcome is IdemOutcome.DONE and b.response is not None:
                kind, data = b.response[:1], b.response[1:]
                if (kind == _SSE) != stream:
                    raise UnprocessableRequest(
                        "this Idempotency-Key was used with stream="
                        f"{str(kind == _SSE).lower()}; retry with the same setting"
                    )
                return 200, data, kind == _SSE
            if time.monotonic() >= end:
                raise Conflict("a request with this Idempotency-Key is still in progress")
            await asyncio.sleep(min(0.05, max(0.0, end - time.monotonic())))

    async def complete(self, key: str, fp: str, body: bytes, *, stream: bool) -> None:
        await self._state.idem_complete(key, fp, (_SSE if stream else _JSON) + body, self._ttl)

    async def abandon(self, key: str) -> None:
        await self._state.idem_abandon(key)

    def wrap_stream(
        self,
        key: str,
        fp: str,
        stream: AsyncIterator[bytes],
        succeeded: Callable[[], bool],
    ) -> AsyncIterator[bytes]:
        """Pass the stream through, keeping a copy to store once it has ended well."""

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
                    await self.complete(key, fp, b"".join(kept), stream=True)
                else:
                    await self.abandon(key)

        return gen()


async def replay_stream(data: bytes) -> AsyncIterator[bytes]:
    yield data

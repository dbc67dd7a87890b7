"""A timeout that costs nothing when the work it bounds never waits (issue 16).

``async with asyncio.timeout(t)`` arms a loop timer and cancels it on every use (under uvloop a
timer handle and a libuv timer each time), yet most of the waits it bounds on the hot path do
not wait at all: a request body that came with its headers, a unary answer the server writes
into an unpaused transport, a response body already in the client's buffer, the last bytes of
a finished stream. ``within`` runs the work's first step at once, as ``await`` would; only if
the work then has to wait is the rest of it awaited under ``asyncio.timeout(timeout)``, in the
same task (so scopes the work opened, and ``current_task()``, see the same task throughout).

What the caller sees is what ``async with asyncio.timeout(timeout): return await work`` gives:
the work's value or its own error, and ``TimeoutError`` when the work is still waiting once the
timeout has run out since the call (the clock starts before the first step; the first step
never waits, so it can never be the part that overruns). A timeout that is already due still
lets work that need not wait finish, as ``asyncio.timeout(0)`` does.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Awaitable, Coroutine, Generator
from typing import Any, TypeVar

__all__ = ["within"]

T = TypeVar("T")


@types.coroutine
def _resume(coro: Coroutine[Any, Any, T], waiting: Any) -> Generator[Any, Any, T]:
    """Drive ``coro`` on from where its first step stopped (it yielded ``waiting`` to the task),
    exactly as ``yield from`` would: what the task sends or throws goes to ``coro``."""
    while True:
        try:
            sent = yield waiting
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # a cancellation (the timeout's, or anyone's) reaches it
            try:
                waiting = coro.throw(exc)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
        else:
            try:
                waiting = coro.send(sent)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]


async def within(work: Awaitable[T], timeout: float | None) -> T:
    """``await work`` bounded by ``timeout`` seconds (None: unbounded), the timer armed only
    if ``work`` has to wait. Raises ``TimeoutError`` as ``asyncio.timeout`` does. An awaitable
    that is not a coroutine (a future, say) is awaited under the timeout as it is."""
    loop = asyncio.get_running_loop()
    due = None if timeout is None else loop.time() + timeout
    if not isinstance(work, types.CoroutineType):
        async with asyncio.timeout_at(due):
            return await work
    try:
        waiting = work.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    async with asyncio.timeout_at(due):
        return await _resume(work, waiting)

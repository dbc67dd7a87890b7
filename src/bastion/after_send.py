"""Work a call leaves for after its response is out: the client never waits for it.

The server gives each LLM call an ``AfterSend`` (``Gateway.handle(after=...)``). The gateway
settles the call and journals its record before the response completes, as always (an
answered call is settled, and its record survives a SIGKILL: ``observability/journal.py``),
then defers the observers of its after-phase into it: metrics, traces, the access log,
review and quality sampling, which only read the finished call (``Pipeline.observe``). A
stream's relay defers the clean close of its upstream connection (reading the body's last
bytes, so the connection is kept for the next call). The server runs the deferred work once
the response's last write is done, or the client is gone, in a ``finally``: every job runs
exactly once whatever happened to the response, in the order it was deferred.

Library callers pass no ``AfterSend``: their calls are finished when ``handle`` returns.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from .eager import within

log = logging.getLogger("bastion.after_send")

Job = Callable[[], Awaitable[None]]

# how long a finished stream's upstream may take to end its body before the connection is
# closed instead of kept, and how much of it is read (a [DONE] is followed by a few bytes)
DRAIN_SECONDS = 1.0
DRAIN_MAX_BYTES = 64 * 1024


class AfterSend:
    """The jobs deferred by one call, run by the server after the response."""

    __slots__ = ("_jobs",)

    def __init__(self) -> None:
        self._jobs: list[Job] = []

    def defer(self, job: Job) -> None:
        self._jobs.append(job)

    def __len__(self) -> int:
        return len(self._jobs)

    async def run(self) -> None:
        """Run every deferred job in order; one that fails is logged and the rest still run."""
        jobs = self._jobs
        while jobs:
            job = jobs.pop(0)
            try:
                await job()
            except Exception:
                log.exception("work deferred until after the response failed")


async def drain_and_close(
    chunks: AsyncIterator[bytes], close: Callable[[], Awaitable[None]]
) -> None:
    """Read what is left of a finished upstream body (bounded in time and bytes), then close
    the response: a body read to its end gives its connection back to the pool."""
    try:
        # the end of the body is usually in the buffer already: no timer then (eager.py)
        await within(_drain(chunks), DRAIN_SECONDS)
    except Exception:  # a cut or a timeout: the connection is closed, not kept
        pass
    finally:
        await close()


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > DRAIN_MAX_BYTES:
            break

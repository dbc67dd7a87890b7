"""Retrieval overlaps the rest of prompt preparation, so a call waits for the slower, not the sum."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

__all__ = ["prepare_concurrently"]

T = TypeVar("T")


async def prepare_concurrently(
    retrieval: Awaitable[T], *other_prep: Awaitable[Any]
) -> tuple[T, list[Any]]:
    """Run retrieval and the other steps together; results in order, first failure re-raised.

    On a failure (or cancellation) the steps still running are cancelled, so nothing is left
    working for a call that is already over.
    """
    tasks = [asyncio.ensure_future(retrieval), *(asyncio.ensure_future(p) for p in other_prep)]
    try:
        results = await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    first: T = results[0]
    return first, list(results[1:])

"""The guard protocol and the chain built once from config.

A guard has one job. It may refuse a call before it goes upstream (raise a
``BastionError``), rewrite the request body, and observe the finished call
(settle a budget, queue a record). The chain sorts guards into per-phase lists
at start-up, so a call pays only for the hooks that exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from .call import Call


@runtime_checkable
class RequestGuard(Protocol):
    """Runs before the call is routed; raise to refuse, mutate ``call.body`` to rewrite."""

    name: str

    async def before(self, call: Call) -> None: ...


@runtime_checkable
class CompletionGuard(Protocol):
    """Runs once the call has ended, successfully or not (in reverse order of ``before``)."""

    name: str

    async def after(self, call: Call, error: BaseException | None) -> None: ...


class Pipeline:
    """The guard chain; built once, shared by every call."""

    __slots__ = ("_after", "_before", "guards")

    def __init__(self, guards: Sequence[object]) -> None:
        self.guards = tuple(guards)
        self._before = tuple(g for g in self.guards if isinstance(g, RequestGuard))
        self._after = tuple(g for g in reversed(self.guards) if isinstance(g, CompletionGuard))

    async def before(self, call: Call) -> None:
        for g in self._before:
            await g.before(call)

    async def after(self, call: Call, error: BaseException | None) -> None:
        for g in self._after:
            await g.after(call, error)

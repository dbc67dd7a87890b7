"""The guard protocol and the chain built once from config.

A guard has one job. It may refuse a call before it goes upstream (raise a
``BastionError``), rewrite the request body, and observe the finished call
(settle a budget, queue a record). The chain sorts guards into per-phase lists
at start-up, so a call pays only for the hooks that exist.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from .call import Call
from .errors import BastionError

log = logging.getLogger("bastion.pipeline")


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
            try:
                await g.before(call)
            except BastionError as exc:
                exc.guard = g.name  # which guard refused, for records and metrics
                call.flags["refused_by"] = g.name
                raise

    async def after(self, call: Call, error: BaseException | None) -> None:
        for g in self._after:
            try:
                await g.after(call, error)
            except Exception:  # one observer failing must not stop settling or recording
                log.exception("guard %s failed after the call", g.name)

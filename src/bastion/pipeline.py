"""The guard protocol and the chain built once from config.

A guard has one job, in typed phases with no-op defaults (a guard implements only those it
needs, and a misspelt hook fails the protocol check instead of being silently dropped):

- *admit* (``before``): refuse the call (raise a ``BastionError``) or rewrite its body;
- *attempt* (``reserve_attempt``): reserve each upstream request before it is sent — the first
  try, a retry, a failover, a hedge, a continuation, a repair — at its own model's worst case;
- *settle* (``after``): price, settle and record the finished call, successful or not.

Output filters (watching and rewriting the model's text) are the fourth phase; they hang on
the call because they keep per-stream state. The chain sorts guards into per-phase lists at
start-up, so a call pays only for the hooks that exist; ``PHASE_ORDER`` is the declared order.

Settle guards that only read the finished call (``after_send``: metrics, traces, the access
log, review and quality sampling) may run once the response is out (``after_send.py``): the
pipeline keeps the longest such tail of the settle phase apart (``observe``). Everything before
it, settling and the record's journal write included, still completes before the response
does, so an answered call is always settled and journaled.

Guards that need the counter store (``plans_state``) plan their operations on the call; the
pipeline sends them once per phase (``cost/state_batch.py``): after the attempt guards, and
once the settling guards are done, so a call costs one store round trip to be admitted and
one to settle.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from .call import Attempt, Call
from .cost.state_batch import drop_attempt_ops, flush_admit, flush_finish
from .errors import BastionError
from .frozen import freeze

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


@runtime_checkable
class AttemptGuard(Protocol):
    """Runs before each upstream request of a call; raise to stop that request (and the call)."""

    name: str

    async def reserve_attempt(
        self, call: Call, attempt: Attempt, body: dict[str, object], body_bytes: int
    ) -> None: ...


@runtime_checkable
class AttemptReleaser(Protocol):
    """Gives back an attempt's holds at once when it is known to have cost nothing (the
    provider answered with an error, or the connection never opened), so a failover near a
    cap is not refused by the failed attempt's hold."""

    name: str

    async def release_attempt(self, call: Call, attempt: Attempt) -> None: ...


PHASE_ORDER = ("admit", "attempt", "filter", "settle")

_HOOKS = frozenset({"before", "after", "reserve_attempt", "release_attempt"})


class Pipeline:
    """The guard chain; built once, shared by every call."""

    __slots__ = ("_after", "_attempt", "_before", "_observe", "_release", "guards")

    def __init__(self, guards: Sequence[object]) -> None:
        self.guards = tuple(guards)
        for g in self.guards:
            hooks = {n for n in _HOOKS if callable(getattr(g, n, None))}
            if not hooks:
                raise TypeError(f"guard {g!r} implements no phase ({', '.join(sorted(_HOOKS))})")
        self._before = tuple(g for g in self.guards if isinstance(g, RequestGuard))
        self._attempt = tuple(g for g in self.guards if isinstance(g, AttemptGuard))
        self._release = tuple(g for g in self.guards if isinstance(g, AttemptReleaser))
        after = [g for g in reversed(self.guards) if isinstance(g, CompletionGuard)]
        tail = len(after)
        while tail > 0 and getattr(after[tail - 1], "after_send", False) is True:
            tail -= 1
        self._after = tuple(after[:tail])
        self._observe = tuple(after[tail:])  # may run after the response (``after_send``)

    @property
    def order(self) -> dict[str, tuple[str, ...]]:
        """Guard names per phase, in the order they run: the declared order, as data."""
        return {
            "admit": tuple(g.name for g in self._before),
            "attempt": tuple(g.name for g in self._attempt),
            "settle": tuple(g.name for g in self._after + self._observe),
        }

    async def reserve_attempt(
        self, call: Call, attempt: Attempt, body: dict[str, object], body_bytes: int
    ) -> None:
        try:
            for g in self._attempt:
                await g.reserve_attempt(call, attempt, body, body_bytes)
            await flush_admit(call)  # what the guards planned, in one atomic batch
        except BaseException:
            drop_attempt_ops(call)  # a refused attempt's holds are not sent with the next one
            raise

    async def release_attempt(self, call: Call, attempt: Attempt) -> None:
        for g in self._release:
            try:
                await g.release_attempt(call, attempt)
            except Exception:  # the hold then ends with the call, as it would have anyway
                log.exception("guard %s could not release an attempt", g.name)

    async def before(self, call: Call) -> None:
        """Admit: every admission guard in order, then the request is frozen for the attempts."""
        for g in self._before:
            try:
                await g.before(call)
            except BastionError as exc:
                exc.guard = g.name  # which guard refused, for records and metrics
                call.flags["refused_by"] = g.name
                raise
        call.body = freeze(call.body)

    async def after(self, call: Call, error: BaseException | None) -> None:
        """Settle: every settle guard, the observers included (for callers that finish a call
        before they answer it)."""
        await self.settle(call, error)
        await self.observe(call, error)

    async def settle(self, call: Call, error: BaseException | None) -> None:
        """The settle phase up to its observers: what must be done before a response completes."""
        settling = False  # a guard that plans store operations has run since the last send
        for g in self._after:
            plans = getattr(g, "plans_state", False)
            if settling and not plans:
                await self._flush(call)  # the settling guards are done: one batch for them
            settling = plans
            try:
                await g.after(call, error)
            except Exception:  # one observer failing must not stop settling or recording
                log.exception("guard %s failed after the call", g.name)
        await self._flush(call)

    async def observe(self, call: Call, error: BaseException | None) -> None:
        """The observers of the settle phase, which only read the finished call."""
        for g in self._observe:
            try:
                await g.after(call, error)
            except Exception:  # one observer failing must not stop the others
                log.exception("guard %s failed after the call", g.name)

    @staticmethod
    async def _flush(call: Call) -> None:
        try:
            await flush_finish(call)
        except Exception:
            log.exception("could not send the call's settle batch")

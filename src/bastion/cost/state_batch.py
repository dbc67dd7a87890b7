"""One call's counter-store work per phase, sent as one batch (one Redis round trip per phase).

Guards do not call the store one by one: they add an operation to the call's plan with two
callbacks, ``on_answer`` (its answer; raises the guard's own refusal) and ``on_down`` (the
store is unreachable; raises to fail closed, or marks the call to fail open). The pipeline
sends the plan at the end of a phase (``flush_admit`` after the attempt guards, and
``flush_finish`` once the settling guards are done), so:

- admission: the rate limits (deferred from the admit phase), the conversation's token cap
  and the spend caps of the first attempt go in one ``CounterStore.admit``, all or nothing:
  a refusal by any of them holds or takes nothing, and names the refusing guard's error;
- settle: the budget's settles and releases, the tokens-per-minute charge and the
  conversation's give-back go in one ``CounterStore.finish``.

Rate limits are thus counted when the call's first upstream request is about to be sent,
after every other admission check, instead of in the admit phase itself. A call that never
reaches an upstream request (every breaker open) still has its rate limits counted, at the
settle (refusals then change nothing: the call has already ended).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..call import Call
from ..errors import BastionError, StateUnavailable
from ..state import BreakerDecision, BreakerPolicy, CounterStore
from ..state.plan import AdmitOp, AllowBreaker, FinishOp, RecordBreaker

__all__ = [
    "BreakerDenied",
    "CallPlan",
    "Planned",
    "drop_attempt_ops",
    "flush_admit",
    "flush_finish",
    "plan_breaker_allow",
    "plan_breaker_record",
    "plan_of",
    "unplan",
]


class BreakerDenied(Exception):
    """The deployment's breaker, checked in the attempt's batch, is open: nothing was held,
    and the engine goes to the next deployment (not an error of the call)."""


def _ignore_down(exc: StateUnavailable) -> None:
    return None


@dataclass(slots=True)
class Planned:
    """One operation and what its guard does with the answer, or with an outage."""

    op: AdmitOp | FinishOp
    on_answer: Callable[[Any], None]
    on_down: Callable[[StateUnavailable], None] = _ignore_down
    call_level: bool = False  # the call's, not one attempt's (rate limits): sent only once
    requeue: bool = False  # when this one refuses, call-level operations wait for the next try


@dataclass(slots=True)
class CallPlan:
    """The operations a call's guards have planned and the pipeline has not sent yet."""

    state: CounterStore
    admit: list[Planned] = field(default_factory=list)
    finish: list[Planned] = field(default_factory=list)


def plan_of(call: Call, state: CounterStore) -> CallPlan:
    """The call's plan (made on first use); all of a gateway's guards share one store."""
    plan: CallPlan | None = call.state_plan
    if plan is None:
        plan = call.state_plan = CallPlan(state)
    return plan


async def _admit(plan: CallPlan, items: list[Planned]) -> None:
    try:
        res = await plan.state.admit([p.op for p in items])  # type: ignore[misc]
    except StateUnavailable as exc:
        for p in items:
            p.on_down(exc)  # the first guard that fails closed raises
        return
    if res.refused is not None:
        refusing = items[res.refused]
        if refusing.requeue:  # nothing was taken: the next deployment's attempt sends them
            plan.admit[:0] = [p for p in items if p.call_level]
        refusing.on_answer(res.results[res.refused])  # raises the refusal
        raise AssertionError(f"{items[res.refused].op!r} was refused but raised nothing")
    for p, answer in zip(items, res.results, strict=True):
        p.on_answer(answer)


async def flush_admit(call: Call) -> None:
    """Send the planned admission operations in one atomic batch (nothing if none)."""
    plan: CallPlan | None = call.state_plan
    if plan is None or not plan.admit:
        return
    items = plan.admit[:]
    plan.admit.clear()  # taken now: a hedged twin sharing the plan does not send them again
    await _admit(plan, items)


async def flush_finish(call: Call) -> None:
    """Send the planned settle operations in one batch; admissions never sent are counted."""
    plan: CallPlan | None = call.state_plan
    if plan is None:
        return
    drop_attempt_ops(call)  # an attempt's holds never sent are not taken now
    if plan.admit:  # the call ended before any upstream request: count its limits anyway
        with contextlib.suppress(BastionError, StateUnavailable):
            await flush_admit(call)
    items, plan.finish = plan.finish, []
    if not items:
        return
    try:
        answers = await plan.state.finish([p.op for p in items])  # type: ignore[misc]
    except StateUnavailable as exc:
        for p in items:
            p.on_down(exc)
        return
    for p, answer in zip(items, answers, strict=True):
        p.on_answer(answer)


def drop_attempt_ops(call: Call) -> None:
    """Forget what an attempt planned but did not send (a guard refused it before the batch):
    only the call's own operations (rate limits) wait for the next batch."""
    plan: CallPlan | None = call.state_plan
    if plan is not None:
        plan.admit[:] = [p for p in plan.admit if p.call_level]


def _breaker_answer(decision: BreakerDecision) -> None:
    if not decision.allowed:
        raise BreakerDenied(decision.state.value)


def plan_breaker_allow(call: Call, key: str, policy: BreakerPolicy | None) -> Planned | None:
    """Check a deployment's breaker in its first attempt's batch (None: no breaker, or the
    call has no plan, so the caller asks the store itself). Breakers are advisory: an outage
    lets the call by."""
    plan: CallPlan | None = call.state_plan
    if plan is None or policy is None:
        return None
    planned = Planned(AllowBreaker(key, policy), _breaker_answer, _ignore_down, requeue=True)
    plan.admit.append(planned)
    return planned


def unplan(call: Call, planned: Planned | None) -> None:
    """Drop a planned operation not sent yet (the engine did not try that deployment)."""
    plan: CallPlan | None = call.state_plan
    if planned is not None and plan is not None and planned in plan.admit:
        plan.admit.remove(planned)


def _recorded(answer: object) -> None:
    """The breaker's state after the outcome needs nothing more."""


def plan_breaker_record(call: Call, key: str, ok: bool, policy: BreakerPolicy | None) -> bool:
    """Record an outcome in the call's settle batch; False: no breaker, or no plan to carry it
    (the caller then records it itself)."""
    plan: CallPlan | None = call.state_plan
    if plan is None or policy is None:
        return False
    plan.finish.append(Planned(RecordBreaker(key, ok, policy), _recorded, _ignore_down))
    return True

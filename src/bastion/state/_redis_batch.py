"""Encoding plans for the ``ADMIT`` and ``FINISH`` scripts, and decoding their replies.

``key(kind, name)`` is the store's one key-naming function (``redis_key``), so the keys here
are those the one-operation methods use, and on a Cluster they share the store's hash tag.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from bastion.state._breaker import BUCKETS, retention
from bastion.state.base import (
    BreakerDecision,
    BreakerPolicy,
    BreakerState,
    IncrResult,
    ReserveResult,
    TakeResult,
)
from bastion.state.plan import (
    AdmitAnswer,
    AdmitOp,
    AdmitResult,
    AllowBreaker,
    Charge,
    FinishAnswer,
    FinishOp,
    Incr,
    RecordBreaker,
    Settle,
    Take,
)

__all__ = ["admit_call", "admit_result", "finish_call", "finish_result"]

KeyName = Callable[[str, str], str]


def _ms(seconds: float) -> int:
    """Whole milliseconds, never rounding a positive duration down to 0 (as ``redis._ms``)."""
    return max(1, math.ceil(seconds * 1000))


def _f(x: float) -> str:
    return repr(float(x))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def admit_call(ops: Sequence[AdmitOp], key: KeyName) -> tuple[list[str], list[Any]]:
    keys: list[str] = []
    args: list[Any] = []
    for op in ops:
        if isinstance(op, Take):
            keys.append(key("tb", op.key))
            args += ["T", _f(op.rate_per_second / 1000.0), _f(op.burst), _f(op.cost)]
        elif isinstance(op, Incr):
            keys.append(key("ctr", op.key))
            limit = "" if op.limit is None else _f(op.limit)
            args += ["I", _f(op.amount), limit, _ms(op.ttl_seconds)]
        elif isinstance(op, AllowBreaker):
            keys.append(key("br", op.key))
            args += ["B", _f(op.policy.cooldown_seconds * 1000.0), _ms(retention(op.policy))]
        else:
            keys.append(key("res", op.reservation_id))
            args += ["R", op.reservation_id, _f(op.amount), _ms(op.lease_seconds), len(op.caps)]
            for cap in op.caps:
                keys += [key("cap", cap.key), key("lease", cap.key)]
                args += [_f(cap.limit), _ms(cap.ttl_seconds)]
    return keys, args


def _admit_answer(op: AdmitOp, raw: list[Any]) -> AdmitAnswer:
    ok = int(raw[0]) == 1
    if isinstance(op, Take):
        tokens = float(raw[1])
        if ok:
            return TakeResult(True, 0.0, tokens)
        wait = math.inf if op.cost > op.burst else (op.cost - tokens) / op.rate_per_second
        return TakeResult(False, wait, tokens)
    if isinstance(op, Incr):
        return IncrResult(ok, float(raw[1]))
    if isinstance(op, AllowBreaker):
        state = BreakerState(_text(raw[1]))
        return BreakerDecision(ok, state, bool(int(raw[2])), float(raw[3]) / 1000)
    if ok:
        return ReserveResult(True)
    cap = op.caps[int(raw[1]) - 1]
    return ReserveResult(False, cap.key, cap.limit, float(raw[2]), float(raw[3]))


def admit_result(ops: Sequence[AdmitOp], reply: list[Any]) -> AdmitResult:
    refused = int(reply[0])
    answers = tuple(_admit_answer(op, raw) for op, raw in zip(ops, reply[1], strict=False))
    return AdmitResult(refused - 1 if refused else None, answers)


def _breaker_args(ok: bool, policy: BreakerPolicy) -> list[Any]:
    return [
        "ok" if ok else "fail",
        policy.failure_threshold,
        _f(policy.error_rate),
        _f(policy.window_seconds * 1000.0),
        policy.min_calls,
        _f(policy.cooldown_seconds * 1000.0),
        _ms(retention(policy)),
        BUCKETS,
    ]


def finish_call(ops: Sequence[FinishOp], key: KeyName) -> tuple[list[str], list[Any]]:
    keys: list[str] = []
    args: list[Any] = []
    for op in ops:
        if isinstance(op, Settle):
            keys.append(key("res", op.reservation_id))
            actual = "" if op.actual is None else _f(op.actual)
            args += ["S", op.reservation_id, actual, len(op.caps)]
            for cap in op.caps:
                keys += [key("cap", cap.key), key("lease", cap.key)]
        elif isinstance(op, Charge):
            keys.append(key("tb", op.key))
            args += ["C", _f(op.rate_per_second / 1000.0), _f(op.burst), _f(op.amount)]
        elif isinstance(op, Incr):
            keys.append(key("ctr", op.key))
            args += ["I", _f(op.amount), _ms(op.ttl_seconds)]
        else:
            keys.append(key("br", op.key))
            args += ["K", *_breaker_args(op.ok, op.policy)]
    return keys, args


def finish_result(ops: Sequence[FinishOp], reply: list[Any]) -> tuple[FinishAnswer, ...]:
    answers: list[FinishAnswer] = []
    for op, raw in zip(ops, reply, strict=True):
        if isinstance(op, Settle):
            answers.append(bool(int(raw)))
        elif isinstance(op, RecordBreaker):
            answers.append(BreakerState(_text(raw)))
        else:
            answers.append(float(raw))
    return tuple(answers)

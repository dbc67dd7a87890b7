"""Reliability track: failover (tested), retries with backoff, degradation, circuit breaker, kill switch."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from ..errors import AIUnavailable, BastionError
from ..reliability.killswitch import set_kill
from ..state import BreakerPolicy
from ._base import CheckContext, Item, ItemResult, ask, drill_model, model_alias, set_headers

__all__ = ["RELIABILITY_ITEMS"]

TRACK = "Reliability"


def _fail_all(alias: str, status: int = 503) -> Any:
    def edit(data: dict[str, Any]) -> None:
        for i in range(len(data["models"][alias]["deployments"])):
            set_headers(data, alias, i, {"x-sim-fault": f"status:{status}"})
        retry = data.setdefault("reliability", {}).setdefault("retry", {})
        retry["backoff_base"] = 0.0
        retry["backoff_max"] = 0.0

    return edit


async def failover(ctx: CheckContext, r: ItemResult) -> None:
    cfg = ctx.config
    cross: list[str] = []
    same: list[str] = []
    gated: list[str] = []
    for name, m in cfg.models.items():
        provs = [d.provider for d in m.deployments]
        if len(provs) >= 2:
            (cross if len(set(provs)) >= 2 else same).append(name)
        gated += [
            f"{name} ({d.enabled_env})" for d in m.deployments if d.enabled_env and not d.enabled()
        ]
    if cross:
        r.add("PASS", f"secondary provider for: {', '.join(cross[:5])}")
    elif same:
        r.add("WARN", f"fallback deployments only on the same provider: {', '.join(same[:5])}")
    else:
        r.add(
            "FAIL",
            "no model has a secondary deployment (an outage of one provider takes the feature down)",
        )
    if gated:
        r.add("WARN", f"fallback gated off by env flag here: {', '.join(gated[:4])}")
    model = drill_model(cfg, want_failover=True)
    alias = model_alias(cfg, model) if model else None
    if not ctx.drills or model is None or alias is None or len(cfg.models[alias].deployments) < 2:
        return

    def break_primary(data: dict[str, Any]) -> None:
        set_headers(data, alias, 0, {"x-sim-fault": "status:503"})
        data.setdefault("reliability", {}).setdefault("retry", {})["backoff_base"] = 0.0

    async with ctx.drill(break_primary) as gw:
        try:
            reply, _ = await ask(gw, model)
        except BastionError as exc:
            r.add(
                "FAIL",
                f"drill: with a 503 on the primary of {model} the call failed ({type(exc).__name__})",
            )
            return
    dep = reply.headers.get("x-bastion-deployment", "?")
    if dep.endswith("#0"):
        r.add("FAIL", f"drill: 503 injected on the primary, yet {dep} answered")
    else:
        r.add("PASS", f"drill: 503 injected on the primary of {model}; served by {dep}")


async def retries(ctx: CheckContext, r: ItemResult) -> None:
    rc = ctx.config.reliability.retry
    if rc.attempts_per_deployment < 2:
        r.add("FAIL", "no retries: reliability.retry.attempts_per_deployment is 1")
    elif rc.backoff_base <= 0:
        r.add(
            "WARN",
            f"{rc.attempts_per_deployment} attempts per deployment but no backoff (backoff_base 0)",
        )
    else:
        r.add(
            "PASS",
            f"{rc.attempts_per_deployment} attempts/deployment, exponential backoff from {rc.backoff_base:g} s (max {rc.backoff_max:g} s), Retry-After honoured up to {rc.max_retry_after:g} s",
        )
    model = drill_model(ctx.config)
    alias = model_alias(ctx.config, model) if model else None
    if not ctx.drills or model is None or alias is None or rc.attempts_per_deployment < 2:
        return
    async with ctx.drill(
        lambda d: set_headers(d, alias, 0, {"x-sim-fault": "fail_first:1;status:503"})
    ) as gw:
        reply, _ = await ask(gw, model)
    attempts = reply.call.attempts if reply.call else []
    same = len(attempts) >= 2 and attempts[0].deployment == attempts[1].deployment
    if same and attempts[-1].status == 200:
        gap = (attempts[1].started - attempts[0].ended) * 1000
        r.add(
            "PASS",
            f"drill: a transient 503 was retried on the same deployment after {gap:.0f} ms and succeeded",
        )
    else:
        r.add(
            "FAIL",
            f"drill: a transient 503 was not retried ({[(a.deployment, a.status) for a in attempts]})",
        )


async def degradation(ctx: CheckContext, r: ItemResult) -> None:
    modes = {n: f.degraded.mode for n, f in ctx.config.features.items()}
    if modes.get("default") == "message":
        r.add("PASS", f"degraded answers: {modes}")
    else:
        r.add(
            "WARN",
            f"features answering 503 ai_unavailable when AI is down (the app must show a manual path): {[n for n, m in modes.items() if m == 'error']}",
        )
    model = drill_model(ctx.config)
    alias = model_alias(ctx.config, model) if model else None
    if not ctx.drills or model is None or alias is None:
        return
    started = time.monotonic()
    async with ctx.drill(_fail_all(alias)) as gw:
        try:
            reply, _ = await ask(gw, model)
        except AIUnavailable as exc:
            r.add(
                "PASS",
                f"drill: every deployment failing gave a typed 503 ai_unavailable ({exc.reason}) in {time.monotonic() - started:.2f} s",
            )
            return
        except BastionError as exc:
            r.add(
                "FAIL",
                f"drill: every deployment failing surfaced {type(exc).__name__} instead of a degraded answer",
            )
            return
    if "x-bastion-degraded" in reply.headers:
        r.add(
            "PASS",
            f"drill: every deployment failing gave the degraded message in {time.monotonic() - started:.2f} s",
        )
    else:
        r.add("FAIL", "drill: every deployment failed but a normal answer came back")


async def circuit_breaker(ctx: CheckContext, r: ItemResult) -> None:
    b = ctx.config.reliability.breaker
    if not b.enabled:
        r.add("FAIL", "circuit breaker disabled (reliability.breaker.enabled)")
        return
    r.add(
        "PASS",
        f"opens after {b.failure_threshold} consecutive failures or {b.error_rate:.0%} errors over {b.window_seconds:g} s; cooldown {b.cooldown_seconds:g} s",
    )
    model = drill_model(ctx.config)
    alias = model_alias(ctx.config, model) if model else None
    if not ctx.drills or model is None or alias is None:
        return
    edit = _fail_all(alias)
    calls = (b.failure_threshold or b.min_calls) + 1

    def trip(data: dict[str, Any]) -> None:
        edit(data)
        data["reliability"]["retry"]["attempts_per_deployment"] = 1

    async with ctx.drill(trip) as gw:
        first = gw.router.resolve(model)[0]
        for _ in range(calls):
            with contextlib.suppress(BastionError):
                await ask(gw, model)
        before = gw.simulator.request_count()
        with contextlib.suppress(BastionError):
            await ask(gw, model)
        reached = gw.simulator.request_count() - before
        policy = BreakerPolicy(
            failure_threshold=b.failure_threshold,
            error_rate=b.error_rate,
            window_seconds=b.window_seconds,
            min_calls=b.min_calls,
            cooldown_seconds=b.cooldown_seconds,
        )
        decision = await gw.state.breaker_allow("breaker:" + first.name, policy)
    if not decision.allowed and reached < len(gw.router.resolve(model)):
        r.add(
            "PASS",
            f"drill: after {calls} failing calls the breaker on {first.name} is open; the next call sent {reached} request(s) upstream",
        )
    else:
        r.add(
            "FAIL", f"drill: after {calls} failing calls the breaker on {first.name} did not open"
        )


async def kill_switch(ctx: CheckContext, r: ItemResult) -> None:
    poll = ctx.config.reliability.kill_switch_poll_seconds
    r.add(
        "PASS",
        f"kill switch (global / feature / key) re-read every {poll:g} s on each replica: `bastion kill on`",
    )
    model = drill_model(ctx.config)
    if not ctx.drills or model is None:
        return
    async with ctx.drill() as gw:
        await ask(gw, model)
        await set_kill(gw.state, True, who="bastion check")
        gw.kill_switch.invalidate()
        t0 = time.monotonic()
        off: str
        try:
            reply, _ = await ask(gw, model)
            off = "degraded message" if "x-bastion-degraded" in reply.headers else "a normal answer"
        except AIUnavailable as exc:
            off = f"503 ai_unavailable ({exc.reason})"
        took = (time.monotonic() - t0) * 1000
        await set_kill(gw.state, False, who="bastion check")
        gw.kill_switch.invalidate()
        reply, _ = await ask(gw, model)
    if off == "a normal answer":
        r.add("FAIL", "drill: with the kill switch on, the call was still answered by the model")
    else:
        r.add("PASS", f"drill: switch on -> {off} in {took:.0f} ms; switch off -> answered again")


RELIABILITY_ITEMS = (
    Item(TRACK, "Secondary provider failover (tested)", failover),
    Item(TRACK, "Retries with backoff", retries),
    Item(TRACK, "Graceful degradation when AI is down", degradation),
    Item(TRACK, "Circuit breaker on upstream", circuit_breaker),
    Item(TRACK, "Kill switch toggle exists", kill_switch),
)

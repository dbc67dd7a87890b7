"""Reliability track: readiness, failover (tested), retries, degradation, circuit breaker, kill switch."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

from ..errors import AIUnavailable, BastionError
from ..readiness import readiness
from ..reliability.killswitch import set_kill
from ..state import BreakerPolicy
from ..store import RecordStore, open_store
from ._base import (
    CheckContext,
    Item,
    ItemResult,
    ask,
    enabled_deployments,
    feature_aliases,
    feature_model,
    set_headers,
)

__all__ = ["RELIABILITY_ITEMS"]

TRACK = "Reliability"
STORE_PING_TIMEOUT = 3.0


def _fail_all(alias: str, status: int = 503) -> Any:
    def edit(data: dict[str, Any]) -> None:
        for i in range(len(data["models"][alias]["deployments"])):
            set_headers(data, alias, i, {"x-sim-fault": f"status:{status}"})
        retry = data.setdefault("reliability", {}).setdefault("retry", {})
        retry["backoff_base"] = 0.0
        retry["backoff_max"] = 0.0

    return edit


def _store_to_ping(url: str) -> tuple[RecordStore | None, str]:
    """The configured record store, unless it is an SQLite file not created yet (serve creates it)."""
    if url.lower().startswith("sqlite:"):
        path = url.partition("://")[2][1:].partition("?")[0]
        if path and path != ":memory:" and not Path(path).exists():
            return None, f"record store {path} does not exist yet (created at the first start)"
    return open_store(url), ""


async def provider_readiness(ctx: CheckContext, r: ItemResult) -> None:
    cfg = ctx.config
    for name, p in cfg.providers.items():
        env = p.api_key_env or p.token_env  # token_env: an Azure OpenAI Entra token
        if p.kind in ("anthropic", "openai", "gemini") and not env:
            r.app("FAIL", f"provider {name}: no api_key_env names its key")
        elif env and not p.api_key():
            state = "unset" if p.kind != "openai-compatible" else "unset (optional for this kind)"
            r.app(
                "FAIL" if p.kind != "openai-compatible" else "INFO",
                f"provider {name}: ${env} is {state}",
            )
        elif p.kind == "bedrock":
            from ..providers.bedrock import credential_source

            source = credential_source(p.resolved_base_url())
            found = f"AWS credentials from {source}" if source else "no AWS credentials found"
            r.app("PASS" if source else "FAIL", f"provider {name}: {found}")
        elif p.kind != "sim":
            r.app("PASS", f"provider {name}: ${env or '(no key needed)'} is set")
    store, note = _store_to_ping(cfg.store.url)
    if note:
        r.add("INFO", note)
    try:
        ready = await asyncio.wait_for(
            readiness(store, {n: (p.kind, p.api_key()) for n, p in cfg.providers.items()}),
            STORE_PING_TIMEOUT,
        )
        status, checks = ready.status, ready.checks
    except TimeoutError:
        status, checks = (
            "not_ready",
            {"store": {"ok": False, "error": f"no answer in {STORE_PING_TIMEOUT:g} s"}},
        )
    finally:
        if store is not None:
            await store.close()
    if status == "ready":
        r.app("PASS", "/readyz on this config would answer ready")
    else:
        bad = [n for n, v in checks.get("providers", {}).items() if not v["configured"]]
        why = ([f"providers without a key: {', '.join(bad)}"] if bad else []) + (
            ["the record store is unreachable"]
            if not checks.get("store", {"ok": True})["ok"]
            else []
        )
        r.app(
            "FAIL",
            f"/readyz on this config would answer not_ready ({'; '.join(why)})",
            features=tuple(ctx.features),
        )


async def failover(ctx: CheckContext, r: ItemResult) -> None:
    cfg = ctx.config
    drilled: list[str] = []
    for feat in ctx.features:
        aliases, unrouted = feature_aliases(cfg, feat)
        if unrouted:
            r.app(
                "FAIL",
                f"feature {feat}: model {', '.join(unrouted)} routes to no alias",
                features=(feat,),
            )
        single = [a for a in aliases if len(enabled_deployments(cfg, a)) < 2]
        same = [
            a
            for a in aliases
            if a not in single and len({d.provider for d in enabled_deployments(cfg, a)}) < 2
        ]
        gated = [
            f"{a} ({d.enabled_env})"
            for a in aliases
            for d in cfg.models[a].deployments
            if not d.enabled()
        ]
        if single:
            r.app(
                "FAIL",
                f"feature {feat}: no secondary deployment for {', '.join(single[:5])}",
                features=(feat,),
            )
        elif same:
            r.app(
                "WARN",
                f"feature {feat}: fallback only on the same provider for {', '.join(same[:5])}",
                features=(feat,),
            )
        elif aliases:
            r.app(
                "PASS",
                f"feature {feat}: a second provider behind every model it can reach ({', '.join(aliases[:4])})",
            )
        if gated:
            r.app(
                "WARN",
                f"feature {feat}: fallback gated off by env flag here: {', '.join(gated[:4])}",
                features=(feat,),
            )
        if not ctx.drills:
            continue
        for alias in aliases:
            if alias not in drilled and len(enabled_deployments(cfg, alias)) >= 2:
                drilled.append(alias)
                await _failover_drill(ctx, r, feat, alias)


async def _failover_drill(ctx: CheckContext, r: ItemResult, feat: str, alias: str) -> None:
    def break_primary(data: dict[str, Any]) -> None:
        set_headers(data, alias, 0, {"x-sim-fault": "status:503"})
        data.setdefault("reliability", {}).setdefault("retry", {})["backoff_base"] = 0.0

    async with ctx.drill(break_primary) as gw:
        try:
            reply, _ = await ask(gw, feature_model(ctx.config, feat, alias), feature=feat)
        except BastionError as exc:
            r.app(
                "FAIL",
                f"drill: with a 503 on the primary of {alias} the call failed ({type(exc).__name__})",
                features=(feat,),
            )
            return
    dep = reply.headers.get("x-bastion-deployment", "?")
    if dep.endswith("#0") or "x-bastion-degraded" in reply.headers:
        r.app(
            "FAIL",
            f"drill: 503 injected on the primary of {alias}, yet {dep} answered",
            features=(feat,),
        )
    else:
        r.add("PASS", f"drill: 503 injected on the primary of {alias}; served by {dep}")


async def retries(ctx: CheckContext, r: ItemResult) -> None:
    rc = ctx.config.reliability.retry
    if rc.attempts_per_deployment < 2:
        r.app(
            "FAIL",
            "no retries: reliability.retry.attempts_per_deployment is 1",
            features=tuple(ctx.features),
        )
    elif rc.backoff_base <= 0:
        r.app(
            "WARN",
            f"{rc.attempts_per_deployment} attempts per deployment but no backoff (backoff_base 0)",
        )
    else:
        r.app(
            "PASS",
            f"{rc.attempts_per_deployment} attempts/deployment, backoff from {rc.backoff_base:g} s (max {rc.backoff_max:g} s), Retry-After honoured up to {rc.max_retry_after:g} s",
        )
    aliases, _ = feature_aliases(ctx.config, "default")
    if not ctx.drills or not aliases:
        return
    alias = aliases[0]
    async with ctx.drill(
        lambda d: set_headers(d, alias, 0, {"x-sim-fault": "fail_first:1;status:503"})
    ) as gw:
        try:
            reply, _ = await ask(gw, feature_model(ctx.config, "default", alias))
            attempts = reply.call.attempts if reply.call else []
        except BastionError:
            attempts = []
    same = len(attempts) >= 2 and attempts[0].deployment == attempts[1].deployment
    if same and attempts[-1].status == 200:
        gap = (attempts[1].started - attempts[0].ended) * 1000
        r.add(
            "PASS",
            f"drill: a transient 503 was retried on the same deployment after {gap:.0f} ms and succeeded",
        )
    else:
        r.app(
            "FAIL",
            f"drill: a transient 503 was not retried on {alias} ({[(a.deployment, a.status) for a in attempts]})",
        )


async def degradation(ctx: CheckContext, r: ItemResult) -> None:
    errors = [n for n, f in ctx.config.features.items() if f.degraded.mode != "message"]
    if errors:
        r.app(
            "WARN",
            f"feature(s) {', '.join(errors)} answer 503 ai_unavailable when AI is down (no degraded message)",
            features=tuple(errors),
        )
    else:
        r.app("PASS", "every feature answers with its degraded message when AI is down")
    if not ctx.drills:
        return
    for feat in ctx.features:
        aliases, _ = feature_aliases(ctx.config, feat)
        if not aliases:
            continue
        started = time.monotonic()
        async with ctx.drill(_fail_all(aliases[0])) as gw:
            try:
                reply, _ = await ask(gw, feature_model(ctx.config, feat, aliases[0]), feature=feat)
                got = (
                    "the degraded message"
                    if "x-bastion-degraded" in reply.headers
                    else "a normal answer"
                )
            except AIUnavailable as exc:
                got = f"a typed 503 ai_unavailable ({exc.reason})"
            except BastionError as exc:
                got = type(exc).__name__
        took = time.monotonic() - started
        if got == "the degraded message" or (got.startswith("a typed 503") and feat in errors):
            r.add("PASS", f"drill [{feat}]: every deployment failing gave {got} in {took:.2f} s")
        else:
            r.app("FAIL", f"drill [{feat}]: every deployment failing gave {got}", features=(feat,))


async def circuit_breaker(ctx: CheckContext, r: ItemResult) -> None:
    b = ctx.config.reliability.breaker
    if not b.enabled:
        r.app(
            "FAIL",
            "circuit breaker disabled (reliability.breaker.enabled)",
            features=tuple(ctx.features),
        )
        return
    r.app(
        "PASS",
        f"opens after {b.failure_threshold} consecutive failures or {b.error_rate:.0%} errors over {b.window_seconds:g} s; cooldown {b.cooldown_seconds:g} s",
    )
    aliases, _ = feature_aliases(ctx.config, "default")
    if not ctx.drills or not aliases:
        return
    alias = aliases[0]
    model = feature_model(ctx.config, "default", alias)
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
        n_deps = len(gw.router.resolve(model))
    if not decision.allowed and reached < n_deps:
        r.add(
            "PASS",
            f"drill: after {calls} failing calls the breaker on {first.name} is open; the next call sent {reached} request(s) upstream",
        )
    else:
        r.app(
            "FAIL", f"drill: after {calls} failing calls the breaker on {first.name} did not open"
        )


async def kill_switch(ctx: CheckContext, r: ItemResult) -> None:
    cfg = ctx.config
    poll = cfg.reliability.kill_switch_poll_seconds
    if cfg.state.url.startswith("memory:"):
        r.app(
            "WARN",
            "state.url is memory://: `bastion kill on` (another process) cannot reach this gateway's switch",
            features=tuple(ctx.features),
        )
    else:
        r.app(
            "PASS",
            f"`bastion kill on` reaches every replica through {cfg.state.url.split('://')[0]}; re-read every {poll:g} s",
        )
    aliases, _ = feature_aliases(cfg, "default")
    if not ctx.drills or not aliases:
        return
    model = feature_model(cfg, "default", aliases[0])
    async with ctx.drill() as gw:
        await ask(gw, model)
        await set_kill(gw.state, True, who="bastion check")
        gw.kill_switch.invalidate()
        t0 = time.monotonic()
        try:
            reply, _ = await ask(gw, model)
            off = "degraded message" if "x-bastion-degraded" in reply.headers else "a normal answer"
        except AIUnavailable as exc:
            off = f"503 ai_unavailable ({exc.reason})"
        took = (time.monotonic() - t0) * 1000
        await set_kill(gw.state, False, who="bastion check")
        gw.kill_switch.invalidate()
        await ask(gw, model)
    if off == "a normal answer":
        r.app("FAIL", "drill: with the kill switch on, the call was still answered by the model")
    else:
        r.add("PASS", f"drill: switch on -> {off} in {took:.0f} ms; switch off -> answered again")


RELIABILITY_ITEMS = (
    Item("reliability.readiness", TRACK, "Provider keys set, /readyz ready", provider_readiness),
    Item("reliability.failover", TRACK, "Secondary provider failover (tested)", failover),
    Item("reliability.retries", TRACK, "Retries with backoff", retries),
    Item("reliability.degradation", TRACK, "Graceful degradation when AI is down", degradation),
    Item("reliability.breaker", TRACK, "Circuit breaker on upstream", circuit_breaker),
    Item("reliability.kill_switch", TRACK, "Kill switch toggle exists", kill_switch),
)

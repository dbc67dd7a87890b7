"""Cost track: caps, per-user limits, max_tokens, cheapest-model evidence, prompt caching, alerts."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

from ..cost.alerts import provider_cap_warnings
from ..errors import BudgetExceeded, InvalidRequest, RateLimited
from ._base import CheckContext, Item, ItemResult, ask, drill_model

__all__ = ["COST_ITEMS"]

TRACK = "Cost"
TINY_CAP = 1e-7


async def daily_cap(ctx: CheckContext, r: ItemResult) -> None:
    cfg = ctx.config
    caps = cfg.cost.caps
    feats = {n: f.daily_budget_usd for n, f in cfg.features.items() if f.daily_budget_usd}
    if caps.global_daily_usd is None and not feats:
        r.add(
            "FAIL",
            "no daily $ cap in app code (cost.caps.global_daily_usd or features.*.daily_budget_usd)",
        )
    else:
        parts = [f"global ${caps.global_daily_usd:g}/day"] if caps.global_daily_usd else []
        parts += [f"feature {n} ${v:g}/day" for n, v in feats.items()]
        r.add("PASS", "app cap: " + ", ".join(parts))
    real = [n for n, p in cfg.providers.items() if p.kind != "sim"]
    for w in provider_cap_warnings(cfg, real):
        r.add("WARN", w)
    if real and not any(w for w in provider_cap_warnings(cfg, real)):
        r.add("PASS", f"provider caps declared: {cfg.cost.provider_caps_usd}")
    model = drill_model(cfg)
    if not ctx.drills or model is None:
        return

    def tiny(data: dict[str, Any]) -> None:
        data["cost"].setdefault("caps", {})["global_daily_usd"] = TINY_CAP

    async with ctx.drill(tiny) as gw:
        try:
            reply, _ = await ask(gw, model)
        except BudgetExceeded as exc:
            r.add(
                "PASS",
                f"drill: a call at a ${TINY_CAP:g} cap was refused before reaching the provider ({exc.message[:70]}…)",
            )
            if gw.simulator.request_count():
                r.add("FAIL", "drill: the refused call still reached the provider")
            return
        if reply.headers.get("x-bastion-degraded") == "budget" and not gw.simulator.request_count():
            r.add("PASS", f"drill: a call at a ${TINY_CAP:g} cap got the feature's degraded answer")
            return
    r.add("FAIL", f"drill: a call at a ${TINY_CAP:g} daily cap was NOT refused")


async def per_user_rate_limit(ctx: CheckContext, r: ItemResult) -> None:
    b = ctx.config.cost.rate_limits.per_user
    if not (b.requests_per_minute or b.calls_per_day or b.tokens_per_minute):
        r.add("FAIL", "no per-user rate limit (cost.rate_limits.per_user)")
    else:
        r.add(
            "PASS",
            "per user: "
            + ", ".join(
                f"{k}={v:g}"
                for k, v in (
                    ("requests_per_minute", b.requests_per_minute),
                    ("calls_per_day", b.calls_per_day),
                    ("tokens_per_minute", b.tokens_per_minute),
                )
                if v
            ),
        )
    model = drill_model(ctx.config)
    if not ctx.drills or model is None:
        return

    def two_a_day(data: dict[str, Any]) -> None:
        data["cost"].setdefault("rate_limits", {})["per_user"] = {"calls_per_day": 2}
        data["cost"].setdefault("caps", {})["end_user_caps"] = True

    async with ctx.drill(two_a_day) as gw:
        for _ in range(2):
            await ask(gw, model, user="heavy-user")
        try:
            await ask(gw, model, user="heavy-user")
        except RateLimited:
            await ask(gw, model, user="other-user")
            r.add(
                "PASS",
                "drill: at 2 calls/day one user's 3rd call was refused (429), another user's went through",
            )
            return
    r.add("FAIL", "drill: a user's 3rd call at a 2/day limit was NOT refused")


async def max_tokens(ctx: CheckContext, r: ItemResult) -> None:
    for name, f in ctx.config.features.items():
        r.add(
            "PASS",
            f"feature {name}: default {f.max_tokens_default}, limit {f.max_tokens_limit} ({f.max_tokens_mode})",
        )
    model = drill_model(ctx.config)
    if not ctx.drills or model is None:
        return
    f = ctx.config.feature(None)
    async with ctx.drill() as gw:
        await ask(gw, model, max_tokens=None)
        sent = gw.simulator.requests[-1].body.get("max_tokens")
        if sent != f.max_tokens_default:
            r.add("FAIL", f"drill: a call without max_tokens reached the provider with {sent!r}")
            return
        r.add("PASS", f"drill: a call without max_tokens was sent with the default {sent}")
        try:
            await ask(gw, model, max_tokens=f.max_tokens_limit * 10)
            clamped = gw.simulator.requests[-1].body.get("max_tokens")
            ok = isinstance(clamped, int) and clamped <= f.max_tokens_limit
            r.add(
                "PASS" if ok else "FAIL",
                f"drill: max_tokens {f.max_tokens_limit * 10} reached the provider as {clamped}",
            )
        except InvalidRequest:
            r.add("PASS", f"drill: max_tokens {f.max_tokens_limit * 10} was refused (mode refuse)")


async def cheapest_model(ctx: CheckContext, r: ItemResult) -> None:
    from ..evals.select import evidence_path

    pinned = {n: f.model for n, f in ctx.config.features.items() if f.model}
    if not pinned:
        r.add("WARN", "no feature pins a model chosen by evals (`bastion eval select --apply`)")
        return
    for feature, model in pinned.items():
        if ctx.config_path is None:
            r.add("WARN", f"feature {feature} pins {model}; no config file to find evidence beside")
            continue
        ev = evidence_path(ctx.config_path, feature)
        if not ev.exists():
            r.add(
                "WARN", f"feature {feature} pins {model} without eval evidence ({ev.name} missing)"
            )
            continue
        data = orjson.loads(ev.read_bytes())
        if data.get("choice") != model:
            r.add(
                "WARN", f"feature {feature} pins {model} but {ev.name} chose {data.get('choice')}"
            )
            continue
        n = len(data.get("candidates", []))
        r.add(
            "PASS",
            f"feature {feature}: {model} chosen over {n} candidates by suite {data.get('suite')} ({data.get('at')})",
        )


async def prompt_caching(ctx: CheckContext, r: ItemResult) -> None:
    off = [n for n, f in ctx.config.features.items() if not f.prompt_caching]
    if off:
        r.add("WARN", f"prompt caching off for: {', '.join(off)}")
    else:
        r.add("PASS", "prompt caching on for every feature")
    model = drill_model(ctx.config)
    if not ctx.drills or model is None or ctx.config.feature(None).prompt_caching is False:
        return
    system = "You are a careful support drafter. " * 400  # well above the 1024-token minimum
    async with ctx.drill() as gw:
        usage: dict[str, Any] = {}
        for _ in range(2):
            _, body = await ask(gw, model, system=system)
            usage = orjson.loads(body).get("usage") or {}
    hit = int(usage.get("cache_read_input_tokens") or 0)
    if hit > 0:
        r.add(
            "PASS", f"drill: the 2nd call with the same system prompt read {hit} tokens from cache"
        )
    else:
        r.add("FAIL", f"drill: a repeated ~2.8K-token system prompt was not cached (usage {usage})")


async def spend_alerts(ctx: CheckContext, r: ItemResult) -> None:
    a = ctx.config.cost.alerts
    if not a.webhooks:
        r.add("FAIL", "no spend alert webhook (cost.alerts.webhooks)")
    else:
        basis = f"forecast ${a.forecast_usd:g}" if a.forecast_usd else "the trailing 7-day average"
        r.add(
            "PASS",
            f"{len(a.webhooks)} webhook(s); alert at {a.forecast_multiple:g}x {basis} and {a.cap_percent}% of caps",
        )
    model = drill_model(ctx.config)
    if not ctx.drills or model is None:
        return
    got: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        got.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:

        def wire(data: dict[str, Any]) -> None:
            al = data["cost"]["alerts"]
            al["webhooks"] = [f"http://127.0.0.1:{port}/hook"]
            al["forecast_usd"] = 1e-9
            al["check_interval"] = 3600

        async with ctx.drill(wire) as gw:
            await ask(gw, model)
            await gw.recorder.flush()
            sent = await asyncio.wait_for(gw.alerts.check(), 10)
    finally:
        await runner.cleanup()
    if got and sent:
        r.add(
            "PASS",
            f"drill: spend over a tiny forecast posted {len(got)} alert(s) to a local webhook",
        )
    else:
        r.add("FAIL", "drill: spend over the forecast posted no alert")


COST_ITEMS = (
    Item(TRACK, "Hard daily $ cap (app code + provider)", daily_cap),
    Item(TRACK, "Per-user rate limit", per_user_rate_limit),
    Item(TRACK, "max_tokens on every call", max_tokens),
    Item(TRACK, "Cheapest model that passes evals", cheapest_model),
    Item(TRACK, "Prompt caching on stable prefixes", prompt_caching),
    Item(TRACK, "Spend alerts wired", spend_alerts),
)

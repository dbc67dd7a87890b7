"""Cost track: caps, per-user limits, max_tokens, cheapest-model evidence, prompt caching, alerts."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import orjson

from ..errors import BudgetExceeded, InvalidRequest, RateLimited
from ._base import (
    CheckContext,
    Item,
    ItemResult,
    ask,
    feature_aliases,
    feature_model,
)

__all__ = ["COST_ITEMS", "WEBHOOK_TIMEOUT", "post_test_alert"]

TRACK = "Cost"
TINY_CAP = 1e-7
WEBHOOK_TIMEOUT = 2.0  # seconds for the test post to each alert webhook
DAYS_PER_MONTH = 30
UNCAPPED_MAX_TOKENS = 32_768  # a limit above this bounds no realistic answer


def _first_model(ctx: CheckContext, feature: str) -> str | None:
    aliases, _ = feature_aliases(ctx.config, feature)
    return feature_model(ctx.config, feature, aliases[0]) if aliases else None


def _providers_in_use(ctx: CheckContext) -> list[str]:
    cfg, seen = ctx.config, []
    for feat in ctx.features:
        for alias in feature_aliases(cfg, feat)[0]:
            for d in cfg.models[alias].deployments:
                if cfg.providers[d.provider].kind != "sim" and d.provider not in seen:
                    seen.append(d.provider)
    return seen


async def daily_cap(ctx: CheckContext, r: ItemResult) -> None:
    cfg = ctx.config
    g = cfg.cost.caps.global_daily_usd
    uncapped = [n for n, f in cfg.features.items() if g is None and f.daily_budget_usd is None]
    if uncapped:
        r.app(
            "FAIL",
            f"no daily $ cap on feature(s) {', '.join(uncapped)} "
            "(cost.caps.global_daily_usd or features.<name>.daily_budget_usd)",
            features=tuple(uncapped),
        )
    else:
        parts = [f"global ${g:g}/day"] if g is not None else []
        parts += [
            f"{n} ${f.daily_budget_usd:g}/day"
            for n, f in cfg.features.items()
            if f.daily_budget_usd
        ]
        r.app("PASS", "every feature is under a daily cap: " + ", ".join(parts))
    _provider_caps(ctx, r)
    if not ctx.drills:
        return

    def shrink(data: dict[str, Any]) -> None:  # the user's caps, each set to almost nothing
        data["cost"]["rate_limits"] = {}
        caps = data["cost"].setdefault("caps", {})
        if "global_daily_usd" in caps:
            caps["global_daily_usd"] = TINY_CAP
        for f in data["features"].values():
            f.pop("max_input_tokens", None)
            f.pop("conversation_max_tokens", None)
            if "daily_budget_usd" in f:
                f["daily_budget_usd"] = TINY_CAP

    for feat in ctx.features:
        model = _first_model(ctx, feat)
        if model is None:
            continue
        async with ctx.drill(shrink, keep_limits=True) as gw:
            try:
                reply, _ = await ask(gw, model, feature=feat)
                refused = reply.headers.get("x-bastion-degraded") == "budget"
            except BudgetExceeded:
                refused = True
            reached = gw.simulator.request_count()
        if refused and not reached:
            r.add(
                "PASS",
                f"drill [{feat}]: with its cap at ${TINY_CAP:g} a call was refused before the provider",
            )
        else:
            r.app(
                "FAIL",
                f"drill [{feat}]: with every configured cap shrunk to ${TINY_CAP:g}, a call still reached the provider",
                features=(feat,),
            )


def _provider_caps(ctx: CheckContext, r: ItemResult) -> None:
    """The console cap of each real provider, per its stated period, against the app's own cap."""
    cfg = ctx.config
    g = cfg.cost.caps.global_daily_usd
    feats = [f.daily_budget_usd for f in cfg.features.values()]
    app_daily = g
    if g is None and all(v is not None for v in feats):
        app_daily = sum(v for v in feats if v is not None)
    for name in _providers_in_use(ctx):
        cap = cfg.cost.provider_caps_usd.get(name)
        period = cfg.cost.provider_caps_period.get(name)
        if cap is None:
            r.app(
                "WARN",
                f"provider {name}: no console spend cap declared (cost.provider_caps_usd.{name})",
            )
        elif period is None:
            r.app(
                "WARN",
                f"provider {name}: console cap ${cap:g} has no period (cost.provider_caps_period.{name}: day|month); cannot compare",
            )
        elif app_daily is None:
            r.app(
                "WARN",
                f"provider {name}: console cap ${cap:g}/{period}, but the app has no overall daily cap to compare",
            )
        else:
            app_cap = app_daily * (DAYS_PER_MONTH if period == "month" else 1)
            if app_cap > cap:
                r.app(
                    "WARN",
                    f"provider {name}: the app may spend ${app_cap:g}/{period} (${app_daily:g}/day) but the console cap is ${cap:g}/{period}: the provider cuts off first",
                )
            else:
                r.app(
                    "PASS",
                    f"provider {name}: console cap ${cap:g}/{period} is above the app's ${app_cap:g}/{period}",
                )


async def per_user_rate_limit(ctx: CheckContext, r: ItemResult) -> None:
    cfg = ctx.config
    b = cfg.cost.rate_limits.per_user
    limits = [
        f"{k}={v:g}"
        for k, v in (
            ("requests_per_minute", b.requests_per_minute),
            ("calls_per_day", b.calls_per_day),
            ("tokens_per_minute", b.tokens_per_minute),
        )
        if v
    ]
    if not limits:
        r.app(
            "FAIL",
            "no per-user rate limit (cost.rate_limits.per_user)",
            features=tuple(ctx.features),
        )
    elif not cfg.cost.caps.end_user_caps:
        r.app(
            "WARN",
            f"per-user limits ({', '.join(limits)}) count each key, not its end users: set cost.caps.end_user_caps",
        )
    else:
        r.app("PASS", "per end user: " + ", ".join(limits))
    model = _first_model(ctx, "default")
    if not ctx.drills or model is None:
        return

    def shrink(data: dict[str, Any]) -> None:
        data["cost"]["caps"] = {"end_user_caps": cfg.cost.caps.end_user_caps}
        # the user's per-user limit (whatever its kind) shrunk to 2 calls a day; no other limit
        had = bool(data["cost"].get("rate_limits", {}).get("per_user"))
        data["cost"]["rate_limits"] = {"per_user": {"calls_per_day": 2}} if had else {}
        for f in data["features"].values():
            for k in ("daily_budget_usd", "max_input_tokens", "conversation_max_tokens"):
                f.pop(k, None)

    async with ctx.drill(shrink, keep_limits=True) as gw:
        for _ in range(2):
            await ask(gw, model, user="heavy-user")
        try:
            await ask(gw, model, user="heavy-user")
        except RateLimited:
            try:
                await ask(gw, model, user="other-user")
            except RateLimited:
                r.app(
                    "WARN",
                    "drill: a user's 3rd call was refused, and so was another user's first (one limit for the whole key)",
                )
                return
            r.add(
                "PASS",
                "drill: with the limit shrunk to 2/day one user's 3rd call was refused (429), another user's went through",
            )
            return
    r.app(
        "FAIL",
        "drill: a user's 3rd call at the app's per-user limit (shrunk to 2/day) was NOT refused",
    )


async def max_tokens(ctx: CheckContext, r: ItemResult) -> None:
    loose = [n for n, f in ctx.config.features.items() if f.max_tokens_limit > UNCAPPED_MAX_TOKENS]
    for name, f in ctx.config.features.items():
        if name not in loose:
            r.app(
                "PASS",
                f"feature {name}: default {f.max_tokens_default}, limit {f.max_tokens_limit} ({f.max_tokens_mode})",
            )
    if loose:
        r.app(
            "WARN",
            f"max_tokens limit above {UNCAPPED_MAX_TOKENS} (effectively uncapped) on {', '.join(loose)}",
            features=tuple(loose),
        )
    if not ctx.drills:
        return
    async with ctx.drill() as gw:
        for feat in ctx.features:
            f = ctx.config.feature(feat)
            model = _first_model(ctx, feat)
            if model is None:
                continue
            await ask(gw, model, max_tokens=None, feature=feat)
            sent = gw.simulator.requests[-1].body.get("max_tokens")
            if sent != f.max_tokens_default:
                r.app(
                    "FAIL",
                    f"drill [{feat}]: a call without max_tokens reached the provider with {sent!r}",
                    features=(feat,),
                )
                continue
            try:
                await ask(gw, model, max_tokens=f.max_tokens_limit * 10, feature=feat)
                clamped = gw.simulator.requests[-1].body.get("max_tokens")
                ok = isinstance(clamped, int) and clamped <= f.max_tokens_limit
                line = f"drill [{feat}]: no max_tokens -> {sent}; {f.max_tokens_limit * 10} -> {clamped}"
                r.add("PASS", line) if ok else r.app("FAIL", line, features=(feat,))
            except InvalidRequest:
                r.add(
                    "PASS",
                    f"drill [{feat}]: no max_tokens -> {sent}; {f.max_tokens_limit * 10} refused",
                )


async def cheapest_model(ctx: CheckContext, r: ItemResult) -> None:
    from ..evals.select import evidence_path

    for feature, f in ctx.config.features.items():
        model = f.model
        if model is None:
            r.app(
                "WARN",
                f"feature {feature} pins no model chosen by evals (`bastion eval select --apply`)",
                features=(feature,),
            )
            continue
        if ctx.config_path is None:
            r.app(
                "WARN",
                f"feature {feature} pins {model}; no config file to find evidence beside",
                features=(feature,),
            )
            continue
        ev = evidence_path(ctx.config_path, feature)
        try:
            data = orjson.loads(ev.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            r.app(
                "WARN",
                f"feature {feature} pins {model} without eval evidence ({ev.name} missing or unreadable)",
                features=(feature,),
            )
            continue
        if data.get("choice") != model:
            r.app(
                "WARN",
                f"feature {feature} pins {model} but {ev.name} chose {data.get('choice')}",
                features=(feature,),
            )
        elif data.get("simulated"):
            r.app(
                "WARN",
                f"feature {feature}: {model} was chosen on simulated evidence ({ev.name})",
                features=(feature,),
            )
        else:
            n = len(data.get("candidates", []))
            r.app(
                "PASS",
                f"feature {feature}: {model} chosen over {n} candidates by suite {data.get('suite')} ({data.get('at')})",
            )


async def prompt_caching(ctx: CheckContext, r: ItemResult) -> None:
    off = [n for n, f in ctx.config.features.items() if not f.prompt_caching]
    if off:
        r.app("WARN", f"prompt caching off for: {', '.join(off)}", features=tuple(off))
    else:
        r.app("PASS", "prompt caching on for every feature")
    if not ctx.drills:
        return
    system = "You are a careful support drafter. " * 400  # well above the 1024-token minimum
    for feat in ctx.features:
        model = _first_model(ctx, feat)
        if model is None:
            continue
        async with ctx.drill() as gw:
            usage: dict[str, Any] = {}
            for _ in range(2):
                _, body = await ask(gw, model, system=system, feature=feat)
                usage = orjson.loads(body).get("usage") or {}
        hit = int(usage.get("cache_read_input_tokens") or 0)
        if hit > 0:
            r.add(
                "PASS",
                f"drill [{feat}]: the 2nd call with the same system prompt read {hit} tokens from cache",
            )
        else:
            r.app(
                "WARN",
                f"drill [{feat}]: a repeated ~2.8K-token system prompt was not cached",
                features=(feat,),
            )


async def post_test_alert(url: str, *, timeout: float = WEBHOOK_TIMEOUT) -> str | None:
    """POST a test alert (the alerts' Slack-compatible shape); None on a 2xx, else why not."""
    payload = {
        "text": "bastion check: test alert (no action needed)",
        "bastion": {"alert": "check"},
    }
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s,
            s.post(url, json=payload) as resp,
        ):
            return None if 200 <= resp.status < 300 else f"answered {resp.status}"
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"[:120] or type(exc).__name__


async def spend_alerts(ctx: CheckContext, r: ItemResult) -> None:
    a = ctx.config.cost.alerts
    if not a.webhooks:
        r.app("FAIL", "no spend alert webhook (cost.alerts.webhooks)", features=tuple(ctx.features))
        return
    basis = f"forecast ${a.forecast_usd:g}" if a.forecast_usd else "the trailing 7-day average"
    r.add(
        "INFO",
        f"app: {len(a.webhooks)} webhook(s); alert at {a.forecast_multiple:g}x {basis} and {a.cap_percent}% of caps",
    )
    for url in a.webhooks:
        shown = url.split("?")[0]
        if not ctx.drills:
            r.app("WARN", f"webhook {shown} unverified (a config-only run posts no test alert)")
            continue
        t0 = time.monotonic()
        problem = await post_test_alert(url)
        if problem is None:
            r.app(
                "PASS",
                f"webhook {shown} took a test alert (2xx in {(time.monotonic() - t0) * 1000:.0f} ms)",
            )
        else:
            r.app("WARN", f"webhook {shown} unverified: the test alert {problem}")


COST_ITEMS = (
    Item("cost.daily_cap", TRACK, "Hard daily $ cap (app code + provider)", daily_cap),
    Item("cost.per_user_limit", TRACK, "Per-user rate limit", per_user_rate_limit),
    Item("cost.max_tokens", TRACK, "max_tokens on every call", max_tokens),
    Item("cost.cheapest_model", TRACK, "Cheapest model that passes evals", cheapest_model),
    Item("cost.prompt_caching", TRACK, "Prompt caching on stable prefixes", prompt_caching),
    Item("cost.spend_alerts", TRACK, "Spend alerts wired", spend_alerts),
)

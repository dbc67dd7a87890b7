"""Latency track: streaming end to end, timeouts with a fallback, TTFT recorded, parallel tool calls."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from ..call import Principal
from ..errors import BastionError
from ..providers.base import Format
from ..providers.sse import SSEDecoder
from ._base import (
    CHECK_PRINCIPAL,
    CheckContext,
    Item,
    ItemResult,
    app_code_uses,
    ask,
    enabled_deployments,
    feature_aliases,
    feature_model,
    set_headers,
)

__all__ = ["LATENCY_ITEMS"]

TRACK = "Latency"
MAX_FIRST_TOKEN_S = 30.0


def _stream_limits(ctx: CheckContext, r: ItemResult) -> None:
    cfg = ctx.config
    per_key = cfg.server.max_concurrent_streams_per_key
    pools = {
        d.provider: cfg.providers[d.provider].max_connections
        for feat in ctx.features
        for a in feature_aliases(cfg, feat)[0]
        for d in enabled_deployments(cfg, a)
    }
    if per_key is None:
        r.app(
            "WARN",
            "no per-key stream limit (server.max_concurrent_streams_per_key): one key can hold every provider connection",
        )
        return
    small = sorted(n for n, size in pools.items() if per_key >= size)
    if small:
        r.app(
            "WARN",
            f"{per_key} streams per key can fill the connection pool of {', '.join(small)} (providers.<name>.max_connections)",
        )
    else:
        r.app(
            "PASS",
            f"at most {per_key} open streams per key, below every provider's connection pool",
        )


async def streaming(ctx: CheckContext, r: ItemResult) -> None:
    _stream_limits(ctx, r)
    if ctx.url is None:
        r.add(
            "INFO",
            "the public path (CDN, proxy, load balancer) is not checked here: run `bastion check --url URL`",
        )
    if not ctx.drills:
        return
    for feat in ctx.features:
        aliases, _ = feature_aliases(ctx.config, feat)
        if not aliases:
            continue
        alias, model = aliases[0], feature_model(ctx.config, feat, aliases[0])

        def paced(data: dict[str, Any], alias: str = alias) -> None:
            for i in range(len(data["models"][alias]["deployments"])):
                set_headers(data, alias, i, {"x-sim-chunk-ms": "40", "x-sim-reply-tokens": "8"})

        async with ctx.drill(paced) as gw:
            body = {
                "model": model,
                "max_tokens": 32,
                "stream": True,
                "messages": [{"role": "user", "content": "stream"}],
            }
            headers = {"x-bastion-user": "check-user", "x-bastion-feature": feat}
            reply = await gw.handle(
                Format.ANTHROPIC, orjson.dumps(body), headers, principal=CHECK_PRINCIPAL
            )
            arrivals: list[float] = []
            events: list[str] = []
            if reply.stream is not None:
                t0 = time.monotonic()
                decoder = SSEDecoder()
                async for chunk in reply.stream:
                    for ev in decoder.feed(chunk):
                        arrivals.append(time.monotonic() - t0)
                        events.append(ev.event or "")
        deltas = events.count("content_block_delta")
        spread = (arrivals[-1] - arrivals[0]) * 1000 if arrivals else 0.0
        if deltas >= 2 and "message_stop" in events and spread >= 100:
            r.add(
                "PASS",
                f"drill [{feat}]: in process, {deltas} deltas spread over {spread:.0f} ms, ending in message_stop",
            )
        else:
            r.app(
                "FAIL",
                f"drill [{feat}]: the stream looked buffered or cut in process ({deltas} deltas over {spread:.0f} ms)",
                features=(feat,),
            )


async def timeout_fallback(ctx: CheckContext, r: ItemResult) -> None:
    cfg = ctx.config
    stranded: list[str] = []
    slow: list[str] = []
    for feat in ctx.features:
        aliases, _ = feature_aliases(cfg, feat)
        message = cfg.feature(feat).degraded.mode == "message"
        alone = [a for a in aliases if len(enabled_deployments(cfg, a)) < 2]
        if alone and not message:
            stranded.append(f"{feat} ({', '.join(alone[:3])})")
        slow += [
            f"{a}#{i}"
            for a in aliases
            for i, d in enumerate(cfg.models[a].deployments)
            if d.timeouts.first_token > MAX_FIRST_TOKEN_S and f"{a}#{i}" not in slow
        ]
    if stranded:
        r.app(
            "FAIL",
            f"no fallback when a call times out (single deployment, degraded mode error): {'; '.join(stranded)}",
            features=tuple(s.split(" ")[0] for s in stranded),
        )
    else:
        r.app(
            "PASS",
            "every feature has a second deployment or a degraded message on every model it can reach",
        )
    if slow:
        r.app(
            "WARN",
            f"first-token timeout above {MAX_FIRST_TOKEN_S:g} s on {', '.join(slow[:4])}{'…' if len(slow) > 4 else ''}",
        )
    else:
        r.app(
            "PASS",
            f"every reachable deployment has a first-token timeout of {MAX_FIRST_TOKEN_S:g} s or less",
        )
    if not ctx.drills:
        return
    for feat in ctx.features:
        aliases, _ = feature_aliases(cfg, feat)
        multi = [a for a in aliases if len(enabled_deployments(cfg, a)) >= 2]
        if not multi:
            continue
        await _hang_drill(ctx, r, feat, multi[0])


async def _hang_drill(ctx: CheckContext, r: ItemResult, feat: str, alias: str) -> None:
    model = feature_model(ctx.config, feat, alias)

    def hang_primary(data: dict[str, Any]) -> None:
        set_headers(data, alias, 0, {"x-sim-fault": "silence"})
        data["models"][alias]["deployments"][0]["timeouts"] = {
            "connect": 0.3,
            "first_token": 0.3,
            "idle": 0.3,
            "total": 0.3,
        }
        data.setdefault("reliability", {}).setdefault("retry", {})["attempts_per_deployment"] = 1
        data["features"][feat]["deadline"] = 5.0

    started = time.monotonic()
    async with ctx.drill(hang_primary) as gw:
        try:
            reply, _ = await ask(gw, model, feature=feat)
        except BastionError as exc:
            r.app(
                "FAIL",
                f"drill [{feat}]: a hung primary of {alias} surfaced {type(exc).__name__}",
                features=(feat,),
            )
            return
    served = reply.headers.get("x-bastion-deployment") or reply.headers.get("x-bastion-degraded")
    r.add(
        "PASS",
        f"drill [{feat}]: primary of {alias} hung; cut at 0.3 s and answered by {served} in {time.monotonic() - started:.1f} s",
    )


async def ttft(ctx: CheckContext, r: ItemResult) -> None:
    unbudgeted = [
        n for n, f in ctx.config.features.items() if f.latency_budget.first_token_ms is None
    ]
    if unbudgeted:
        r.app(
            "WARN",
            f"no first-token budget (latency_budget.first_token_ms) on {', '.join(unbudgeted)}: slow TTFT is recorded but never flagged",
            features=tuple(unbudgeted),
        )
    else:
        budgets = {n: f.latency_budget.first_token_ms for n, f in ctx.config.features.items()}
        r.app("PASS", f"TTFT recorded per call and flagged over budget: {budgets} ms")
    if not ctx.drills:
        return
    aliases, _ = feature_aliases(ctx.config, "default")
    if not aliases:
        return
    async with ctx.drill() as gw:
        reply, _ = await ask(gw, feature_model(ctx.config, "default", aliases[0]), stream=True)
        await gw.recorder.flush()
        rows = await gw.store.recent_calls(1)
    rec_ttft = rows[0].ttft_ms if rows else None
    if reply.call is not None and reply.call.ttft_ms is not None and rec_ttft is not None:
        r.add("PASS", f"drill: a streamed call recorded TTFT {rec_ttft:.1f} ms in its call record")
    else:
        r.app("FAIL", "drill: a streamed call's TTFT was not recorded")


async def parallel_tools(ctx: CheckContext, r: ItemResult) -> None:
    users = app_code_uses(ctx.project_dir, r"\bToolExecutor\b|\.run_calls\(")
    if users:
        r.app(
            "PASS",
            f"app code runs a turn's tool calls through ToolExecutor.run_calls: {', '.join(users[:3])}",
        )
    else:
        r.app("WARN", f"no concurrent tool execution found in the app code under {ctx.project_dir}")
        r.offers("ToolExecutor.run_calls runs one turn's tool calls concurrently")
    if not ctx.drills:
        return
    aliases, _ = feature_aliases(ctx.config, "default")
    if aliases:
        tools = [
            {
                "name": n,
                "description": n,
                "input_schema": {"type": "object", "properties": {"id": {"type": "string"}}},
            }
            for n in ("get_order", "get_customer")
        ]
        async with ctx.drill() as gw:
            model = feature_model(ctx.config, "default", aliases[0])
            _, body = await ask(gw, model, text="[[sim:tools=all]] look both up", tools=tools)
        uses = [
            b["name"] for b in orjson.loads(body).get("content", []) if b.get("type") == "tool_use"
        ]
        if len(uses) >= 2:
            r.add(
                "PASS",
                f"drill: {len(uses)} tool calls of one turn relayed intact ({', '.join(uses)})",
            )
        else:
            r.app("FAIL", f"drill: parallel tool calls were not relayed intact ({uses})")
    if not users:
        took = await _executor_drill()
        r.add("INFO", f"drill (library): ToolExecutor ran two 0.2 s tools in {took:.2f} s")


async def _executor_drill() -> float:
    from ..safety.tools import ToolCall, ToolExecutor, ToolRegistry
    from ..state import open_state

    registry = ToolRegistry()

    async def slow(args: dict[str, Any], tctx: Any) -> str:
        await asyncio.sleep(0.2)
        return "ok"

    for n in ("a", "b"):
        registry.register(
            slow,
            name=f"slow_{n}",
            parameters={"type": "object", "properties": {}},
            permission=None,
            description="slow",
        )
    state = open_state("memory://")
    try:
        calls = [ToolCall(id=f"c{n}", name=f"slow_{n}", arguments={}) for n in ("a", "b")]
        t0 = time.monotonic()
        await ToolExecutor(registry, state).run_calls(
            calls, Principal(key_id="check", name="check")
        )
        return time.monotonic() - t0
    finally:
        await state.close()


LATENCY_ITEMS = (
    Item("latency.streaming", TRACK, "Streaming end-to-end", streaming),
    Item("latency.timeout_fallback", TRACK, "Per-call timeout + fallback", timeout_fallback),
    Item("latency.ttft", TRACK, "TTFT measured", ttft),
    Item("latency.parallel_tools", TRACK, "Parallel tool calls", parallel_tools),
)

"""Latency track: streaming end to end, timeouts with a fallback, TTFT recorded, parallel tool calls."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from ..call import Principal
from ..errors import AIUnavailable, BastionError
from ..providers.base import Format
from ..providers.sse import SSEDecoder
from ._base import (
    CHECK_PRINCIPAL,
    NOT_BUILT,
    CheckContext,
    Item,
    ItemResult,
    ask,
    drill_model,
    model_alias,
    optional,
    set_headers,
)

__all__ = ["LATENCY_ITEMS"]

TRACK = "Latency"


async def streaming(ctx: CheckContext, r: ItemResult) -> None:
    r.add("PASS", "the gateway relays provider stream chunks as they arrive (no buffering)")
    model = drill_model(ctx.config)
    alias = model_alias(ctx.config, model) if model else None
    if not ctx.drills or model is None or alias is None:
        return

    def paced(data: dict[str, Any]) -> None:
        for i in range(len(data["models"][alias]["deployments"])):
            set_headers(data, alias, i, {"x-sim-chunk-ms": "40", "x-sim-reply-tokens": "8"})

    async with ctx.drill(paced) as gw:
        body = {
            "model": model,
            "max_tokens": 32,
            "stream": True,
            "messages": [{"role": "user", "content": "stream"}],
        }
        reply = await gw.handle(
            Format.ANTHROPIC,
            orjson.dumps(body),
            {"x-bastion-user": "check-user"},
            principal=CHECK_PRINCIPAL,
        )
        assert reply.stream is not None
        t0 = time.monotonic()
        arrivals: list[float] = []
        decoder = SSEDecoder()
        events: list[str] = []
        async for chunk in reply.stream:
            for ev in decoder.feed(chunk):
                arrivals.append(time.monotonic() - t0)
                events.append(ev.event or "")
    deltas = events.count("content_block_delta")
    spread = (arrivals[-1] - arrivals[0]) * 1000 if arrivals else 0.0
    if deltas >= 2 and "message_stop" in events and spread >= 100:
        r.add(
            "PASS",
            f"drill: {deltas} text deltas arrived spread over {spread:.0f} ms, ending in message_stop",
        )
    else:
        r.add(
            "FAIL",
            f"drill: stream looked buffered or cut ({deltas} deltas over {spread:.0f} ms, events {events[-3:]})",
        )


async def timeout_fallback(ctx: CheckContext, r: ItemResult) -> None:
    cfg = ctx.config
    fallback_models = [a for a, m in cfg.models.items() if len(m.deployments) >= 2]
    canned = [n for n, f in cfg.features.items() if f.degraded.mode == "message"]
    slow = sorted(
        {
            f"{a}#{i}"
            for a, m in cfg.models.items()
            for i, d in enumerate(m.deployments)
            if d.timeouts.first_token > 30
        }
    )
    if fallback_models or canned:
        r.add(
            "PASS",
            f"fallback: {len(fallback_models)} model(s) with a secondary deployment; degraded message for {canned or 'no feature'}",
        )
    else:
        r.add(
            "FAIL",
            "no fallback path: no model has a second deployment and every feature degrades to an error",
        )
    if slow:
        r.add(
            "WARN",
            f"first-token timeout above 30 s on {', '.join(slow[:4])}{'…' if len(slow) > 4 else ''}",
        )
    else:
        r.add("PASS", "every deployment has a first-token timeout of 30 s or less")
    model = drill_model(cfg, want_failover=True)
    alias = model_alias(cfg, model) if model else None
    if not ctx.drills or model is None or alias is None:
        return

    def hang_primary(data: dict[str, Any]) -> None:
        set_headers(data, alias, 0, {"x-sim-fault": "silence"})
        data["models"][alias]["deployments"][0]["timeouts"] = {
            "connect": 0.3,
            "first_token": 0.3,
            "idle": 0.3,
            "total": 0.3,
        }
        data.setdefault("reliability", {}).setdefault("retry", {})["attempts_per_deployment"] = 1
        data["features"]["default"]["deadline"] = 5.0

    started = time.monotonic()
    async with ctx.drill(hang_primary) as gw:
        try:
            reply, _ = await ask(gw, model)
        except AIUnavailable:
            r.add(
                "FAIL",
                f"drill: a hung provider was cut after {time.monotonic() - started:.1f} s but nothing took over",
            )
            return
        except BastionError as exc:
            r.add("FAIL", f"drill: a hung provider surfaced {type(exc).__name__}")
            return
    took = time.monotonic() - started
    served = reply.headers.get("x-bastion-deployment") or reply.headers.get("x-bastion-degraded")
    r.add(
        "PASS",
        f"drill: primary never answered; cut at the 0.3 s timeout and answered by {served} in {took:.1f} s",
    )


async def ttft(ctx: CheckContext, r: ItemResult) -> None:
    model = drill_model(ctx.config)
    if not ctx.drills or model is None:
        r.add("WARN", "TTFT is recorded per call (calls.ttft_ms); no drill run")
        return
    async with ctx.drill() as gw:
        reply, _ = await ask(gw, model, stream=True)
        await gw.recorder.flush()
        rows = await gw.store.recent_calls(1)
    call_ttft = reply.call.ttft_ms if reply.call else None
    rec_ttft = rows[0].ttft_ms if rows else None
    if call_ttft is not None and rec_ttft is not None:
        r.add("PASS", f"drill: a streamed call recorded TTFT {rec_ttft:.1f} ms in its call record")
    else:
        r.add("FAIL", f"drill: TTFT not recorded (call {call_ttft}, record {rec_ttft})")


async def parallel_tools(ctx: CheckContext, r: ItemResult) -> None:
    model = drill_model(ctx.config)
    if ctx.drills and model is not None:
        tools = [
            {
                "name": n,
                "description": n,
                "input_schema": {"type": "object", "properties": {"id": {"type": "string"}}},
            }
            for n in ("get_order", "get_customer")
        ]
        async with ctx.drill() as gw:
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
            r.add("FAIL", f"drill: parallel tool calls were not relayed intact ({uses})")
    tools_mod = optional("bastion.safety.tools")
    if tools_mod is None or not hasattr(tools_mod, "ToolExecutor"):
        r.add("WARN", f"tool executor: {NOT_BUILT}")
        return
    try:
        took = await _executor_drill(tools_mod)
    except Exception as exc:
        r.add(
            "WARN", f"tool executor drill could not run ({type(exc).__name__}: {exc}); {NOT_BUILT}?"
        )
        return
    if took < 0.35:
        r.add(
            "PASS",
            f"drill: the executor ran two 0.2 s tools of one turn in {took:.2f} s (concurrently)",
        )
    else:
        r.add("FAIL", f"drill: two 0.2 s tools took {took:.2f} s (sequential)")


async def _executor_drill(tools_mod: Any) -> float:
    from ..state import open_state

    registry = tools_mod.ToolRegistry()

    async def slow(args: dict[str, Any], tctx: Any) -> str:
        await asyncio.sleep(0.2)
        return "ok"

    schema = {"type": "object", "properties": {}}
    for n in ("a", "b"):
        registry.register(
            slow, name=f"slow_{n}", parameters=schema, permission=None, description="slow"
        )
    state = open_state("memory://")
    try:
        ex = tools_mod.ToolExecutor(registry, state)
        calls = [tools_mod.ToolCall(id=f"c{n}", name=f"slow_{n}", arguments={}) for n in ("a", "b")]
        t0 = time.monotonic()
        results = await ex.run_calls(calls, Principal(key_id="check", name="check"))
        took = time.monotonic() - t0
        if not all(getattr(x, "ok", False) for x in results):
            raise RuntimeError(f"tool results not ok: {results}")
        return took
    finally:
        await state.close()


LATENCY_ITEMS = (
    Item(TRACK, "Streaming end-to-end", streaming),
    Item(TRACK, "Per-call timeout + fallback", timeout_fallback),
    Item(TRACK, "TTFT measured", ttft),
    Item(TRACK, "Parallel tool calls", parallel_tools),
)

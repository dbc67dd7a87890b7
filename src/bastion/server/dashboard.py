"""The cost and quality dashboard: three static files and JSON under ``/admin/api``.

No framework and no build step: the page is plain HTML, CSS and JavaScript (charts are
hand-drawn SVG) read once at start-up and served from memory. The page itself holds no
data; every ``/admin/api`` answer needs a key with the ``admin`` role, sent as ``x-api-key``.
The API only reads, except the review verdicts (``POST /admin/api/review/mark`` and
``/export``); the kill switch is flipped through the existing ``POST /admin/kill``. Every
answer about the past takes the page's range as ``minutes`` and echoes it back as ``window``,
so no tile can claim a range it was not computed over. The stage, spend and review answers
are computed in :mod:`bastion.server.dashboard_api`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import orjson

from ..engine import render_error
from ..errors import BastionError, InvalidRequest, StateUnavailable
from ..gateway import Gateway
from ..providers.base import Format
from ..store import CallRecord
from . import dashboard_api
from .admin import admin_principal, kill_status
from .body import read_body
from .dashboard_api import SCAN_LIMIT, Query, Window, int_param, percentile, window
from .keys_api import key_routes

__all__ = ["Dashboard", "dashboard_routes"]

log = logging.getLogger("bastion.dashboard")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Handler = Callable[[Scope, Receive, Send], Awaitable[None]]
Body = dict[str, Any]

STATIC_DIR = Path(__file__).with_name("dashboard_static")
STATIC_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",  # an ES module importing the two below
    "charts.js": "text/javascript; charset=utf-8",
    "dom.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "keys.js": "text/javascript; charset=utf-8",
}
PAGE_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-cache"),
]
API_HEADERS = [
    (b"content-type", b"application/json"),
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
]
MAX_POST_BYTES = 64 * 1024  # a verdict and its note; nothing larger is ever posted here
PREVIEW_CHARS = 160
TRACE_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def _rates(calls: Sequence[CallRecord]) -> dict[str, Any]:
    """Error, retry, failover and degraded shares of a set of calls (None when there are none)."""
    n = len(calls)

    def share(count: int) -> float | None:
        return count / n if n else None

    errors = sum(1 for c in calls if c.status >= 400)
    return {
        "requests": n,
        "errors": errors,
        "error_rate": share(errors),
        "retry_rate": share(sum(1 for c in calls if c.retried)),
        "failover_rate": share(sum(1 for c in calls if c.failover)),
        "degraded_rate": share(sum(1 for c in calls if c.degraded)),
    }


def _latency(calls: Sequence[CallRecord]) -> dict[str, float | None]:
    lat = [c.latency_ms for c in calls]
    ttft = [c.ttft_ms for c in calls if c.ttft_ms is not None]
    return {
        "latency_p50": percentile(lat, 50),
        "latency_p95": percentile(lat, 95),
        "ttft_p50": percentile(ttft, 50),
        "ttft_p95": percentile(ttft, 95),
    }


def _call_row(c: CallRecord, *, full_text: bool = False) -> dict[str, Any]:
    """One call as the page shows it; text is already scrubbed by the recorder."""
    row: dict[str, Any] = {
        "request_id": c.request_id,
        "trace_id": c.trace_id,
        "ts": c.ts,
        "api_format": c.api_format,
        "feature": c.feature,
        "user_id": c.user_id,
        "key_id": c.key_id,
        "model": c.requested_model,
        "served_model": c.served_model,
        "deployment": c.deployment,
        "prompt_version": c.prompt_version,
        "stream": c.stream,
        "status": c.status,
        "error_type": c.error_type,
        "input_tokens": c.input_tokens,
        "output_tokens": c.output_tokens,
        "cache_read_tokens": c.cache_read_tokens,
        "cache_write_tokens": c.cache_write_tokens,
        "cost_usd": c.cost_usd,
        "latency_ms": c.latency_ms,
        "ttft_ms": c.ttft_ms,
        "attempts": c.attempts,
        "retried": c.retried,
        "failover": c.failover,
        "hedged": c.hedged,
        "degraded": c.degraded,
        "findings": [f.as_dict() for f in c.findings],
    }
    text_in, text_out = c.input_text or "", c.output_text or ""
    if not full_text:
        text_in, text_out = text_in[:PREVIEW_CHARS], text_out[:PREVIEW_CHARS]
    row["input_text"], row["output_text"] = text_in, text_out
    return row


class Dashboard:
    """Serves the page and answers its API from the gateway's record and counter stores."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._static = {name: (STATIC_DIR / name).read_bytes() for name in STATIC_TYPES}

    def routes(self) -> dict[tuple[str, str], Handler]:
        """The entries this module adds to the app's exact-match route table."""
        return {
            ("GET", "/dashboard"): self._file("index.html"),
            ("GET", "/dashboard/index.html"): self._file("index.html"),
            ("GET", "/dashboard/app.js"): self._file("app.js"),
            ("GET", "/dashboard/charts.js"): self._file("charts.js"),
            ("GET", "/dashboard/dom.js"): self._file("dom.js"),
            ("GET", "/dashboard/app.css"): self._file("app.css"),
            ("GET", "/dashboard/keys.js"): self._file("keys.js"),
            **key_routes(self.gateway, self._api, self._post),  # keys_api.py
            ("GET", "/admin/api/summary"): self._api(self.summary),
            ("GET", "/admin/api/latency"): self._api(self.latency),
            ("GET", "/admin/api/calls"): self._api(self.calls),
            ("GET", "/admin/api/trace"): self._api(self.trace),
            ("GET", "/admin/api/breakers"): self._api(self.breakers),
            ("GET", "/admin/api/quality"): self._api(self.quality),
            ("GET", "/admin/api/stages"): self._api(self.stages),
            ("GET", "/admin/api/review"): self._api(self.review),
            ("GET", "/admin/api/spend"): self._api(self.spend),
            ("POST", "/admin/api/review/mark"): self._post(self.review_mark),
            ("POST", "/admin/api/review/export"): self._post(self.review_export),
        }

    # -- transport ----------------------------------------------------------------------------

    def _file(self, name: str) -> Handler:
        body = self._static[name]
        headers = [(b"content-type", STATIC_TYPES[name].encode()), *PAGE_HEADERS]

        async def serve(scope: Scope, receive: Receive, send: Send) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        return serve

    def _api(self, fn: Callable[[Query], Awaitable[dict[str, Any]]]) -> Handler:
        """A GET answer computed from the query string."""

        async def run(scope: Scope, receive: Receive) -> dict[str, Any]:
            return await fn(parse_qs(scope.get("query_string", b"").decode("latin-1")))

        return self._respond(run)

    def _post(self, fn: Callable[[Body], Awaitable[dict[str, Any]]]) -> Handler:
        """A POST answer computed from a small JSON object body."""

        async def run(scope: Scope, receive: Receive) -> dict[str, Any]:
            return await fn(await _json_body(receive))

        return self._respond(run)

    def _respond(self, run: Callable[[Scope, Receive], Awaitable[dict[str, Any]]]) -> Handler:
        """The admin key first, then the answer as JSON, or the error in OpenAI's shape."""

        async def serve(scope: Scope, receive: Receive, send: Send) -> None:
            headers = {
                k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
            }
            status, extra = 200, []
            try:
                await admin_principal(self.gateway, headers)
                body = orjson.dumps(await run(scope, receive))
            except ConnectionAbortedError:
                return
            except Exception as exc:
                if not isinstance(exc, BastionError):
                    log.exception("dashboard API failed on %s", scope["path"])
                status, hs, body = render_error(exc, Format.OPENAI)
                extra = [
                    (k.encode("latin-1"), v.encode("latin-1"))
                    for k, v in hs.items()
                    if k != "content-type"
                ]
            await send(
                {"type": "http.response.start", "status": status, "headers": API_HEADERS + extra}
            )
            await send({"type": "http.response.body", "body": body})

        return serve

    # -- API ----------------------------------------------------------------------------------

    async def _calls_in(self, w: Window) -> tuple[list[CallRecord], bool]:
        """The calls of the range, newest first, and whether ``SCAN_LIMIT`` cut it short."""
        recent = await self.gateway.store.recent_calls(SCAN_LIMIT)
        calls = [c for c in recent if w.holds(c.ts)]
        return calls, len(recent) == SCAN_LIMIT and w.holds(recent[-1].ts)

    async def summary(self, q: Query) -> dict[str, Any]:
        """Spend, call rates and cache savings over the range; today's spend against each cap."""
        gw = self.gateway
        w = window(q, default=24 * 60)
        day = gw.clock.day()
        spent: dict[str, float] = {}
        for name, usd in (await gw.store.spend_by_day(day, "feature")).items():
            # calls without a feature are capped by the ``default`` feature's budget
            key = name if name is not None else "default"
            spent[key] = spent.get(key, 0.0) + usd
        features = []
        for name in sorted(set(spent) | set(gw.config.features)):
            fc = gw.config.features.get(name)
            cap = fc.daily_budget_usd if fc is not None else None
            if cap is None and name not in spent:
                continue
            features.append(
                {
                    "feature": name,
                    "spent_usd": spent.get(name, 0.0),
                    "cap_usd": cap,
                    "reserved_usd": await self._reserved(f"spend:{day}:feature:{name}")
                    if cap is not None
                    else None,
                }
            )
        calls, sampled = await self._calls_in(w)
        ranged = await gw.store.spend_between(w.start, w.end + 1e-6)
        rec = gw.recorder.stats
        return {
            "window": w.as_dict(),
            "day": day,
            "timezone": gw.config.cost.timezone,
            "spend": {
                "range_usd": ranged.get(None, 0.0),
                "total_usd": sum(spent.values()),
                "global_cap_usd": gw.config.cost.caps.global_daily_usd,
                "per_user_cap_usd": gw.config.cost.caps.per_user_daily_usd,
                "per_key_cap_usd": gw.config.cost.caps.per_key_daily_usd,
                "features": features,
            },
            "calls": {
                "window_minutes": w.minutes,
                "sample_limit": SCAN_LIMIT,
                "sampled": sampled,
                **_rates(calls),
                **_latency(calls),
            },
            "cache": self._cache(calls),
            "kill": await kill_status(gw),
            "recorder": {
                "pending": gw.recorder.pending,
                "written": rec.written,
                "spilled": rec.spilled,
                "dropped": rec.dropped,
            },
            "generated_at": time.time(),
        }

    async def _reserved(self, cap_key: str) -> float | None:
        """Money held by calls in flight; None when the counter store cannot say."""
        try:
            return (await self.gateway.state.usage(cap_key)).reserved
        except StateUnavailable:
            return None

    def _cache(self, calls: Sequence[CallRecord]) -> dict[str, Any]:
        """An estimate of what prompt caching saved: cache reads priced as fresh input."""
        read = write = fresh = 0
        saved = 0.0
        for c in calls:
            read += c.cache_read_tokens
            write += c.cache_write_tokens
            fresh += c.input_tokens
            price = self.gateway.prices.get(c.served_model or c.requested_model)
            if price is not None and c.cache_read_tokens:
                saved += c.cache_read_tokens * (price.input - price.cache_read) / 1_000_000.0
        total_in = read + write + fresh
        return {
            "read_tokens": read,
            "write_tokens": write,
            "input_tokens": fresh,
            "read_share": read / total_in if total_in else None,
            "savings_usd_estimate": saved,
        }

    async def latency(self, q: Query) -> dict[str, Any]:
        """p50/p95 of latency and TTFT plus error/retry/failover rates, per time bucket."""
        w = window(q)
        buckets = int_param(q, "buckets", 30, 1, 240)
        start = w.start
        width = w.minutes * 60.0 / buckets
        groups: list[list[CallRecord]] = [[] for _ in range(buckets)]
        calls, sampled = await self._calls_in(w)
        for c in calls:
            groups[min(int((c.ts - start) / width), buckets - 1)].append(c)
        series = [
            {"t": start + i * width, "t_end": start + (i + 1) * width, **_latency(g), **_rates(g)}
            for i, g in enumerate(groups)
        ]
        return {
            "minutes": w.minutes,
            "window": w.as_dict(),
            "sampled": sampled,
            "bucket_seconds": width,
            "start": start,
            "end": w.end,
            "overall": {**_latency(calls), **_rates(calls)},
            "series": series,
        }

    async def calls(self, q: Query) -> dict[str, Any]:
        """The newest calls, newest first, optionally of one feature and within the range."""
        limit = int_param(q, "limit", 50, 1, 500)
        feature = q.get("feature", [""])[-1] or None
        records = await self.gateway.store.recent_calls(limit, feature)
        if "minutes" not in q:
            return {"window": None, "calls": [_call_row(c) for c in records]}
        w = window(q)
        # the newest ``limit`` calls, cut at the range's start, are the range's newest calls
        kept = [_call_row(c) for c in records if w.holds(c.ts)]
        return {"window": w.as_dict(), "calls": kept}

    async def trace(self, q: Query) -> dict[str, Any]:
        """Every call of one trace, oldest first, with its (scrubbed) text."""
        trace_id = q.get("trace_id", [""])[-1].strip()
        if not TRACE_ID.match(trace_id):
            raise InvalidRequest(
                "trace_id: required, up to 128 letters, digits or . _ : -", param="trace_id"
            )
        records = await self.gateway.store.get_calls_by_trace(trace_id)
        return {"trace_id": trace_id, "calls": [_call_row(c, full_text=True) for c in records]}

    async def stages(self, q: Query) -> dict[str, Any]:
        """Per feature, each stage's p95 against its latency budget and the share flagged over."""
        return await dashboard_api.stage_budgets(self.gateway, q)

    async def review(self, q: Query) -> dict[str, Any]:
        """The review queue, newest first: sampled calls and every call a guard flagged."""
        return await dashboard_api.review_list(self.gateway, q)

    async def review_mark(self, body: Body) -> dict[str, Any]:
        """Mark an item good or bad, with a note."""
        return await dashboard_api.review_mark(self.gateway, body)

    async def spend(self, q: Query) -> dict[str, Any]:
        """Spend over the range by key, user, model and feature, from the ledger."""
        return await dashboard_api.spend_breakdown(self.gateway, q)

    async def review_export(self, body: Body) -> dict[str, Any]:
        """A reviewed item as an eval case (a POST: it is re-scrubbed and built on demand)."""
        return await dashboard_api.review_export(self.gateway, body)

    async def quality(self, q: Query) -> dict[str, Any]:
        """Online quality: each reference-free scorer's pass rate per feature (rolling window)."""
        gw = self.gateway
        return {
            "features": gw.quality.summary(),
            "scored": gw.quality.scored,
            "dropped": gw.quality.dropped,
        }

    async def breakers(self, q: Query) -> dict[str, Any]:
        """Each configured deployment's breaker, read live from the counter store.

        The counter store is what every replica's router consults, so a breaker another replica
        opened shows here. ``breaker_peek`` changes nothing: ``breaker_allow`` would hand out
        the half-open probe. Beside it, the calls of the range that skipped an open breaker.
        """
        gw = self.gateway
        w = window(q)
        names = gw.router.deployment_names()
        seen_open: dict[str, tuple[float, int]] = {}
        calls, _ = await self._calls_in(w)
        for c in calls:
            skipped = c.flags.get("breaker_open")
            if isinstance(skipped, list):
                for name in skipped:
                    if isinstance(name, str):
                        last, n = seen_open.get(name, (0.0, 0))
                        seen_open[name] = (max(last, c.ts), n + 1)
        deployments: list[dict[str, Any]] = []
        live = True
        for name in names:
            row: dict[str, Any] = {"deployment": name, "state": None, "retry_after_seconds": None}
            if live:
                try:
                    peek = await gw.state.breaker_peek("breaker:" + name)
                except StateUnavailable:
                    live = False  # one answer for the whole list: the store is down
                else:
                    row["state"] = peek.state.value
                    row["retry_after_seconds"] = peek.retry_after_seconds
            deployments.append(row)
        return {
            "enabled": gw.config.reliability.breaker.enabled,
            "live": live,
            "window": w.as_dict(),
            "deployments": deployments,
            "recently_open": [
                {"deployment": n, "last_seen": t, "calls": k} for n, (t, k) in seen_open.items()
            ],
        }


async def _json_body(receive: Receive) -> Body:
    """The request body as a JSON object, refused past ``MAX_POST_BYTES``."""
    raw = await read_body(receive, MAX_POST_BYTES)
    try:
        body = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError:
        raise InvalidRequest("body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidRequest("body must be a JSON object")
    return body


def dashboard_routes(gateway: Gateway) -> dict[tuple[str, str], Handler]:
    """Routes for ``BastionApp``'s table: the page under ``/dashboard``, data under ``/admin/api``."""
    return Dashboard(gateway).routes()

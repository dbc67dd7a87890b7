"""The dashboard's JSON API in-process, on a store seeded with records whose numbers are known."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from tests.asgi import asgi_request

from bastion.config import Config
from bastion.gateway import Gateway
from bastion.server.app import create_app
from bastion.server.dashboard import Dashboard
from bastion.state import BreakerPolicy, Cap
from bastion.store import CallRecord, KeyRecord, LedgerEntry

ADMIN = "bst-dashboard-admin-secret"
VIEWER = "bst-dashboard-viewer-secret"


def _config(tmp: Path) -> Config:
    return Config.model_validate(
        {
            "store": {"url": f"sqlite:///{tmp / 'records.db'}"},
            "state": {"url": "memory://"},
            "observability": {"spill_path": str(tmp / "spill.jsonl")},
            "providers": {"sim": {"kind": "sim"}},
            "models": {
                "claude-sonnet-5": {
                    "deployments": [{"provider": "sim", "model": "claude-sonnet-5"}]
                }
            },
            "features": {
                # answers keep their PII (flagged, not replaced): the no-PII scorer has one to find
                "default": {"daily_budget_usd": 2, "pii_output": "flag"},
                "drafts": {"daily_budget_usd": 5},
                "summaries": {"daily_budget_usd": 3},
                "uncapped": {},
            },
            "cost": {"caps": {"global_daily_usd": 10}},
        }
    )


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    async with Gateway(_config(tmp_path)) as g:
        await g.store.create_key(KeyRecord.from_secret(ADMIN, name="admin", roles=("admin",)))
        await g.store.create_key(KeyRecord.from_secret(VIEWER, name="viewer"))
        yield g


def _call(rid: str, ts: float, **kw: Any) -> CallRecord:
    base: dict[str, Any] = {
        "trace_id": "t-" + rid,
        "api_format": "anthropic",
        "requested_model": "claude-sonnet-5",
    }
    return CallRecord(request_id=rid, ts=ts, **{**base, **kw})


async def _get(
    gw: Gateway, path: str, key: str | None = ADMIN, **query: Any
) -> tuple[int, dict[str, Any]]:
    """Drive one API route with a query string (the shared ASGI helper sends none)."""
    handler = Dashboard(gw).routes()[("GET", path)]
    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "query_string": urlencode(query).encode(),
        "headers": [(b"x-api-key", key.encode())] if key else [],
    }
    out: dict[str, Any] = {}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(msg: MutableMapping[str, Any]) -> None:
        if msg["type"] == "http.response.start":
            out["status"] = msg["status"]
            out["headers"] = dict(msg["headers"])
        else:
            out["body"] = msg["body"]

    await handler(scope, receive, send)
    assert out["headers"][b"cache-control"] == b"no-store"
    return out["status"], orjson.loads(out["body"])


@pytest.mark.parametrize("path", ["summary", "latency", "calls", "trace", "breakers", "spend"])
async def test_every_api_endpoint_needs_an_admin_key(gw: Gateway, path: str) -> None:
    status, body = await _get(gw, f"/admin/api/{path}", key=None)
    assert status == 401 and "error" in body
    status, body = await _get(gw, f"/admin/api/{path}", key="bst-unknown")
    assert status == 401
    status, body = await _get(gw, f"/admin/api/{path}", key=VIEWER)
    assert status == 403 and "admin" in body["error"]["message"]


async def test_page_and_assets_carry_no_data_and_a_strict_csp(gw: Gateway) -> None:
    await gw.store.insert_calls([_call("r-secret", time.time(), feature="drafts")])
    app = create_app(gw)
    status, headers, body = await asgi_request(app, "GET", "/dashboard/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in headers["content-security-policy"]
    assert b"r-secret" not in body and b"drafts" not in body
    status, headers, _ = await asgi_request(app, "GET", "/dashboard/app.js")
    assert status == 200 and headers["content-type"].startswith("text/javascript")
    status, _, _ = await asgi_request(app, "GET", "/dashboard/nope.js")
    assert status == 404


async def test_summary_shows_todays_spend_per_feature_against_its_cap(gw: Gateway) -> None:
    now = time.time()
    day = gw.clock.day(now)
    yesterday = gw.clock.day(now - 86400)
    entries = [
        LedgerEntry(request_id="l1", ts=now, day=day, model="m", feature="drafts", cost_usd=1.0),
        LedgerEntry(request_id="l2", ts=now, day=day, model="m", feature="drafts", cost_usd=0.25),
        LedgerEntry(request_id="l3", ts=now, day=day, model="m", feature=None, cost_usd=0.5),
        LedgerEntry(request_id="l4", ts=now, day=day, model="m", feature="search", cost_usd=0.1),
        LedgerEntry(
            request_id="l5", ts=now, day=yesterday, model="m", feature="drafts", cost_usd=9
        ),
    ]
    await gw.store.insert_ledger(entries)
    await gw.state.reserve("inflight", [Cap(f"spend:{day}:feature:drafts", 5, 3600)], 0.3, 60)

    status, s = await _get(gw, "/admin/api/summary")
    assert status == 200 and s["day"] == day
    rows = {f["feature"]: f for f in s["spend"]["features"]}
    # no-feature calls count against the default cap; configured caps show even at $0;
    # an unconfigured feature with spend shows without a cap; an uncapped idle one is left out
    assert rows.keys() == {"default", "drafts", "search", "summaries"}
    assert rows["drafts"]["spent_usd"] == pytest.approx(1.25)
    assert rows["drafts"]["cap_usd"] == 5 and rows["drafts"]["reserved_usd"] == pytest.approx(0.3)
    assert rows["default"]["spent_usd"] == pytest.approx(0.5) and rows["default"]["cap_usd"] == 2
    assert rows["search"]["cap_usd"] is None and rows["search"]["reserved_usd"] is None
    assert rows["summaries"]["spent_usd"] == 0 and rows["summaries"]["cap_usd"] == 3
    assert s["spend"]["total_usd"] == pytest.approx(1.85)
    assert s["spend"]["global_cap_usd"] == 10
    assert s["kill"] == {"switches": {}}


async def test_summary_rates_and_cache_savings_cover_the_window(gw: Gateway) -> None:
    now = time.time()
    calls = [_call(f"c{i}", now - i) for i in range(4)]
    calls += [
        _call("e1", now - 5, status=500, error_type="UpstreamError"),
        _call("e2", now - 6, status=429, retried=True),
        _call("r1", now - 7, retried=True, failover=True),
        _call("d1", now - 8, degraded=True),
        # claude-sonnet-5: input $2/M, cache read $0.2/M, so 1M cached tokens saved $1.80
        _call("k1", now - 9, cache_read_tokens=1_000_000, input_tokens=500),
        _call("old", now - 3 * 86400, status=500),
    ]
    await gw.store.insert_calls(calls)
    status, s = await _get(gw, "/admin/api/summary", minutes=24 * 60)
    assert status == 200 and s["calls"]["window_minutes"] == 24 * 60
    c = s["calls"]
    assert c["requests"] == 9 and c["errors"] == 2
    assert c["error_rate"] == pytest.approx(2 / 9)
    assert c["retry_rate"] == pytest.approx(2 / 9)
    assert c["failover_rate"] == pytest.approx(1 / 9)
    assert c["degraded_rate"] == pytest.approx(1 / 9)
    assert s["cache"]["read_tokens"] == 1_000_000
    assert s["cache"]["savings_usd_estimate"] == pytest.approx(1.8)
    for bad in (0, 7 * 24 * 60 + 1, "1h"):
        status, body = await _get(gw, "/admin/api/summary", minutes=bad)
        assert status == 400 and body["error"]["param"] == "minutes"


async def test_latency_gives_p50_p95_of_latency_and_ttft_per_bucket(gw: Gateway) -> None:
    now = time.time()
    recent = [
        _call(f"n{v}", now - 20, latency_ms=float(v), ttft_ms=float(v) / 10 if v % 2 else None)
        for v in range(1, 101)
    ]
    early = [_call("early", now - 590, latency_ms=7000.0, ttft_ms=900.0, status=503)]
    too_old = [_call("too-old", now - 700, latency_ms=1e6)]
    await gw.store.insert_calls(recent + early + too_old)

    status, lat = await _get(gw, "/admin/api/latency", minutes=10, buckets=10)
    assert status == 200 and len(lat["series"]) == 10
    first, last = lat["series"][0], lat["series"][-1]
    assert first["requests"] == 1 and first["latency_p95"] == 7000 and first["error_rate"] == 1
    assert last["requests"] == 100
    assert last["latency_p50"] == 50 and last["latency_p95"] == 95
    odd = [v / 10 for v in range(1, 101, 2)]  # TTFT only where one was measured
    assert last["ttft_p50"] == odd[24] and last["ttft_p95"] == odd[47]
    assert all(b["requests"] == 0 and b["latency_p50"] is None for b in lat["series"][1:-1])
    assert lat["overall"]["requests"] == 101 and lat["overall"]["latency_p95"] == 96
    for bad in ({"minutes": "x"}, {"buckets": 0}, {"minutes": 99999}):
        status, body = await _get(gw, "/admin/api/latency", **bad)
        assert status == 400 and body["error"]["param"] in ("minutes", "buckets")


async def test_calls_newest_first_and_trace_lists_one_trace_oldest_first(gw: Gateway) -> None:
    now = time.time()
    long_text = "x" * 1000
    await gw.store.insert_calls(
        [
            _call("a", now - 3, trace_id="T1", feature="drafts", input_text=long_text),
            _call("b", now - 2, trace_id="T2"),
            _call("c", now - 1, trace_id="T1", feature="drafts", output_text="answer"),
        ]
    )
    status, res = await _get(gw, "/admin/api/calls")
    assert [c["request_id"] for c in res["calls"]] == ["c", "b", "a"]
    assert len(res["calls"][2]["input_text"]) < 200  # previews only in the list
    status, res = await _get(gw, "/admin/api/calls", feature="drafts", limit=1)
    assert [c["request_id"] for c in res["calls"]] == ["c"]

    status, res = await _get(gw, "/admin/api/trace", trace_id="T1")
    assert status == 200 and [c["request_id"] for c in res["calls"]] == ["a", "c"]
    assert res["calls"][0]["input_text"] == long_text
    status, res = await _get(gw, "/admin/api/trace", trace_id="nope")
    assert status == 200 and res["calls"] == []
    for bad in ("", "a b", "x" * 129, "<script>"):
        status, res = await _get(gw, "/admin/api/trace", trace_id=bad)
        assert status == 400 and res["error"]["param"] == "trace_id"


async def test_breakers_show_live_state_and_calls_of_the_range_that_found_one_open(
    gw: Gateway,
) -> None:
    name = "sim/claude-sonnet-5#0"
    now = time.time()
    await gw.store.insert_calls(
        [
            _call("s1", now - 60, status=503, flags={"breaker_open": [name]}),
            _call("s2", now - 30, status=503, flags={"breaker_open": [name]}),
            _call("s-old", now - 7200, status=503, flags={"breaker_open": [name]}),
        ]
    )
    status, b = await _get(gw, "/admin/api/breakers", minutes=60)
    assert status == 200 and b["enabled"] is True and b["live"] is True
    assert b["deployments"] == [{"deployment": name, "state": "closed", "retry_after_seconds": 0}]
    assert [(r["deployment"], r["calls"]) for r in b["recently_open"]] == [(name, 2)]
    assert b["window"]["minutes"] == 60

    await gw.state.breaker_record("breaker:" + name, False, BreakerPolicy(failure_threshold=1))
    status, b = await _get(gw, "/admin/api/breakers", minutes=60)
    (dep,) = b["deployments"]
    assert dep["state"] == "open" and 25 < dep["retry_after_seconds"] <= 30
    # reading it handed out nothing: the breaker still refuses a real call
    assert not (await gw.state.breaker_allow("breaker:" + name, BreakerPolicy())).allowed


async def test_quality_endpoint_reports_online_scores_behind_the_admin_key(gw: Gateway) -> None:
    app = create_app(gw)
    status, _, _ = await asgi_request(app, "GET", "/admin/api/quality", b"", {"x-api-key": VIEWER})
    assert status == 403
    for text in ("[[sim:reply=Fine answer.]]", "[[sim:reply=Mail jane.roe@example.com]]"):
        await gw.messages(
            {"model": "claude-sonnet-5", "messages": [{"role": "user", "content": text}]}
        )
    await gw.quality.drain()
    status, _, body = await asgi_request(
        app, "GET", "/admin/api/quality", b"", {"x-api-key": ADMIN}
    )
    assert status == 200
    scores = orjson.loads(body)["features"]["default"]
    assert scores["no_pii"]["n"] >= 1 and scores["no_pii"]["pass_rate"] < 1.0

"""The latency-budget and review-queue APIs in-process, on calls made through the gateway."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from tests.conftest import sim_models

import bastion
from bastion.gateway import Gateway
from bastion.server.dashboard import Dashboard
from bastion.store import CallRecord, KeyRecord

ADMIN = "bst-dashboard-admin-secret"
VIEWER = "bst-dashboard-viewer-secret"
PII_REPLY = "[[sim:reply=mail me at jane@example.com]]"
EMAIL = "jane@example.com"


def _cfg(tmp: Path) -> dict[str, Any]:
    return {
        "store": {"url": f"sqlite:///{tmp / 'records.db'}"},
        "state": {"url": "memory://"},
        # only flagged calls reach the queue, so the test knows exactly what is in it
        "observability": {"spill_path": str(tmp / "spill.jsonl"), "review_rate": 0.0},
        "providers": {"sim": {"kind": "sim"}},
        "models": {
            **sim_models(),
            "slow": {
                "deployments": [
                    {
                        "provider": "sim",
                        "model": "slow",
                        "headers": {"x-sim-fault": "slow_first:300"},
                    }
                ]
            },
        },
        "features": {
            "default": {},
            "chat": {"latency_budget": {"first_token_ms": 100}},
            "search": {"latency_budget": {"first_token_ms": 5000, "retrieval_ms": 200}},
        },
    }


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    async with bastion.Gateway.from_config(None, **_cfg(tmp_path)) as g:
        await g.store.create_key(KeyRecord.from_secret(ADMIN, name="admin", roles=("admin",)))
        await g.store.create_key(KeyRecord.from_secret(VIEWER, name="viewer"))
        yield g


async def _api(
    gw: Gateway,
    method: str,
    path: str,
    key: str | None = ADMIN,
    body: bytes = b"",
    **query: Any,
) -> tuple[int, Any]:
    """Drive one dashboard API route in-process."""
    handler = Dashboard(gw).routes()[(method, path)]
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": urlencode(query).encode(),
        "headers": [(b"x-api-key", key.encode())] if key else [],
    }
    out: dict[str, Any] = {}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(msg: MutableMapping[str, Any]) -> None:
        if msg["type"] == "http.response.start":
            out["status"] = msg["status"]
            out["headers"] = dict(msg["headers"])
        else:
            out["body"] = msg["body"]

    await handler(scope, receive, send)
    assert out["headers"][b"cache-control"] == b"no-store"
    return out["status"], orjson.loads(out["body"])


async def _post(gw: Gateway, path: str, payload: Any, key: str | None = ADMIN) -> tuple[int, Any]:
    return await _api(gw, "POST", path, key=key, body=orjson.dumps(payload))


async def _ask(gw: Gateway, model: str, text: str = "hi", **ctx: str) -> None:
    await gw.messages(
        {"model": model, "max_tokens": 20, "messages": [{"role": "user", "content": text}]},
        **ctx,
    )


def _nearest_rank(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin/api/stages"),
        ("GET", "/admin/api/review"),
        ("POST", "/admin/api/review/mark"),
        ("POST", "/admin/api/review/export"),
    ],
)
async def test_stage_and_review_endpoints_need_an_admin_key(
    gw: Gateway, method: str, path: str
) -> None:
    await _ask(gw, "claude-sonnet-5", PII_REPLY)
    [item] = await gw.review_queue.list()
    payload = orjson.dumps({"request_id": item.request_id, "verdict": "bad", "note": "x"})
    status, body = await _api(gw, method, path, key=None, body=payload)
    assert status == 401 and "error" in body
    status, body = await _api(gw, method, path, key="bst-unknown", body=payload)
    assert status == 401
    status, body = await _api(gw, method, path, key=VIEWER, body=payload)
    assert status == 403 and "admin" in body["error"]["message"]
    # nothing was marked by the refused requests
    still = await gw.review_queue.get(item.request_id)
    assert still is not None and still.status == "pending"


async def test_stages_give_p95_per_stage_against_the_features_budget(gw: Gateway) -> None:
    # chat: 3 of 10 calls wait 300 ms for a first token against a 100 ms budget
    chat = [_ask(gw, "slow", feature="chat") for _ in range(3)]
    chat += [_ask(gw, "claude-sonnet-5", feature="chat") for _ in range(7)]
    # search: fast answers under a generous budget; one app-reported retrieval over its 200 ms
    search = [
        _ask(gw, "claude-sonnet-5", feature="search", retrieval_ms="350"),
        _ask(gw, "claude-sonnet-5", feature="search", retrieval_ms="120"),
    ]
    await asyncio.gather(*chat, *search)
    await gw.recorder.flush()
    records = await gw.store.recent_calls(100)
    by_feature: dict[str | None, list[CallRecord]] = {}
    for r in records:
        by_feature.setdefault(r.feature, []).append(r)

    status, res = await _api(gw, "GET", "/admin/api/stages", minutes=10)
    assert status == 200 and res["stages"] == [
        "auth_routing",
        "guards",
        "retrieval",
        "first_token",
        "total",
    ]
    features = {f["feature"]: f for f in res["features"]}
    assert features.keys() == {"chat", "search"}

    c = features["chat"]
    assert c["requests"] == 10
    assert c["over_budget_calls"] == 3 and c["over_budget_rate"] == pytest.approx(0.3)
    stages = {s["stage"]: s for s in c["stages"]}
    ft = stages["first_token"]
    ttfts = [r.stages["first_token"] for r in by_feature["chat"]]
    assert ft["samples"] == 10 and ft["budget_ms"] == 100
    assert ft["p95"] == _nearest_rank(ttfts, 95) and ft["p95"] >= 300
    assert ft["p50"] == _nearest_rank(ttfts, 50) and ft["p50"] < 100
    assert ft["p95_over_budget"] is True
    assert ft["over_budget_calls"] == 3 and ft["over_budget_rate"] == pytest.approx(0.3)
    totals = [r.stages["total"] for r in by_feature["chat"]]
    assert stages["total"]["p95"] == _nearest_rank(totals, 95)
    assert stages["total"]["budget_ms"] is None and stages["total"]["p95_over_budget"] is False
    # the defaults still apply to stages a feature did not override
    assert stages["auth_routing"]["budget_ms"] == 50 and stages["retrieval"]["budget_ms"] == 300
    assert stages["retrieval"]["samples"] == 0 and stages["retrieval"]["p95"] is None
    assert stages["retrieval"]["over_budget_rate"] is None

    s = features["search"]
    sstages = {x["stage"]: x for x in s["stages"]}
    assert sstages["first_token"]["budget_ms"] == 5000
    assert sstages["first_token"]["p95_over_budget"] is False
    assert sstages["first_token"]["over_budget_calls"] == 0
    assert sstages["first_token"]["over_budget_rate"] == 0
    r = sstages["retrieval"]
    assert r["samples"] == 2 and r["p50"] == 120 and r["p95"] == 350 and r["budget_ms"] == 200
    assert r["p95_over_budget"] is True
    assert r["over_budget_calls"] == 1 and r["over_budget_rate"] == pytest.approx(0.5)
    assert s["over_budget_calls"] == 1 and s["over_budget_rate"] == pytest.approx(0.5)

    for bad in ({"minutes": "x"}, {"minutes": 0}, {"minutes": 99999}):
        status, body = await _api(gw, "GET", "/admin/api/stages", **bad)
        assert status == 400 and body["error"]["param"] == "minutes"


async def test_review_queue_lists_marks_and_exports_flagged_calls(gw: Gateway) -> None:
    await _ask(gw, "claude-sonnet-5", "an ordinary question", feature="chat")
    await _ask(gw, "claude-sonnet-5", PII_REPLY, feature="chat")
    await _ask(gw, "gpt-4.1", PII_REPLY + " second")

    status, res = await _api(gw, "GET", "/admin/api/review")
    assert status == 200 and res["pending"] == 2 and res["pending_more"] is False
    items = res["items"]
    # newest first; the unflagged call was not sampled (rate 0) so it is not queued
    assert [i["model"] for i in items] == ["gpt-4.1", "claude-sonnet-5"]
    newest, older = items
    assert older["feature"] == "chat" and newest["feature"] is None
    assert "flag:pii" in older["reasons"] and older["status"] == "pending"
    assert older["trace_id"] and older["request_id"]
    # the PII guard flagged the answer; the queue only ever held it scrubbed
    assert "mail me at" in older["output_text"] and EMAIL not in older["output_text"]
    assert EMAIL not in orjson.dumps(res).decode()

    rid = older["request_id"]
    status, body = await _post(gw, "/admin/api/review/export", {"request_id": rid})
    assert status == 409, "a pending item is not an eval case yet"

    note = f"leaked an address, reported by {EMAIL}"
    status, body = await _post(
        gw, "/admin/api/review/mark", {"request_id": rid, "verdict": "bad", "note": note}
    )
    assert status == 200
    marked = body["item"]
    assert marked["status"] == "bad" and marked["reviewed_at"] is not None
    assert marked["note"].startswith("leaked an address") and EMAIL not in marked["note"]

    status, res = await _api(gw, "GET", "/admin/api/review", status="bad")
    assert [i["request_id"] for i in res["items"]] == [rid] and res["pending"] == 1
    status, res = await _api(gw, "GET", "/admin/api/review", status="pending", feature="chat")
    assert res["items"] == []

    status, case = await _post(gw, "/admin/api/review/export", {"request_id": rid})
    assert status == 200
    assert case["id"] == rid and case["label"] == "bad"
    assert case["expected"] is None and "mail me at" in case["rejected"]
    assert case["metadata"]["feature"] == "chat" and case["metadata"]["trace_id"]
    assert "flag:pii" in case["metadata"]["reasons"]
    assert EMAIL not in orjson.dumps(case).decode()

    status, body = await _post(
        gw, "/admin/api/review/mark", {"request_id": newest["request_id"], "verdict": "good"}
    )
    assert status == 200 and body["item"]["status"] == "good" and body["item"]["note"] == ""
    status, case = await _post(gw, "/admin/api/review/export", {"request_id": newest["request_id"]})
    assert case["label"] == "good" and case["rejected"] is None and case["expected"]


async def test_review_requests_are_validated(gw: Gateway) -> None:
    await _ask(gw, "claude-sonnet-5", PII_REPLY)
    [item] = await gw.review_queue.list()
    rid = item.request_id
    bad_marks: list[tuple[Any, int, str | None]] = [
        ({"request_id": "req_nope", "verdict": "bad"}, 404, None),
        ({"request_id": rid, "verdict": "meh"}, 400, "verdict"),
        ({"request_id": rid}, 400, "verdict"),
        ({"verdict": "bad"}, 400, "request_id"),
        ({"request_id": 7, "verdict": "bad"}, 400, "request_id"),
        ({"request_id": rid, "verdict": "bad", "note": 5}, 400, "note"),
        ({"request_id": rid, "verdict": "bad", "note": "x" * 2001}, 400, "note"),
        (["not", "an", "object"], 400, None),
    ]
    for payload, want, param in bad_marks:
        status, body = await _post(gw, "/admin/api/review/mark", payload)
        assert status == want, payload
        assert body["error"]["param"] == param, payload
    status, body = await _api(gw, "POST", "/admin/api/review/mark", body=b"{nope")
    assert status == 400 and "JSON" in body["error"]["message"]
    status, body = await _api(gw, "POST", "/admin/api/review/mark", body=b"x" * 70_000)
    assert status == 413
    status, body = await _post(gw, "/admin/api/review/export", {"request_id": "req_nope"})
    assert status == 404
    for bad in ({"status": "maybe"}, {"limit": 0}):
        status, body = await _api(gw, "GET", "/admin/api/review", **bad)
        assert status == 400
    still = await gw.review_queue.get(rid)
    assert still is not None and still.status == "pending"

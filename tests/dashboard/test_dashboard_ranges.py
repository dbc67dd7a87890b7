"""One range for the whole page, spend by key/user/model/feature, and breakers across replicas."""

from __future__ import annotations

import itertools
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.config import Config
from bastion.gateway import Gateway
from bastion.server.dashboard import Dashboard
from bastion.server.dashboard_api import spend_breakdown
from bastion.state import BreakerPolicy, RedisCounterStore
from bastion.store import CallRecord, KeyRecord, LedgerEntry

ADMIN = "bst-dashboard-ranges-admin"
REDIS_URL = "redis://127.0.0.1:6379/0"
DEP = "sim/claude-sonnet-5#0"


def _config(tmp: Path, state_url: str = "memory://", prefix: str = "bastion") -> Config:
    return Config.model_validate(
        {
            "store": {"url": f"sqlite:///{tmp / 'records.db'}"},
            "state": {"url": state_url, "prefix": prefix},
            "observability": {"spill_path": str(tmp / "spill.jsonl")},
            "providers": {"sim": {"kind": "sim"}},
            "models": {
                "claude-sonnet-5": {
                    "deployments": [{"provider": "sim", "model": "claude-sonnet-5"}]
                }
            },
            "features": {"default": {}, "drafts": {"daily_budget_usd": 5}},
        }
    )


async def _open(cfg: Config) -> Gateway:
    g = Gateway(cfg)
    await g.__aenter__()
    await g.store.create_key(KeyRecord.from_secret(ADMIN, name="admin", roles=("admin",)))
    return g


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    g = await _open(_config(tmp_path))
    yield g
    await g.__aexit__(None, None, None)


async def _get(gw: Gateway, path: str, **query: Any) -> tuple[int, dict[str, Any]]:
    handler = Dashboard(gw).routes()[("GET", path)]
    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "query_string": urlencode(query).encode(),
        "headers": [(b"x-api-key", ADMIN.encode())],
    }
    out: dict[str, Any] = {}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(msg: MutableMapping[str, Any]) -> None:
        if msg["type"] == "http.response.start":
            out["status"] = msg["status"]
        else:
            out["body"] = msg["body"]

    await handler(scope, receive, send)
    return out["status"], orjson.loads(out["body"])


def _call(rid: str, ts: float, **kw: Any) -> CallRecord:
    base: dict[str, Any] = {"trace_id": "t-" + rid, "api_format": "anthropic"}
    return CallRecord(request_id=rid, ts=ts, requested_model="claude-sonnet-5", **{**base, **kw})


def _entry(rid: str, ts: float, usd: float, gw: Gateway, **kw: Any) -> LedgerEntry:
    fields: dict[str, Any] = {"model": "claude-sonnet-5", **kw}
    return LedgerEntry(request_id=rid, ts=ts, day=gw.clock.day(ts), cost_usd=usd, **fields)


async def test_every_answer_covers_the_range_it_was_asked_for(gw: Gateway) -> None:
    now = time.time()
    await gw.store.insert_calls(
        [
            _call("recent", now - 600, feature="drafts", latency_ms=10.0),
            _call("earlier", now - 2 * 3600, feature="drafts", latency_ms=20.0, status=500),
        ]
    )
    await gw.store.insert_ledger(
        [
            _entry("recent", now - 600, 0.25, gw, feature="drafts"),
            _entry("earlier", now - 2 * 3600, 1.0, gw, feature="drafts"),
        ]
    )
    for minutes, requests, spent, errors in ((60, 1, 0.25, 0), (180, 2, 1.25, 1)):
        _, s = await _get(gw, "/admin/api/summary", minutes=minutes)
        assert s["window"]["minutes"] == s["calls"]["window_minutes"] == minutes
        assert s["calls"]["requests"] == requests and s["calls"]["errors"] == errors
        assert s["spend"]["range_usd"] == pytest.approx(spent)
        _, lat = await _get(gw, "/admin/api/latency", minutes=minutes)
        assert lat["window"]["minutes"] == minutes and lat["overall"]["requests"] == requests
        _, stages = await _get(gw, "/admin/api/stages", minutes=minutes)
        assert [f["requests"] for f in stages["features"]] == [requests]
        _, calls = await _get(gw, "/admin/api/calls", minutes=minutes)
        assert len(calls["calls"]) == requests and calls["window"]["minutes"] == minutes
        _, spend = await _get(gw, "/admin/api/spend", minutes=minutes)
        assert spend["total_usd"] == pytest.approx(spent)
        assert spend["window"]["minutes"] == minutes
    # without a range the call list is the newest calls, as other clients of the API expect
    _, calls = await _get(gw, "/admin/api/calls")
    assert [c["request_id"] for c in calls["calls"]] == ["recent", "earlier"]
    assert calls["window"] is None


async def test_spend_is_broken_down_by_key_user_model_and_feature(gw: Gateway) -> None:
    key = KeyRecord.from_secret("bst-spender", name="support-bot")
    await gw.store.create_key(key)
    now = time.time()
    await gw.store.insert_ledger(
        [
            _entry("a", now - 60, 1.0, gw, key_id=key.id, user_id="ana", feature="drafts"),
            _entry("b", now - 50, 0.5, gw, key_id=key.id, user_id=None, model="gpt-4.1-mini"),
            _entry("c", now - 40, 0.25, gw, key_id="key_gone", user_id="ana", feature="default"),
            _entry("old", now - 7200, 100.0, gw, key_id=key.id, user_id="ana"),
        ]
    )
    status, res = await _get(gw, "/admin/api/spend", minutes=60)
    assert status == 200 and res["total_usd"] == pytest.approx(1.75)
    by = {name: [(r["label"], r["spend_usd"]) for r in rows] for name, rows in res["by"].items()}
    # largest first; a key by its name (an unknown key by its id); a missing user said so;
    # calls without a feature are the ``default`` feature, as its budget treats them
    assert by["key"] == [("support-bot", 1.5), ("key_gone", 0.25)]
    assert by["user"] == [("ana", 1.25), ("(no user)", 0.5)]
    assert by["model"] == [("claude-sonnet-5", 1.25), ("gpt-4.1-mini", 0.5)]
    assert by["feature"] == [("drafts", 1.0), ("default", 0.75)]
    assert res["by"]["key"][0]["group"] == key.id
    status, body = await _get(gw, "/admin/api/spend", minutes=-5)
    assert status == 400 and body["error"]["param"] == "minutes"


async def test_a_long_tail_is_summed_into_one_row(gw: Gateway) -> None:
    now = time.time()
    await gw.store.insert_ledger(
        [_entry(f"u{i}", now - 10, 1.0 + i, gw, user_id=f"user-{i:02d}") for i in range(30)]
    )
    _, res = await _get(gw, "/admin/api/spend", minutes=15)
    users = res["by"]["user"]
    assert len(users) == 26 and users[0]["label"] == "user-29"
    tail = users[-1]
    assert tail["others"] == 5 and tail["label"] == "5 more"
    assert tail["spend_usd"] == pytest.approx(sum(1.0 + i for i in range(5)))
    assert sum(r["spend_usd"] for r in users) == pytest.approx(res["total_usd"])


_RUN = itertools.count()
ledger = st.lists(
    st.tuples(
        st.integers(0, 240),  # minutes ago
        st.sampled_from(["k1", "k2", None]),
        st.sampled_from(["ana", "bo", None]),
        st.sampled_from(["m1", "m2"]),
        st.sampled_from(["drafts", "default", None]),
        st.integers(0, 5000),  # cents
    ),
    max_size=15,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(entries=ledger, minutes=st.integers(1, 300))
async def test_every_breakdown_adds_up_to_the_ledger_total_of_the_range(
    gw: Gateway,
    entries: list[tuple[int, str | None, str | None, str, str | None, int]],
    minutes: int,
) -> None:
    # each example writes a day apart from the others, so they never share a range
    run = next(_RUN)
    now = time.time() - run * 86400
    await gw.store.insert_ledger(
        [
            _entry(
                f"p{run}-{i}",
                now - ago * 60 - 1,
                cents / 100,
                gw,
                key_id=k,
                user_id=u,
                model=m,
                feature=f,
            )
            for i, (ago, k, u, m, f, cents) in enumerate(entries)
        ]
    )
    expected = sum(c / 100 for ago, *_, c in entries if ago * 60 + 1 <= minutes * 60)
    got = await spend_breakdown(gw, {"minutes": [str(minutes)]}, now=now)
    assert got["total_usd"] == pytest.approx(expected)
    for rows in got["by"].values():
        assert sum(r["spend_usd"] for r in rows) == pytest.approx(expected)
        assert len({r["label"] for r in rows}) == len(rows)


@settings(max_examples=15, deadline=None)
@given(
    ages=st.lists(st.integers(0, 24 * 60 - 1), max_size=10),
    minutes=st.integers(1, 24 * 60),
)
async def test_tiles_charts_stages_and_the_call_list_count_the_same_calls(
    ages: list[int], minutes: int
) -> None:
    """Whatever the range, every endpoint the page asks counts exactly the calls inside it."""
    with tempfile.TemporaryDirectory() as tmp:
        g = await _open(_config(Path(tmp)))
        try:
            now = time.time()
            await g.store.insert_calls(
                [_call(f"w{i}", now - age * 60 - 5) for i, age in enumerate(ages)]
            )
            inside = sum(1 for age in ages if age * 60 + 5 <= minutes * 60)
            _, s = await _get(g, "/admin/api/summary", minutes=minutes)
            _, lat = await _get(g, "/admin/api/latency", minutes=minutes)
            _, stages = await _get(g, "/admin/api/stages", minutes=minutes)
            _, calls = await _get(g, "/admin/api/calls", minutes=minutes, limit=500)
            assert s["calls"]["requests"] == inside
            assert lat["overall"]["requests"] == sum(b["requests"] for b in lat["series"])
            assert lat["overall"]["requests"] == inside
            assert sum(f["requests"] for f in stages["features"]) == inside
            assert len(calls["calls"]) == inside
            windows = {s["window"]["minutes"], lat["window"]["minutes"]}
            assert windows | {stages["window"]["minutes"], calls["window"]["minutes"]} == {minutes}
        finally:
            await g.__aexit__(None, None, None)


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    prefix = f"bastion-dash-{uuid.uuid4().hex[:12]}"
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3, socket_timeout=3)
    try:
        yield prefix
    finally:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


async def test_a_breaker_opened_by_another_replica_shows_live(
    tmp_path: Path, redis_prefix: str
) -> None:
    g = await _open(_config(tmp_path, REDIS_URL, redis_prefix))
    other = RedisCounterStore(REDIS_URL, prefix=redis_prefix)
    try:
        _, b = await _get(g, "/admin/api/breakers", minutes=60)
        assert b["live"] and [d["state"] for d in b["deployments"]] == ["closed"]
        # the other replica's router trips it; this process never saw a call
        await other.breaker_record("breaker:" + DEP, False, BreakerPolicy(failure_threshold=1))
        _, b = await _get(g, "/admin/api/breakers", minutes=60)
        assert [d["state"] for d in b["deployments"]] == ["open"]
        assert b["recently_open"] == []
    finally:
        await other.close()
        await g.__aexit__(None, None, None)

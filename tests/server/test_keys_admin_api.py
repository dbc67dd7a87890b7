"""The keys admin API over raw HTTP against a real `bastion serve`, with admin and plain keys,
and the keys it makes used through the official OpenAI SDK."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.conftest import RunningGateway, start_gateway, stop, write_config

PRICE = {"input": 100.0, "output": 1000.0, "cache_write": 100.0, "cache_read": 100.0}
ASK: list[Any] = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    tmp = tmp_path_factory.mktemp("keysapi")
    g = start_gateway(
        write_config(tmp, cost={"prices": {"claude-sonnet-5": PRICE, "gpt-4.1-mini": PRICE}})
    )
    try:
        yield g
    finally:
        stop(g.proc)


@pytest.fixture(scope="module")
def plain_key(gw: RunningGateway) -> str:
    out = gw.cli("keys", "create", "--name", "plain-caller")
    assert out.returncode == 0, out.stderr
    return next(ln.split()[-1] for ln in out.stdout.splitlines() if ln.startswith("secret:"))


def http(
    gw: RunningGateway, method: str, path: str, key: str | None, body: Any = None
) -> tuple[int, Any, bytes]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(gw.url + path, data=data, method=method)
    req.add_header("content-type", "application/json")
    if key is not None:
        req.add_header("x-api-key", key)
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            raw = r.read()
            return r.status, json.loads(raw), raw
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, json.loads(raw), raw


def sdk(gw: RunningGateway, secret: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=secret, max_retries=0)


@pytest.mark.parametrize(
    ("method", "body"),
    [("GET", None), ("POST", {"name": "x"}), ("PATCH", {"id": "key_x", "rpm": 1})],
)
def test_every_keys_route_needs_the_admin_role(
    gw: RunningGateway, plain_key: str, method: str, body: Any
) -> None:
    status, err, _ = http(gw, method, "/admin/api/keys", None, body)
    assert status == 401 and err["error"]["code"] == "invalid_api_key"
    status, err, _ = http(gw, method, "/admin/api/keys", plain_key, body)
    assert status == 403 and "admin role" in err["error"]["message"]
    status, err, _ = http(gw, "GET", "/admin/api/keys/spend?by=team", plain_key)
    assert status == 403


def test_create_returns_the_secret_once_and_listing_never_shows_it(gw: RunningGateway) -> None:
    status, made, _ = http(
        gw,
        "POST",
        "/admin/api/keys",
        gw.key,
        {
            "name": "search-svc",
            "daily_usd": 2,
            "monthly_usd": "30",
            "rpm": 120,
            "tpm": 100000,
            "models": ["gpt-4.1-mini", "claude-sonnet-5"],
            "expires_at": "2027-01-01",
            "team": "search",
            "owner": "ana@example.com",
        },
    )
    assert status == 200, made
    secret, key = made["secret"], made["key"]
    assert secret.startswith("bst-") and key["prefix"] == secret[:12]
    assert key["daily_usd"] == 2 and key["monthly_usd"] == 30 and key["tpm"] == 100000
    assert key["expires"] == "2027-01-01T00:00:00Z" and key["status"] == "active"
    assert "key_hash" not in key
    status, listed, raw = http(gw, "GET", "/admin/api/keys", gw.key)
    assert status == 200
    assert secret.encode() not in raw and secret[12:].encode() not in raw
    row = next(k for k in listed["keys"] if k["id"] == key["id"])
    assert row["team"] == "search" and row["models"] == ["gpt-4.1-mini", "claude-sonnet-5"]
    assert row["today_usd"] == 0 and row["month_usd"] == 0
    # the new key works at once through the official SDK
    reply = sdk(gw, secret).chat.completions.create(
        model="gpt-4.1-mini", max_tokens=10, messages=ASK
    )
    assert reply.choices[0].message.content


LIVE_SPEND = frozenset({"today_usd", "month_usd"})


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"name": "x", "daily_usd": "lots"}, "daily_usd"),
        ({"name": "x", "rpm": 0}, "rpm"),
        ({"name": "x", "tpm": 1.5}, "tpm"),
        ({"name": "x", "expires_at": "next tuesday"}, "expires_at"),
        ({"name": "x", "models": [1, 2]}, "models"),
        ({"name": "x", "colour": "red"}, "colour"),
        ({"daily_usd": 1}, "name"),
    ],
)
def test_bad_fields_are_400_naming_the_field_and_create_nothing(
    gw: RunningGateway, body: dict[str, Any], param: str
) -> None:
    def keys() -> list[dict[str, Any]]:
        # spend columns left out: an earlier test's call reaches the ledger through the
        # background record writer, whenever it lands (the write is off the request path)
        listed = http(gw, "GET", "/admin/api/keys", gw.key)[1]["keys"]
        return [{k: v for k, v in row.items() if k not in LIVE_SPEND} for row in listed]

    before = keys()
    status, err, _ = http(gw, "POST", "/admin/api/keys", gw.key, body)
    assert status == 400, err
    assert err["error"]["type"] == "invalid_request_error" and err["error"]["param"] == param
    assert param in err["error"]["message"]
    assert keys() == before


def test_patch_changes_limits_at_once_and_revoke_stops_the_key(gw: RunningGateway) -> None:
    made = http(
        gw, "POST", "/admin/api/keys", gw.key, {"name": "patchme", "models": "gpt-4.1-mini"}
    )[1]
    kid, client = made["key"]["id"], sdk(gw, made["secret"])
    with pytest.raises(openai.PermissionDeniedError, match="may not use model"):
        client.chat.completions.create(model="claude-sonnet-5", max_tokens=5, messages=ASK)
    status, out, _ = http(gw, "PATCH", "/admin/api/keys", gw.key, {"id": kid, "models": None})
    assert status == 200 and out["key"]["models"] == []
    client.chat.completions.create(model="claude-sonnet-5", max_tokens=5, messages=ASK)
    # a budget smaller than one call's worst case: refused before anything is sent
    status, out, _ = http(gw, "PATCH", "/admin/api/keys", gw.key, {"id": kid, "daily_usd": 0.001})
    assert status == 200 and out["key"]["daily_usd"] == 0.001
    with pytest.raises(openai.RateLimitError, match=f"daily spend cap reached for key:{kid}"):
        client.chat.completions.create(model="claude-sonnet-5", max_tokens=5, messages=ASK)
    status, err, _ = http(
        gw, "PATCH", "/admin/api/keys", gw.key, {"id": kid, "revoked": True, "rpm": 3}
    )
    assert status == 400 and err["error"]["param"] == "revoked"
    status, out, _ = http(gw, "PATCH", "/admin/api/keys", gw.key, {"id": kid, "revoked": True})
    assert status == 200 and out["key"]["status"] == "revoked"
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="claude-sonnet-5", max_tokens=5, messages=ASK)
    status, err, _ = http(gw, "PATCH", "/admin/api/keys", gw.key, {"id": kid, "rpm": 5})
    assert status == 404
    status, err, _ = http(gw, "PATCH", "/admin/api/keys", gw.key, {"rpm": 5})
    assert status == 400 and err["error"]["param"] == "id"


def test_spend_by_key_and_team_come_from_the_ledger(gw: RunningGateway) -> None:
    made = [
        http(gw, "POST", "/admin/api/keys", gw.key, {"name": f"team-{i}", "team": "billing"})[1]
        for i in range(2)
    ]
    for m in made:
        sdk(gw, m["secret"]).chat.completions.create(
            model="gpt-4.1-mini", max_tokens=10, messages=ASK
        )
    ids = {m["key"]["id"] for m in made}
    deadline = time.monotonic() + 10
    while True:  # records reach the ledger off the request path
        by_key = http(gw, "GET", "/admin/api/keys/spend?by=key&days=2", gw.key)[1]
        rows = {r["group"]: r for r in by_key["rows"]}
        if ids <= set(rows) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert ids <= set(rows), by_key
    per_key = {kid: rows[kid]["spend_usd"] for kid in ids}
    assert all(v > 0 for v in per_key.values())
    assert rows[next(iter(ids))]["label"].endswith("(team-0)") or rows[next(iter(ids))][
        "label"
    ].endswith("(team-1)")
    by_team = http(gw, "GET", "/admin/api/keys/spend?by=team&days=2", gw.key)[1]
    team = next(r for r in by_team["rows"] if r["group"] == "billing")
    assert team["spend_usd"] == pytest.approx(sum(per_key.values()))
    listed = {k["id"]: k for k in http(gw, "GET", "/admin/api/keys", gw.key)[1]["keys"]}
    for kid in ids:
        assert listed[kid]["today_usd"] == pytest.approx(per_key[kid])
        assert listed[kid]["month_usd"] == pytest.approx(per_key[kid])
    status, err, _ = http(gw, "GET", "/admin/api/keys/spend?by=planet", gw.key)
    assert status == 400 and err["error"]["param"] == "by"


def test_a_key_past_its_expiry_is_listed_expired_and_refused_with_401(gw: RunningGateway) -> None:
    made = http(gw, "POST", "/admin/api/keys", gw.key, {"name": "old", "expires_at": "2020-01-01"})[
        1
    ]
    kid = made["key"]["id"]
    assert made["key"]["status"] == "expired"
    listed = {k["id"]: k for k in http(gw, "GET", "/admin/api/keys", gw.key)[1]["keys"]}
    assert listed[kid]["status"] == "expired" and listed[kid]["expires"] == "2020-01-01T00:00:00Z"
    with pytest.raises(openai.AuthenticationError, match=f"API key {kid} expired at 2020-01-01"):
        sdk(gw, made["secret"]).chat.completions.create(
            model="gpt-4.1-mini", max_tokens=5, messages=ASK
        )
    status, out, _ = http(gw, "PATCH", "/admin/api/keys", gw.key, {"id": kid, "expires_at": None})
    assert status == 200 and out["key"]["status"] == "active"
    sdk(gw, made["secret"]).chat.completions.create(
        model="gpt-4.1-mini", max_tokens=5, messages=ASK
    )


def keys_now(gw: RunningGateway) -> dict[str, dict[str, Any]]:
    """Every key as listed, without its spend (earlier calls' ledger entries land off-path)."""
    rows = http(gw, "GET", "/admin/api/keys", gw.key)[1]["keys"]
    return {
        k["id"]: {n: v for n, v in k.items() if n not in ("today_usd", "month_usd")} for k in rows
    }


@pytest.fixture(scope="module")
def target(gw: RunningGateway) -> str:
    made = http(gw, "POST", "/admin/api/keys", gw.key, {"name": "fuzz-target", "team": "t"})[1]
    return str(made["key"]["id"])


PATCH_VALUES = st.none() | st.booleans() | st.integers(-3, 10**6) | st.text(max_size=8)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.data(),
    body=st.dictionaries(
        st.sampled_from(["daily_usd", "rpm", "tpm", "models", "team", "owner", "colour"]),
        PATCH_VALUES,
        max_size=4,
    ),
)
def test_any_patch_is_applied_exactly_or_refused_in_openai_shape(
    gw: RunningGateway, target: str, data: st.DataObject, body: dict[str, Any]
) -> None:
    kid = data.draw(st.sampled_from([target, target, "key_nope"]) | st.text(max_size=6))
    before = keys_now(gw)
    status, out, _ = http(gw, "PATCH", "/admin/api/keys", gw.key, {"id": kid, **body})
    after = keys_now(gw)
    assert status in (200, 400, 404), out
    if status != 200:
        assert set(out["error"]) >= {"message", "type", "param", "code"}
        assert after == before  # a refused change changes nothing
        return
    assert kid == target and body
    row = after[target]
    for name, value in out["key"].items():
        assert row[name] == value  # what the answer says is what is stored
    unchanged = set(before[target]) - set(body)
    assert {n: row[n] for n in unchanged} == {n: before[target][n] for n in unchanged}


def test_the_admin_env_key_is_accepted_too(tmp_path: Path) -> None:
    g = start_gateway(write_config(tmp_path), env={"BASTION_ADMIN_KEY": "env-admin-secret"})
    try:
        status, out, _ = http(g, "GET", "/admin/api/keys", "env-admin-secret")
        assert status == 200 and len(out["keys"]) == 1  # the key start_gateway made
    finally:
        stop(g.proc)

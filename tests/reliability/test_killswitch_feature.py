"""A feature switch stops every call the budget counts under that feature, and says who flipped it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.asgi import asgi_request
from tests.conftest import sim_models

from bastion.call import Call, Principal
from bastion.config import Config
from bastion.gateway import Gateway
from bastion.providers.base import Format
from bastion.reliability.killswitch import Switch, covering_keys, set_kill
from bastion.server.app import create_app
from bastion.store import KeyRecord

ADMIN = "bst-killswitch-admin-secret"
USER = "bst-killswitch-user-secret"
CONFIGURED = ("default", "drafts", "search")
BODY = orjson.dumps(
    {"model": "claude-sonnet-5", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
)


def _config(tmp: Path) -> Config:
    return Config.model_validate(
        {
            "store": {"url": f"sqlite:///{tmp / 'records.db'}"},
            "state": {"url": "memory://"},
            "observability": {"spill_path": str(tmp / "spill.jsonl")},
            "providers": {"sim": {"kind": "sim"}},
            "models": sim_models(),
            "features": {
                "default": {"degraded": {"mode": "message", "message": "AI is off, sorry"}},
                "drafts": {},
                "search": {},
            },
        }
    )


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    async with Gateway(_config(tmp_path)) as g:
        await g.store.create_key(KeyRecord.from_secret(ADMIN, name="admin", roles=("admin",)))
        await g.store.create_key(KeyRecord.from_secret(USER, name="app"))
        yield g


async def _call(app: Any, feature: str | None) -> tuple[int, dict[str, str], dict[str, Any]]:
    hs = {"x-api-key": USER, "anthropic-version": "2023-06-01", "content-type": "application/json"}
    if feature is not None:
        hs["x-bastion-feature"] = feature
    status, headers, body = await asgi_request(app, "POST", "/v1/messages", BODY, hs)
    return status, headers, orjson.loads(body)


async def test_killing_default_stops_calls_that_name_an_unconfigured_feature(gw: Gateway) -> None:
    app = create_app(gw)
    assert (await _call(app, "anything-else"))[0] == 200
    await set_kill(gw.state, True, who="oncall", feature="default")
    gw.kill_switch.invalidate()
    for name in ("anything-else", "default", None, "DRAFTS", "drafts "):
        status, headers, body = await _call(app, name)
        # the default feature's degraded answer, as the budget would count this call
        assert status == 200 and headers["x-bastion-degraded"] == "kill_switch", name
        assert body["content"][0]["text"] == "AI is off, sorry"
    # configured features are their own switches
    status, headers, _ = await _call(app, "drafts")
    assert status == 200 and "x-bastion-degraded" not in headers


async def test_killing_a_configured_feature_leaves_the_others_serving(gw: Gateway) -> None:
    app = create_app(gw)
    await set_kill(gw.state, True, who="oncall", feature="search")
    gw.kill_switch.invalidate()
    status, _, body = await _call(app, "search")
    assert status == 503 and body["error"]["type"] == "ai_unavailable"
    for name in ("drafts", "anything-else", None):
        status, headers, _ = await _call(app, name)
        assert status == 200 and "x-bastion-degraded" not in headers, name


async def test_a_switch_on_an_unconfigured_name_still_stops_that_name(gw: Gateway) -> None:
    await set_kill(gw.state, True, who="oncall", feature="beta-bot")
    gw.kill_switch.invalidate()
    body = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "x"}]}
    # counted under default, so it gets default's degraded answer
    killed = await gw.chat_completions(body, feature="beta-bot")
    assert killed["choices"][0]["message"]["content"] == "AI is off, sorry"
    served = await gw.chat_completions(body, feature="other")
    assert served["choices"][0]["message"]["content"] != "AI is off, sorry"


def _counted(feature: str | None) -> str:
    """The budget's rule, restated: an unconfigured name is the default feature."""
    return feature if feature in CONFIGURED else "default"


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    sent=st.one_of(
        st.none(), st.sampled_from(CONFIGURED), st.text(max_size=30), st.from_regex(r"[a-z-]{1,12}")
    ),
    killed=st.sampled_from(CONFIGURED),
)
def test_no_feature_name_escapes_the_switch_of_the_feature_it_is_counted_under(
    sent: str | None, killed: str
) -> None:
    call = Call(
        request_id="r1",
        trace_id="t1",
        span_id="s1",
        client_format=Format.ANTHROPIC,
        principal=Principal(key_id="k1", name="app"),
        body={},
        requested_model="m",
        stream=False,
        feature=sent,
    )
    keys = covering_keys(call, CONFIGURED)
    if _counted(sent) == killed:
        assert f"kill:feature:{killed}" in keys
    assert "kill:global" in keys and "kill:key:k1" in keys


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sent=st.one_of(
        st.sampled_from(CONFIGURED),
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=20),
    )
)
async def test_random_feature_headers_never_escape_a_kill_of_default_through_the_gateway(
    tmp_path_factory: pytest.TempPathFactory, sent: str
) -> None:
    tmp = tmp_path_factory.mktemp("kill")
    async with Gateway(_config(tmp)) as g:
        await set_kill(g.state, True, who="oncall", feature="default")
        reply = await g.messages(orjson.loads(BODY), feature=sent)
        degraded = reply["content"][0]["text"] == "AI is off, sorry"
        assert degraded == (_counted(sent) == "default"), sent


def test_switch_shows_when_in_utc_and_how_long_ago() -> None:
    s = Switch("global", "oncall", 1_700_000_000.0, "CLI on host")
    assert s.at_iso() == "2023-11-14T22:13:20Z"
    assert s.since(1_700_000_012.4) == "12 s ago"
    assert s.since(1_700_000_000 + 5 * 60 + 3) == "5 min ago"
    assert s.since(1_700_000_000 + 3 * 3600) == "3 h ago"
    assert s.describe(1_700_000_012.0) == (
        "global: on (by oncall at 2023-11-14T22:13:20Z, 12 s ago) via CLI on host"
    )
    unknown = Switch("feature:x", None, None)
    assert unknown.describe(0.0) == "feature:x: on (by ? at ?, at an unknown time)"


async def test_admin_api_and_dashboard_show_who_turned_each_switch_on_and_when(
    gw: Gateway,
) -> None:
    app = create_app(gw)
    admin = {"x-api-key": ADMIN, "content-type": "application/json"}
    before = time.time()
    status, _, raw = await asgi_request(
        app, "POST", "/admin/kill", orjson.dumps({"on": True, "who": "alice"}), admin
    )
    assert status == 200, raw
    status, _, raw = await asgi_request(
        app, "POST", "/admin/kill", orjson.dumps({"on": True, "feature": "ghost"}), admin
    )
    assert status == 200 and "counted under 'default'" in orjson.loads(raw)["note"]

    status, _, raw = await asgi_request(app, "GET", "/admin/kill", b"", admin)
    assert status == 200
    switches = orjson.loads(raw)["switches"]
    assert switches.keys() == {"global", "feature:ghost"}
    g = switches["global"]
    admin_key_id = (await gw.keys.resolve(ADMIN)).key_id
    assert g["on"] is True and g["who"] == "alice"
    assert g["via"] == f"admin API (key {admin_key_id})"
    assert before <= g["at"] <= time.time()
    assert g["at_iso"].endswith("Z") and g["at_iso"][:4].isdigit()
    assert 0 <= g["ago_seconds"] < 5 and g["since"].endswith("s ago")
    assert switches["feature:ghost"]["who"] == "admin"  # the key's name when no who is given

    status, _, raw = await asgi_request(app, "GET", "/admin/api/summary", b"", {"x-api-key": ADMIN})
    assert status == 200, raw
    kill = orjson.loads(raw)["kill"]["switches"]
    assert kill["global"]["who"] == "alice" and kill["global"]["at_iso"] == g["at_iso"]

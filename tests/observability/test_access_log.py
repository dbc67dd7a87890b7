"""Every call shows in the serve terminal, the metrics and recent calls — refusals included.

A real `bastion serve` process; its stderr goes to a file the tests read. Requests cover the
statuses that used to appear nowhere: 401 (no key), 404 (no such model, no such route) and 400
(a body that is not JSON), next to a served call.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.conftest import RunningGateway, start_gateway, stop, write_config

from bastion.observability.access import AccessEntry, AccessLog


def _lines(gw: RunningGateway, needle: str, timeout: float = 10.0) -> list[str]:
    """Log lines containing ``needle``, waiting until at least one shows."""
    end = time.monotonic() + timeout
    while True:
        found = [ln for ln in gw.log().splitlines() if needle in ln]
        if found or time.monotonic() > end:
            return found
        time.sleep(0.05)


def _recent(gw: RunningGateway, request_id: str, timeout: float = 10.0) -> dict[str, object]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r = httpx.get(
            f"{gw.url}/admin/api/calls?limit=200", headers={"x-api-key": gw.key}, timeout=5
        )
        assert r.status_code == 200, r.text
        for row in r.json()["calls"]:
            if row["request_id"] == request_id:
                return dict(row)
        time.sleep(0.1)
    raise AssertionError(f"{request_id} never reached recent calls")


@pytest.fixture(scope="module")
def text_gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    gw = start_gateway(write_config(tmp_path_factory.mktemp("access_text")))
    yield gw
    stop(gw.proc)


@pytest.fixture(scope="module")
def json_gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    tmp = tmp_path_factory.mktemp("access_json")
    gw = start_gateway(write_config(tmp, server={"log_format": "json"}))
    yield gw
    stop(gw.proc)


def test_a_served_call_gets_one_text_line_with_its_numbers(text_gw: RunningGateway) -> None:
    client = openai.OpenAI(base_url=f"{text_gw.url}/v1", api_key=text_gw.key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4.1", messages=[{"role": "user", "content": "Hello"}]
    )
    rid = raw.headers["x-request-id"]
    lines = _lines(text_gw, rid)
    assert len(lines) == 1, lines
    line = lines[0]
    assert " 200 " in line and "key=test-" in line and "feature=default" in line
    assert "gpt-4.1→" in line  # model → deployment
    assert "tokens=" in line and "cost=$" in line and "ms" in line


def test_refusals_before_a_call_are_logged_counted_and_recorded(text_gw: RunningGateway) -> None:
    hs = {"authorization": f"Bearer {text_gw.key}", "content-type": "application/json"}
    bad_key = httpx.post(
        f"{text_gw.url}/v1/chat/completions",
        headers={"authorization": "Bearer bst-not-a-key"},
        json={"model": "gpt-4.1", "messages": []},
    )
    assert bad_key.status_code == 401
    no_route = httpx.get(f"{text_gw.url}/v1/nothing-here", headers=hs)
    assert no_route.status_code == 404
    not_json = httpx.post(f"{text_gw.url}/v1/chat/completions", headers=hs, content=b"{nope")
    assert not_json.status_code == 400
    no_model = httpx.post(
        f"{text_gw.url}/v1/chat/completions",
        headers=hs,
        json={"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert no_model.status_code == 404

    # the terminal: a line for each, with its status and reason
    assert _lines(text_gw, " 401 ") and "error=AuthenticationFailed" in _lines(text_gw, " 401 ")[-1]
    assert any("GET /v1/nothing-here" in ln for ln in _lines(text_gw, " 404 "))
    for resp, status in ((not_json, 400), (no_model, 404)):
        rid = resp.headers["x-request-id"]  # the error answer names its record
        (line,) = _lines(text_gw, rid)
        assert f" {status} " in line and "reason=" in line
        # recent calls: an authenticated caller's refusal is on the record with its reason
        row = _recent(text_gw, rid)
        assert row["status"] == status
        assert row["error_type"] in ("InvalidRequest", "NotFound")
    # the unauthenticated 401 is never written to the store (a flood must not fill it)
    assert "x-request-id" not in bad_key.headers

    metrics = httpx.get(f"{text_gw.url}/metrics", headers=hs).text
    refusals = [ln for ln in metrics.splitlines() if ln.startswith("bastion_guard_refusals_total")]
    assert any(
        'guard="auth"' in ln and 'error_type="AuthenticationFailed"' in ln for ln in refusals
    ), refusals
    assert any('guard="routing"' in ln and 'error_type="NotFound"' in ln for ln in refusals), (
        refusals
    )
    assert any('guard="request"' in ln and 'error_type="InvalidRequest"' in ln for ln in refusals)


def test_json_lines_parse_and_scrub_a_user_email(json_gw: RunningGateway) -> None:
    client = openai.OpenAI(base_url=f"{json_gw.url}/v1", api_key=json_gw.key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4.1",
        messages=[{"role": "user", "content": "Hello"}],
        user="alice.smith@example.com",
    )
    rid = raw.headers["x-request-id"]
    (line,) = _lines(json_gw, rid)
    entry = json.loads(line)
    assert entry["request_id"] == rid and entry["status"] == 200
    assert entry["model"] == "gpt-4.1" and entry["deployment"]
    assert entry["input_tokens"] > 0 and entry["latency_ms"] >= 0
    assert "user" in entry and "alice.smith@example.com" not in line
    # every line the process wrote after start-up is JSON, access lines and the rest
    for ln in json_gw.log().splitlines():
        if ln.startswith("{"):
            json.loads(ln)


def test_log_level_warning_silences_access_lines(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, server={"log_level": "warning"})
    gw = start_gateway(cfg)
    try:
        r = httpx.post(
            f"{gw.url}/v1/chat/completions",
            headers={"authorization": f"Bearer {gw.key}"},
            json={"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert r.status_code == 200
        time.sleep(0.3)
        assert r.headers["x-request-id"] not in gw.log()
    finally:
        stop(gw.proc)


_text = st.text(min_size=0, max_size=40)


@settings(max_examples=300, deadline=None)
@given(user=_text, model=_text, key=_text, reason=_text, path=_text)
def test_no_client_chosen_value_can_forge_a_second_line(
    user: str, model: str, key: str, reason: str, path: str
) -> None:
    entry = AccessEntry(
        ts=time.time(),
        request_id="req_1",
        status=400,
        key=key,
        user=user,
        model=model or None,
        path=path,
        reason=reason,
        flags=("degraded",),
    )
    for fmt in ("text", "json"):
        rendered = AccessLog(fmt).render(entry)  # type: ignore[arg-type]
        assert "\n" not in rendered and "\r" not in rendered
        if fmt == "text":
            assert len(rendered.splitlines()) == 1
        else:
            back = json.loads(rendered)
            assert back["user"] == user and back["reason"] == reason

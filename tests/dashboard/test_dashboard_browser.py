"""The dashboard in headless Chromium against a real `bastion serve`, seeded by real SDK calls."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx2 as httpx
import openai
import pytest
from tests.conftest import RunningGateway, start_gateway, stop, write_config

from bastion.clock import DayClock
from bastion.store import open_store

playwright_sync = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MODELS: dict[str, Any] = {
    "claude-sonnet-5": {"deployments": [{"provider": "sim", "model": "claude-sonnet-5"}]},
    "gpt-4.1-mini": {"deployments": [{"provider": "sim", "model": "gpt-4.1-mini"}]},
    # every answer waits 300 ms for its first token, against the default feature's 100 ms budget
    "slow": {
        "deployments": [
            {"provider": "sim", "model": "slow", "headers": {"x-sim-fault": "slow_first:300"}}
        ]
    },
    "broken": {
        "deployments": [
            {
                "provider": "sim",
                "model": "claude-sonnet-5",
                "headers": {"x-sim-fault": "status:400"},
            }
        ]
    },
}
DRAFTS = {"X-Bastion-Feature": "drafts"}
EMAIL = "jane@example.com"
PII_REPLY = f"[[sim:reply=mail me at {EMAIL}]]"  # the PII guard flags the answer


@dataclass
class Seeded:
    gw: RunningGateway
    store_url: str
    trace_id: str
    trace_request_ids: list[str]
    request_ids: list[str]
    total_calls: int
    pii_request_id: str


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    """A gateway with a $5 cap on ``drafts``, holding calls made through both official SDKs.

    Review sampling is off, so the review queue holds exactly the calls a guard flagged; the
    default feature's first-token budget is 100 ms, which the ``slow`` model always misses.
    """
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium is not installed at {CHROMIUM}")
    tmp = tmp_path_factory.mktemp("dash")
    cfg = write_config(
        tmp,
        models=MODELS,
        features={
            "default": {"latency_budget": {"first_token_ms": 100}},
            "drafts": {"daily_budget_usd": 5},
        },
        observability={"review_rate": 0.0},
    )
    gw = start_gateway(cfg)
    try:
        yield _seed(gw, f"sqlite:///{tmp / 'bastion.db'}")
    finally:
        stop(gw.proc)


def _seed(gw: RunningGateway, store_url: str) -> Seeded:
    ac = anthropic.Anthropic(base_url=gw.url, api_key=gw.key, max_retries=0)
    oc = openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.key, max_retries=0)
    trace_id = secrets.token_hex(16)
    traced = {**DRAFTS, "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}
    # one list for both SDKs, whose message types differ
    msg: Any = [{"role": "user", "content": "Draft a reply about a refund"}]
    # older than the calls below: two over the default first-token budget, one within it
    for model in ("slow", "slow", "claude-sonnet-5"):
        ac.messages.create(model=model, max_tokens=20, messages=msg)
    raw = ac.messages.with_raw_response.create(
        model="claude-sonnet-5",
        max_tokens=40,
        messages=[{"role": "user", "content": PII_REPLY}],
        extra_headers=DRAFTS,
    )
    pii_id = raw.headers["x-request-id"]
    ids: list[str] = []
    raw = ac.messages.with_raw_response.create(
        model="claude-sonnet-5", max_tokens=40, messages=msg, extra_headers=traced
    )
    ids.append(raw.headers["x-request-id"])
    with oc.chat.completions.with_streaming_response.create(
        model="gpt-4.1-mini", max_tokens=40, messages=msg, stream=True, extra_headers=traced
    ) as resp:
        ids.append(resp.headers["x-request-id"])
        for _ in resp.iter_lines():
            pass
    trace_ids = list(ids)
    for _ in range(2):
        raw = ac.messages.with_raw_response.create(
            model="claude-sonnet-5", max_tokens=40, messages=msg, extra_headers=DRAFTS
        )
        ids.append(raw.headers["x-request-id"])
    with pytest.raises(anthropic.BadRequestError):
        ac.messages.create(model="broken", max_tokens=40, messages=msg, extra_headers=DRAFTS)
    total = len(ids) + 5
    _wait_for_calls(gw, total)
    return Seeded(gw, store_url, trace_id, trace_ids, ids, total, pii_id)


def _wait_for_calls(
    gw: RunningGateway, n: int, *, until: str | None = None, timeout: float = 10.0
) -> None:
    """The recorder writes in the background: poll the API until the calls are in the store."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r = httpx.get(
            gw.url + "/admin/api/calls", headers={"x-api-key": gw.key}, params={"limit": 100}
        )
        calls = r.json()["calls"] if r.status_code == 200 else []
        if len(calls) >= n and (until is None or any(c["request_id"] == until for c in calls)):
            return
        time.sleep(0.1)
    raise TimeoutError(f"fewer than {n} calls recorded after {timeout}s")


def _ledger_spend(store_url: str) -> dict[str | None, float]:
    """Today's spend per feature, read from the ledger (None: calls without a feature)."""

    async def read() -> dict[str | None, float]:
        async with open_store(store_url) as store:
            by_feature: dict[str | None, float] = await store.spend_by_day(
                DayClock("UTC").day(), "feature"
            )
            return by_feature

    # Playwright's sync API runs an event loop in this thread: read the store from another one
    with ThreadPoolExecutor(1) as pool:
        spend: dict[str | None, float] = pool.submit(asyncio.run, read()).result()
    return spend


@pytest.fixture(scope="module")
def browser(seeded: Seeded) -> Iterator[Any]:
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh context per test, so sessionStorage (the admin key) never leaks between tests."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    ctx.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def _login(page: Any, gw: RunningGateway, key: str | None = None) -> None:
    page.goto(gw.url + "/dashboard")
    page.fill("#key-input", key or gw.key)
    page.click("#login-form button[type=submit]")


def _sdk_call(gw: RunningGateway) -> tuple[int, dict[str, Any]]:
    oc = openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.key, max_retries=0, timeout=5)
    try:
        oc.chat.completions.create(
            model="gpt-4.1-mini",
            max_tokens=20,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers=DRAFTS,
        )
    except openai.APIStatusError as exc:
        return exc.status_code, exc.response.json()
    return 200, {}


def test_unauthenticated_visit_is_refused_and_shows_no_data(seeded: Seeded, page: Any) -> None:
    gw = seeded.gw
    for path in ("summary", "latency", "calls", "breakers", "stages", "review"):
        r = httpx.get(f"{gw.url}/admin/api/{path}")
        assert r.status_code == 401, path
        assert "API key" in r.json()["error"]["message"]
    for path in ("review/mark", "review/export"):
        r = httpx.post(
            f"{gw.url}/admin/api/{path}",
            json={"request_id": seeded.pii_request_id, "verdict": "good"},
        )
        assert r.status_code == 401, path
    page.goto(gw.url + "/dashboard")
    assert page.locator("#login").is_visible()
    assert page.locator("#app").is_hidden()
    assert page.locator("#calls-body tr").count() == 0
    assert page.locator(".spend-row").count() == 0
    assert page.locator(".review-item, .stage-feature").count() == 0
    assert "drafts" not in page.inner_text("body")

    _login(page, gw, key="bst-not-a-real-key")
    page.wait_for_function("document.getElementById('login-error').textContent.includes('401')")
    assert page.locator("#app").is_hidden()
    assert page.locator("#calls-body tr").count() == 0
    assert page.evaluate("sessionStorage.length") == 0
    assert "drafts" not in page.inner_text("body")


def test_spend_chart_shows_drafts_spend_matching_the_ledger(seeded: Seeded, page: Any) -> None:
    _login(page, seeded.gw)
    row = page.locator('.spend-row[data-feature="drafts"]')
    row.wait_for()
    spend = _ledger_spend(seeded.store_url)
    ledger = spend.get("drafts", 0.0)
    assert ledger > 0
    assert float(row.get_attribute("data-spent")) == pytest.approx(ledger, rel=1e-9, abs=1e-12)
    assert float(row.get_attribute("data-cap")) == 5.0
    assert row.locator(".spent").text_content() == f"${ledger:.6f}"
    assert "of $5.00" in (row.locator(".cap").text_content() or "")
    fill = float(row.locator(".bar-fill").get_attribute("width"))
    assert 0 < fill < 20, "a few calls against a $5 cap are a sliver of the bar"
    # the tile is the spend of the selected range (the last hour: every seeded call), with
    # today's total beside it; both read from the ledger
    tile = page.locator('[data-kpi="spend-total"]')
    assert tile.get_attribute("data-range") == "60"
    assert tile.locator(".kpi-value").text_content() == f"${sum(spend.values()):.6f}"
    assert f"today ${sum(spend.values()):.6f}" in (tile.locator(".kpi-sub").text_content() or "")
    assert spend.get(None, 0.0) > 0


def test_recent_calls_table_lists_calls_newest_first_and_trace_lookup_works(
    seeded: Seeded, page: Any
) -> None:
    _login(page, seeded.gw)
    rows = page.locator("#calls-body tr.call-row")
    rows.first.wait_for()
    assert rows.count() >= seeded.total_calls
    shown = [rows.nth(i).get_attribute("data-request-id") for i in range(rows.count())]
    for rid in seeded.request_ids:
        assert rid in shown
    # newest first: the failing call was made last, then the seeded calls in reverse
    assert rows.first.get_attribute("data-status") == "400"
    assert "failed" in (rows.first.get_attribute("class") or "")
    order = [shown.index(rid) for rid in seeded.request_ids]
    assert order == sorted(order, reverse=True)

    page.fill("#trace-input", seeded.trace_id)
    page.click("#trace-form button[type=submit]")
    calls = page.locator("#trace-result tr.trace-call")
    calls.first.wait_for()
    assert [calls.nth(i).get_attribute("data-request-id") for i in range(calls.count())] == (
        seeded.trace_request_ids
    )
    assert "Draft a reply about a refund" in (page.text_content("#trace-result") or "")

    other = seeded.request_ids[-1]
    link = page.locator(f'#calls-body tr[data-request-id="{other}"] a.trace-link')
    other_trace = link.get_attribute("data-trace-id")
    assert link.get_attribute("href") == f"#trace={other_trace}"
    link.click()
    page.wait_for_function(
        "id => document.getElementById('trace-result').dataset.traceId !== id", arg=seeded.trace_id
    )
    page.locator(f'#trace-result tr.trace-call[data-request-id="{other}"]').wait_for()
    assert page.locator("#trace-result tr.trace-call").count() == 1
    assert page.evaluate("location.hash") == f"#trace={other_trace}"
    # the trace view has its own address: reloading it (or sharing it) opens the same trace
    page.reload()
    page.locator(f'#trace-result tr.trace-call[data-request-id="{other}"]').wait_for()
    assert page.get_attribute("#trace-result", "data-trace-id") == other_trace
    page.click("#trace-result .trace-close")
    assert page.locator("#trace-result tr.trace-call").count() == 0
    assert page.evaluate("location.hash") == ""


def test_charts_draw_latency_ttft_and_rates(seeded: Seeded, page: Any) -> None:
    _login(page, seeded.gw)
    page.locator('#latency-chart [data-series="latency_p95"] circle').first.wait_for()
    for series in ("latency_p50", "latency_p95", "ttft_p50", "ttft_p95"):
        assert page.locator(f'#latency-chart [data-series="{series}"] circle').count() >= 1
    error_dots = page.locator('#rates-chart [data-series="error_rate"] circle')
    assert error_dots.count() >= 1
    assert (
        max(float(error_dots.nth(i).get_attribute("data-value")) for i in range(error_dots.count()))
        > 0
    )
    assert page.locator('[data-kpi="error-rate"] .kpi-value').text_content() != "0.0%"
    assert page.locator("#breakers li").count() >= 2
    # the PII answer was scored: the scorer table shows, and "no scores yet" does not
    page.locator('#quality-body tr[data-scorer="no_pii"]').first.wait_for()
    assert page.locator("#quality-table").is_visible()
    assert page.locator("#evals-empty").is_hidden()
    assert "No eval scores yet" not in page.inner_text("#app")
    page.wait_for_timeout(200)
    page.screenshot(path="/tmp/dashboard.png", full_page=True)


def test_kill_switch_toggle_stops_and_restores_calls(seeded: Seeded, page: Any) -> None:
    gw = seeded.gw
    _login(page, gw)
    toggle = page.locator("#kill-toggle")
    page.wait_for_selector('#kill-state[data-on="false"]')
    assert _sdk_call(gw)[0] == 200
    try:
        # a click alone kills nothing: a modal asks for the word, and Cancel or Escape leave AI on
        toggle.click()
        dialog = page.locator("#kill-confirm")
        dialog.wait_for()
        assert page.locator("#kill-confirm-go").is_disabled()
        page.fill("#kill-confirm-input", "kill all")
        assert page.locator("#kill-confirm-go").is_disabled()
        page.click("#kill-confirm-cancel")
        dialog.wait_for(state="hidden")
        toggle.click()
        dialog.wait_for()
        assert page.input_value("#kill-confirm-input") == "", "a cancelled word is not kept"
        page.fill("#kill-confirm-input", "KILL")
        page.keyboard.press("Escape")
        dialog.wait_for(state="hidden")
        page.wait_for_timeout(300)
        assert _sdk_call(gw)[0] == 200
        assert page.get_attribute("#kill-state", "data-on") == "false"

        toggle.click()
        page.fill("#kill-confirm-input", "KILL")
        page.click("#kill-confirm-go")
        clicked = time.monotonic()
        status, body = _sdk_call(gw)
        while status != 503 and time.monotonic() - clicked < 1.0:
            time.sleep(0.05)
            status, body = _sdk_call(gw)
        assert status == 503, "the kill switch did not stop calls within 1 s"
        assert body["error"]["type"] == "ai_unavailable"
        assert time.monotonic() - clicked < 1.0
        page.wait_for_selector('#kill-state[data-on="true"]')
        assert "AI OFF" in page.inner_text("#kill-state")
        # who turned it off, through what, and when: UTC as the CLI prints it, and how long ago
        assert re.search(
            r"killed by \S+ via admin API \(key \S+\) at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(\d+ s ago\)",
            page.inner_text("#kill-state"),
        ), page.inner_text("#kill-state")

        toggle.click()  # turning AI back on asks nothing
        page.wait_for_selector('#kill-state[data-on="false"]')
        assert page.locator("#kill-confirm").is_hidden()
        assert _sdk_call(gw)[0] == 200
    finally:
        httpx.post(gw.url + "/admin/kill", headers={"x-api-key": gw.key}, json={"on": False})


def test_recorded_text_is_shown_as_text_never_run_as_markup(seeded: Seeded, page: Any) -> None:
    gw = seeded.gw
    evil = '<img src=x onerror="window.__pwned=1">'
    r = httpx.post(
        gw.url + "/v1/messages",
        headers={"x-api-key": gw.key, "anthropic-version": "2023-06-01", "x-bastion-feature": evil},
        json={
            "model": "claude-sonnet-5",
            "max_tokens": 20,
            # the answer repeats the markup next to an address, so the call is queued for review
            "messages": [{"role": "user", "content": f"{evil} [[sim:reply={evil} {EMAIL}]]"}],
        },
    )
    assert r.status_code == 200
    rid = r.headers["x-request-id"]
    _wait_for_calls(gw, 1, until=rid)
    _login(page, gw)
    page.wait_for_function("() => document.querySelectorAll('.spend-row').length >= 2")
    features = page.eval_on_selector_all(".spend-row", "els => els.map(e => e.dataset.feature)")
    assert evil in features
    page.click(f'#calls-body tr[data-request-id="{rid}"] .trace-link')
    page.locator("#trace-result tr.trace-call").first.wait_for()
    item = page.locator(f'.review-item[data-request-id="{rid}"]')
    item.wait_for()
    page.wait_for_function(
        "f => [...document.querySelectorAll('.stage-feature')].some(e => e.dataset.feature === f)",
        arg=evil,
    )
    page.wait_for_timeout(200)
    assert page.evaluate("window.__pwned") is None
    assert (
        page.locator(
            "#calls-body img, #spend-chart img, #trace-result img, #review-list img, #stages img"
        ).count()
        == 0
    )
    assert evil in page.inner_text("#calls-body")
    assert evil in (page.text_content("#trace-result") or "")
    assert evil in item.locator("pre.review-output").inner_text()
    assert item.locator(".feature").inner_text() == evil


def test_review_queue_marks_a_flagged_call_bad_and_the_mark_persists(
    seeded: Seeded, page: Any
) -> None:
    gw, rid = seeded.gw, seeded.pii_request_id
    _login(page, gw)
    item = page.locator(f'.review-item[data-request-id="{rid}"]')
    item.wait_for()
    assert item.get_attribute("data-status") == "pending"
    assert item.locator(".feature").inner_text() == "drafts"
    assert item.locator(".model").inner_text() == "claude-sonnet-5"
    assert "flagged: pii" in item.locator(".reasons").inner_text()
    assert item.locator(".trace-link").get_attribute("data-trace-id")
    # the guard flagged the answer; the queue holds it scrubbed
    output = item.locator("pre.review-output").inner_text()
    assert "mail me at" in output and EMAIL not in output
    assert EMAIL not in page.inner_text("#review-list")
    assert item.locator(".export").is_disabled(), "a pending item is not an eval case yet"

    note = "Leaks the customer's address"
    item.locator(".review-note").fill(note)
    item.locator(".mark-bad").click()
    page.locator(f'.review-item[data-request-id="{rid}"][data-status="bad"]').wait_for()

    page.reload()
    marked = page.locator(f'.review-item[data-request-id="{rid}"]')
    marked.wait_for()
    assert marked.get_attribute("data-status") == "bad"
    assert marked.locator(".review-status").inner_text() == "bad"
    assert marked.locator(".review-note-text").inner_text() == note
    assert marked.locator(".review-note").input_value() == note
    r = httpx.get(
        gw.url + "/admin/api/review", headers={"x-api-key": gw.key}, params={"status": "bad"}
    )
    assert [(i["request_id"], i["note"]) for i in r.json()["items"]] == [(rid, note)]

    marked.locator(".export").click()
    exported = marked.locator(".export-json")
    exported.wait_for()
    case = json.loads(exported.inner_text())
    assert case["id"] == rid and case["label"] == "bad" and case["note"] == note
    assert "mail me at" in case["rejected"] and EMAIL not in exported.inner_text()

    page.select_option("#review-status", "pending")
    page.wait_for_function(
        "id => !document.querySelector(`.review-item[data-request-id='${id}']`)", arg=rid
    )
    page.select_option("#review-status", "all")
    marked.wait_for()


def test_stage_panel_shows_first_token_over_budget(seeded: Seeded, page: Any) -> None:
    _login(page, seeded.gw)
    row = page.locator('.stage-feature[data-feature="default"] tr[data-stage="first_token"]')
    row.wait_for()
    assert row.get_attribute("data-over") == "true"
    assert float(row.get_attribute("data-budget")) == 100
    assert float(row.get_attribute("data-p95")) >= 300
    # two of the three default-feature calls waited 300 ms for their first token
    assert float(row.get_attribute("data-over-rate")) == pytest.approx(2 / 3)
    assert "over" in row.locator(".p95").inner_text()
    assert "(2)" in row.locator(".over-share").inner_text()
    drafts = page.locator('.stage-feature[data-feature="drafts"] tr[data-stage="first_token"]')
    assert drafts.get_attribute("data-over") == "false"
    assert float(drafts.get_attribute("data-budget")) == 800
    page.wait_for_timeout(200)
    page.screenshot(path="/tmp/dashboard2.png", full_page=True)

"""The dashboard's range, spend breakdown, live breakers and layout, in headless Chromium.

A real `bastion serve` with its counters in Redis (a prefix of its own), seeded through the
official SDK, plus one call and its spend written three hours back so the range shows.
Screenshots go to the test's temporary folder, or to ``$BASTION_DASHBOARD_SCREENSHOTS``.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anthropic
import pytest
import redis
from playwright import sync_api as playwright_sync
from tests.conftest import RunningGateway, start_gateway, stop, write_config

from bastion.clock import DayClock
from bastion.state import BreakerPolicy, RedisCounterStore
from bastion.store import CallRecord, LedgerEntry, RecordStore, open_store

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run"]
REDIS_URL = "redis://127.0.0.1:6379/0"
SPARE = "sim/spare-model#0"  # a deployment no call uses: tripping it changes nothing else
MODELS: dict[str, Any] = {
    "claude-sonnet-5": {"deployments": [{"provider": "sim", "model": "claude-sonnet-5"}]},
    "gpt-4.1-mini": {"deployments": [{"provider": "sim", "model": "gpt-4.1-mini"}]},
    "spare": {"deployments": [{"provider": "sim", "model": "spare-model"}]},
}
OLD_AGE = 3 * 3600.0
T = TypeVar("T")


@dataclass
class Served:
    gw: RunningGateway
    store_url: str
    prefix: str


def _in_thread(fn: Callable[[RecordStore], Awaitable[T]], url: str) -> T:
    """Run ``fn`` on the store from another thread: Playwright's sync API owns this one's loop."""

    async def go() -> T:
        async with open_store(url) as store:
            return await fn(store)

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, go()).result()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Debian's Chromium is required at {CHROMIUM} (apt-get install chromium)")
    tmp = tmp_path_factory.mktemp("dash-views")
    prefix = f"bastion-dashview-{uuid.uuid4().hex[:10]}"
    cfg = write_config(
        tmp,
        models=MODELS,
        state={"url": REDIS_URL, "prefix": prefix},
        features={"drafts": {"daily_budget_usd": 5}},
    )
    gw = start_gateway(cfg)
    store_url = f"sqlite:///{tmp / 'bastion.db'}"
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3, socket_timeout=3)
    try:
        _seed(gw, store_url)
        yield Served(gw, store_url, prefix)
    finally:
        stop(gw.proc)
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def _seed(gw: RunningGateway, store_url: str) -> None:
    ac = anthropic.Anthropic(base_url=gw.url, api_key=gw.key, max_retries=0)
    msg: Any = [{"role": "user", "content": "Summarise the refund policy"}]
    for user, model, feature in (
        ("ana", "claude-sonnet-5", "drafts"),
        ("ana", "claude-sonnet-5", "drafts"),
        ("bo", "gpt-4.1-mini", None),
    ):
        headers = {"x-bastion-user": user, **({"x-bastion-feature": feature} if feature else {})}
        ac.messages.create(model=model, max_tokens=30, messages=msg, extra_headers=headers)
    then = time.time() - OLD_AGE

    async def backdate(store: RecordStore) -> None:
        # a call made three hours ago, with its spend: inside 24 hours, outside the last hour
        await store.insert_calls(
            [
                CallRecord(
                    request_id="old-call",
                    trace_id="old-trace",
                    ts=then,
                    api_format="anthropic",
                    requested_model="claude-sonnet-5",
                    user_id="old-user",
                    feature="archive",
                )
            ]
        )
        await store.insert_ledger(
            [
                LedgerEntry(
                    request_id="old-call",
                    ts=then,
                    day=DayClock("UTC").day(then),
                    model="claude-sonnet-5",
                    user_id="old-user",
                    feature="archive",
                    cost_usd=0.5,
                )
            ]
        )

    _in_thread(backdate, store_url)
    end = time.monotonic() + 10
    while time.monotonic() < end:
        n = _in_thread(lambda s: s.recent_calls(10), store_url)
        if len(n) >= 4:
            return
        time.sleep(0.1)
    raise TimeoutError("the seeded calls were not recorded within 10 s")


@pytest.fixture(scope="module")
def browser(served: Served) -> Iterator[Any]:
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _page(browser: Any, width: int, height: int) -> tuple[Any, Any, list[str]]:
    ctx = browser.new_context(viewport={"width": width, "height": height})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    return ctx, pg, errors


def _open(page: Any, gw: RunningGateway) -> None:
    page.goto(gw.url + "/dashboard")
    page.fill("#key-input", gw.key)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("body[data-state=ready]")


def _spend_by(page: Any, by: str) -> dict[str, float]:
    rows = page.locator(f'.spend-by[data-by="{by}"] tr.spend-by-row')
    return {
        rows.nth(i).locator("td.who").inner_text(): float(rows.nth(i).get_attribute("data-spend"))
        for i in range(rows.count())
    }


def _ledger(url: str, start: float, end: float) -> dict[str | None, float]:
    return _in_thread(lambda s: s.spend_between(start, end, "user_id"), url)


def test_the_selected_range_drives_every_tile_chart_and_table(served: Served, browser: Any) -> None:
    ctx, page, errors = _page(browser, 1440, 1000)
    try:
        _open(page, served.gw)
        now = time.time()
        for minutes, label, requests in ((60, "last hour", 3), (1440, "last 24 hours", 4)):
            page.select_option("#range", str(minutes))
            page.wait_for_selector(f'body[data-range-minutes="{minutes}"]')
            page.wait_for_function(
                "n => document.querySelector('[data-kpi=requests] .kpi-value')"
                ".textContent === String(n)",
                arg=requests,
            )
            kpis = page.locator(".kpi")
            assert {kpis.nth(i).get_attribute("data-range") for i in range(kpis.count())} == {
                str(minutes)
            }
            assert label in page.inner_text('[data-kpi="requests"] .kpi-sub')
            assert "24 h" not in page.inner_text("#kpis") or minutes == 1440
            labels = page.eval_on_selector_all(".range-label", "els => els.map(e => e.textContent)")
            assert len(labels) >= 5 and set(labels) == {label}
            assert page.locator("#calls-body tr.call-row").count() == requests
            assert (page.locator('#calls-body tr[data-request-id="old-call"]').count() == 1) is (
                minutes == 1440
            )
            # spend by user over the range, as the ledger has it
            ledger = _ledger(served.store_url, now - minutes * 60, time.time() + 1)
            shown = _spend_by(page, "user")
            assert shown == pytest.approx(
                {(u if u is not None else "(no user)"): usd for u, usd in ledger.items()}
            )
            assert ("old-user" in shown) is (minutes == 1440)
            assert {"ana", "bo"} <= shown.keys()
            kpi_spend = page.inner_text('[data-kpi="spend-total"] .kpi-value')
            assert kpi_spend == f"${sum(ledger.values()):.6f}" or kpi_spend == (
                f"${sum(ledger.values()):.4f}"
            )
        keys = _spend_by(page, "key")
        # the gateway's key by its name (not its id), the back-dated entry as having none
        assert [k for k in keys if k.startswith("test-")] and "(no key)" in keys
        assert not [k for k in keys if k.startswith("key_")]
        assert set(_spend_by(page, "model")) == {"claude-sonnet-5", "gpt-4.1-mini"}
        assert set(_spend_by(page, "feature")) == {"drafts", "default", "archive"}
    finally:
        ctx.close()
    assert not errors, errors


def test_a_breaker_another_replica_opened_shows_live(
    served: Served, browser: Any, tmp_path: Path
) -> None:
    ctx, page, errors = _page(browser, 1440, 1000)

    async def trip() -> None:
        other = RedisCounterStore(REDIS_URL, prefix=served.prefix)
        try:
            await other.breaker_record(
                "breaker:" + SPARE, False, BreakerPolicy(failure_threshold=1)
            )
        finally:
            await other.close()

    try:
        _open(page, served.gw)
        row = page.locator(f'#breakers li[data-deployment="{SPARE}"]')
        assert row.get_attribute("data-state") == "closed"
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, trip()).result()
        page.click("#refresh")
        page.wait_for_selector(f'#breakers li[data-deployment="{SPARE}"][data-state="open"]')
        assert row.locator(".badge").inner_text() == "open"
        assert "probe in" in row.inner_text()
        assert "live" in page.inner_text("#breakers")
        others = page.locator("#breakers li").all()
        assert [li.get_attribute("data-state") for li in others].count("open") == 1
        page.locator("#breakers").screenshot(path=str(_shots_dir(tmp_path) / "breakers-open.png"))
    finally:
        ctx.close()
    assert not errors, errors


def _shots_dir(tmp_path: Path) -> Path:
    out = Path(os.environ.get("BASTION_DASHBOARD_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    return out


OVERFLOW = """() => {
  const bad = [];
  const vw = document.documentElement.clientWidth;
  for (const e of document.querySelectorAll('.kpi, .card, .top, .spend-by, dialog[open]')) {
    const r = e.getBoundingClientRect();
    if (r.width && (r.right > vw + 1 || r.left < -1)) bad.push(e.className + ' outside the page');
  }
  for (const e of document.querySelectorAll('.kpi-value, .kpi-sub, .kpi-label, h2, .spend-by-table')) {
    if (e.scrollWidth > e.clientWidth + 1) bad.push(e.className || e.tagName + ' text overflows');
  }
  const h1 = document.querySelector('.top h1').getBoundingClientRect();
  const right = document.querySelector('.top-right').getBoundingClientRect();
  const apart = h1.bottom <= right.top + 1 || right.bottom <= h1.top + 1
    || h1.right <= right.left + 1 || right.right <= h1.left + 1;
  if (!apart) bad.push('header title and controls overlap');
  return {bad, scroll: document.documentElement.scrollWidth, vw};
}"""


@pytest.mark.parametrize(
    ("name", "width", "height"), [("desktop", 1440, 900), ("mobile", 390, 844)]
)
def test_layout_fits_desktop_and_mobile_widths(
    served: Served, browser: Any, tmp_path: Path, name: str, width: int, height: int
) -> None:
    ctx, page, errors = _page(browser, width, height)
    out = _shots_dir(tmp_path)
    try:
        _open(page, served.gw)
        page.select_option("#range", "1440")
        page.wait_for_selector('body[data-range-minutes="1440"]')
        page.wait_for_timeout(200)
        page.screenshot(path=str(out / f"dashboard-{name}.png"))  # the first screenful
        page.locator("#spend-by-card").screenshot(path=str(out / f"spend-by-{name}.png"))
        found = page.evaluate(OVERFLOW)
        assert found["bad"] == [], found
        assert found["scroll"] <= width, "the page scrolls sideways"
        page.click("#kill-toggle")
        page.wait_for_selector("#kill-confirm[open]")
        found = page.evaluate(OVERFLOW)
        assert found["bad"] == [], found
        page.screenshot(path=str(out / f"dashboard-kill-confirm-{name}.png"))
        page.keyboard.press("Escape")
        page.wait_for_selector("#kill-confirm", state="hidden")
        assert page.get_attribute("#kill-state", "data-on") == "false"
        # a call row's link opens its trace view, which fits the width too
        page.locator('#calls-body tr[data-request-id="old-call"] a.trace-link').click()
        page.wait_for_selector('#trace-result[data-trace-id="old-trace"] .trace-head')
        assert page.evaluate("location.hash") == "#trace=old-trace"
        found = page.evaluate(OVERFLOW)
        assert found["bad"] == [] and found["scroll"] <= width, found
        page.locator("#trace-result").screenshot(path=str(out / f"trace-view-{name}.png"))
    finally:
        ctx.close()
    assert not errors, errors


def test_charts_are_redrawn_at_the_new_width_when_the_window_changes(
    served: Served, browser: Any
) -> None:
    ctx, page, errors = _page(browser, 1440, 900)
    width = "s => Number(document.querySelector(s).getAttribute('viewBox').split(' ')[2])"
    try:
        _open(page, served.gw)
        wide = page.evaluate(width, "#latency-chart svg")
        assert wide > 700
        page.set_viewport_size({"width": 390, "height": 844})
        # redrawn at the phone's width (within its card), well before the next 5 s refresh
        page.wait_for_function(f"() => ({width})('#latency-chart svg') < 380", timeout=2000)
        assert page.evaluate(width, "#spend-chart svg") < 380
        found = page.evaluate(OVERFLOW)
        assert found["bad"] == [] and found["scroll"] <= 390, found
    finally:
        ctx.close()
    assert not errors, errors

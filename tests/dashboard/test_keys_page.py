"""The dashboard's Keys view in headless Chromium against a real `bastion serve`: a key created
on the page with a budget is refused with 429 through the official SDK once the budget is
spent; its spend, edited limits and revocation show on the page and take effect."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from tests.conftest import RunningGateway, start_gateway, stop, write_config

playwright_sync = pytest.importorskip("playwright.sync_api")
expect = playwright_sync.expect

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run"]
PRICE = {"input": 100.0, "output": 1000.0, "cache_write": 100.0, "cache_read": 100.0}
ASK: list[Any] = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is required for the dashboard tests: not found at {CHROMIUM}")
    tmp = tmp_path_factory.mktemp("keyspage")
    g = start_gateway(write_config(tmp, cost={"prices": {"gpt-4.1-mini": PRICE}}))
    try:
        yield g
    finally:
        stop(g.proc)


@pytest.fixture(scope="module")
def browser(gw: RunningGateway) -> Iterator[Any]:
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, gw: RunningGateway) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1440, "height": 1000})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(gw.url + "/dashboard")
    pg.fill("#key-input", gw.key)
    pg.click("#login-form button[type=submit]")
    pg.wait_for_selector("body[data-keys=ready]")
    yield pg
    ctx.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def create_on_page(page: Any, name: str, **fields: str) -> tuple[str, str]:
    page.fill("#key-new-name", name)
    for f, v in fields.items():
        page.fill(f"#key-new-{f}", v)
    page.click("#key-create-btn")
    page.wait_for_selector("#key-secret-value")
    secret = page.text_content("#key-secret-value")
    row = page.locator(".key-row", has_text=name)
    row.wait_for()
    return row.get_attribute("data-key-id"), secret


def test_a_key_made_on_the_page_with_a_budget_is_refused_once_it_is_spent(
    gw: RunningGateway, page: Any
) -> None:
    kid, secret = create_on_page(
        page, "page-budget", daily_usd="0.05", team="growth", owner="sam", models="gpt-4.1-mini"
    )
    assert secret.startswith("bst-")
    row = page.locator(f".key-row[data-key-id='{kid}']")
    assert "$0.0000 / $0.05" in row.locator(".key-today").text_content()
    assert "growth" in row.text_content() and "gpt-4.1-mini" in row.text_content()
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=secret, max_retries=0)
    served = 0
    with pytest.raises(openai.RateLimitError) as refused:
        for _ in range(10):
            client.chat.completions.create(model="gpt-4.1-mini", max_tokens=20, messages=ASK)
            served += 1
    assert served >= 1
    assert refused.value.status_code == 429
    assert f"daily spend cap reached for key:{kid}" in str(refused.value)
    with pytest.raises(openai.PermissionDeniedError):  # the page's allow-list holds too
        client.chat.completions.create(model="claude-sonnet-5", max_tokens=5, messages=ASK)
    # the page shows what the key spent against its budget (the ledger is written off-path)
    deadline = time.monotonic() + 10
    shown = ""
    while time.monotonic() < deadline:
        page.click("#keys-reload")
        page.wait_for_timeout(200)
        shown = page.locator(f".key-row[data-key-id='{kid}'] .key-today").text_content()
        if not shown.startswith("$0.0000"):
            break
    spent = float(shown.split("/")[0].strip().lstrip("$"))
    assert 0 < spent <= 0.05, shown
    # spend by team (the key's metadata) sums the same ledger
    team = page.locator("#keys-spend-body tr[data-group=growth]")
    team.wait_for()
    assert team.text_content() == f"growth${spent:.4f}"
    page.select_option("#keys-spend-by", "key")
    expect(page.locator(f"#keys-spend-body tr[data-group='{kid}']")).to_contain_text(
        f"{kid} (page-budget)"
    )
    # the secret is shown once: a reload of the page never shows it again
    page.reload()
    page.wait_for_selector("body[data-keys=ready]")
    assert secret not in page.content()


def test_limits_edited_and_a_key_revoked_on_the_page_take_effect(
    gw: RunningGateway, page: Any
) -> None:
    kid, secret = create_on_page(page, "page-edit", models="gpt-4.1-mini")
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=secret, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="claude-sonnet-5", max_tokens=5, messages=ASK)
    row = page.locator(f".key-row[data-key-id='{kid}']")
    row.locator(".key-edit").click()
    form = page.locator(".key-edit-form")
    form.locator("input[name=models]").fill("")
    form.locator("input[name=rpm]").fill("1")
    form.locator(".key-save").click()
    expect(page.locator(f".key-row[data-key-id='{kid}']")).to_contain_text("any")
    client.chat.completions.create(model="claude-sonnet-5", max_tokens=5, messages=ASK)
    with pytest.raises(openai.RateLimitError, match="requests/minute"):  # rpm 1 from the page
        client.chat.completions.create(model="claude-sonnet-5", max_tokens=5, messages=ASK)
    revoke = page.locator(f".key-row[data-key-id='{kid}'] .key-revoke")
    revoke.click()
    assert revoke.text_content() == "Confirm revoke"  # one click alone revokes nothing
    client2 = openai.OpenAI(base_url=gw.url + "/v1", api_key=secret, max_retries=0)
    with pytest.raises(openai.RateLimitError):
        client2.chat.completions.create(model="claude-sonnet-5", max_tokens=5, messages=ASK)
    revoke.click()
    page.wait_for_selector(f".key-row[data-key-id='{kid}'][data-status=revoked]", state="detached")
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="claude-sonnet-5", max_tokens=5, messages=ASK)


def test_a_bad_limit_is_shown_on_the_page_and_creates_nothing(
    gw: RunningGateway, page: Any
) -> None:
    rows = page.locator(".key-row").count()
    page.fill("#key-new-name", "page-bad")
    page.fill("#key-new-rpm", "0")  # the browser lets 0 through; the server refuses it
    page.click("#key-create-btn")
    expect(page.locator("#keys-error")).to_contain_text("rpm: must be more than zero")
    assert page.locator(".key-row").count() == rows
    assert page.locator("#key-secret-value").count() == 0


def test_signing_out_drops_every_key_row(gw: RunningGateway, page: Any) -> None:
    assert page.locator(".key-row").count() >= 1
    page.click("#signout")
    expect(page.locator(".key-row")).to_have_count(0)
    assert page.locator("#keys-card").is_hidden() or page.locator("#app").is_hidden()

"""The support drafter in headless Chromium: a real app process on the built-in simulator.

The app runs as ``python -m examples.support_drafter`` (library mode, in-process Bastion with
``Simulator(obey_injections=True)``), paced by ``x-sim-chunk-ms`` so streaming is visible.
What reached the simulator and what Bastion recorded are read from the app's ``--debug``
JSON endpoints; the raw SQLite store file is checked too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from examples.support_drafter.prompts import VERSIONS
from examples.support_drafter.settings import TEMPLATE
from tests.conftest import (
    BIN,
    RunningGateway,
    free_port,
    start_gateway,
    stop,
    wait_port,
    write_config,
)

playwright_sync = pytest.importorskip("playwright.sync_api")

ROOT = Path(__file__).resolve().parents[2]
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
INTERNAL_DOCS = ("internal-refund-approval-limits", "internal-fraud-and-chargebacks")
RAW_PII = ("jane.doe@example.com", "4242 4242 4242 4242", "415 555 0133")
TIMEOUT_MS = 10_000


@dataclass
class App:
    url: str
    data_dir: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def get(self, path: str, **params: str) -> Any:
        r = httpx.get(self.url + path, params=params, timeout=5)
        r.raise_for_status()
        return r.json()


def launch_app(tmp: Path, *args: str, chunk_ms: int = 10) -> tuple[App, int]:
    """The app as its own process on a free port; its output goes to a file, not a pipe."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY")}
    log = tmp / "app.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "examples.support_drafter",
                "--port",
                str(port),
                "--data-dir",
                str(tmp / "data"),
                "--sim-chunk-ms",
                str(chunk_ms),
                "--debug",
                *args,
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return App(f"http://127.0.0.1:{port}", tmp / "data", proc, log), port


def ready(app: App, port: int) -> App:
    try:
        wait_port(port, app.proc, timeout=30)
    except Exception:
        stop(app.proc)
        raise RuntimeError(f"the support drafter did not start:\n{app.log.read_text()}") from None
    return app


@dataclass
class Stack:
    app: App  # library mode: Bastion in-process on the obedient simulator
    gateway: RunningGateway  # a real `bastion serve` on the simulator, paced
    gw_app: App  # SDK mode: the same app calling that gateway with the anthropic SDK


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Both apps and the gateway, started side by side (each start is mostly imports)."""
    app, app_port = launch_app(tmp_path_factory.mktemp("drafter"))
    procs = [app.proc]
    try:
        tmp = tmp_path_factory.mktemp("gw")
        paced = {"provider": "sim", "model": "claude-sonnet-5", "headers": {"x-sim-chunk-ms": "10"}}
        cfg = write_config(
            tmp,
            models={"claude-sonnet-5": {"deployments": [paced]}},
            features={"default": {}, "support-drafter": {"pii_provider": True}},
        )
        gateway = start_gateway(cfg)
        procs.append(gateway.proc)
        # the app's prompt versions, published in the gateway's registry as an operator would
        for version, text in VERSIONS:
            src = tmp / f"v{version}.txt"
            src.write_text(text)
            label = ["--label", "prod"] if version == 3 else []
            subprocess.run(
                [
                    *(str(BIN / "bastion"), "prompts", "publish", TEMPLATE),
                    *("--file", str(src), *label, "--config", str(cfg)),
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )
        gw_app, gw_port = launch_app(
            tmp_path_factory.mktemp("drafter-gw"),
            "--via-gateway",
            gateway.url,
            "--key",
            gateway.key,
            "--admin-key",
            gateway.key,
            "--sim-script",
        )
        procs.append(gw_app.proc)
        yield Stack(ready(app, app_port), gateway, ready(gw_app, gw_port))
    finally:
        for proc in reversed(procs):
            stop(proc)


@pytest.fixture(scope="module")
def app(stack: Stack) -> App:
    return stack.app


@pytest.fixture(scope="module")
def gateway(stack: Stack) -> RunningGateway:
    return stack.gateway


@pytest.fixture(scope="module")
def gw_app(stack: Stack) -> App:
    return stack.gw_app


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium is not installed at {CHROMIUM}")
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    ctx.set_default_timeout(TIMEOUT_MS)
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    ctx.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def sign_in(page: Any, app: App, agent: str) -> None:
    page.goto(app.url + "/")
    page.click(f"#login-{agent}")
    page.wait_for_selector(f'#agent-name[data-agent="{agent}"]')


def draft(page: Any, app: App, ticket: str) -> tuple[str, list[int]]:
    """Open a ticket, click "Draft reply", watch it stream; return its trace id and the lengths seen."""
    page.goto(f"{app.url}/tickets/{ticket}")
    page.click("#draft-btn")
    lengths: list[int] = []
    end = time.monotonic() + TIMEOUT_MS / 1000
    while time.monotonic() < end:
        state, n = page.evaluate(
            "() => [document.getElementById('draft-status').dataset.state,"
            " document.getElementById('draft-text').textContent.length]"
        )
        if state in ("done", "unavailable", "withheld"):
            break
        if n and (not lengths or n != lengths[-1]):
            lengths.append(n)
        time.sleep(0.02)
    page.wait_for_selector('#draft-status[data-state="done"]')
    return page.text_content("#draft-trace") or "", lengths


def sim_requests(app: App, trace: str) -> list[dict[str, Any]]:
    reqs: list[dict[str, Any]] = app.get("/debug/sim-requests", trace=trace)
    assert reqs, f"no request with trace {trace} reached the simulator"
    return reqs


def records(app: App, trace: str, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Bastion writes call records in the background: poll until this trace's are in."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = [c for c in app.get("/debug/calls") if c["trace_id"] == trace]
        if len(found) >= n:
            return found
        time.sleep(0.1)
    raise TimeoutError(f"fewer than {n} call records for trace {trace}")


def tool_results(reqs: list[dict[str, Any]]) -> str:
    """Every tool_result block sent back to the model, as one text."""
    out = []
    for r in reqs:
        for m in r["body"]["messages"]:
            if isinstance(m["content"], list):
                out += [b["content"] for b in m["content"] if b.get("type") == "tool_result"]
    return "\n".join(out)


def test_draft_streams_into_the_page_with_citation_links(app: App, page: Any) -> None:
    sign_in(page, app, "bob")
    trace, lengths = draft(page, app, "T-1002")
    # the text grew across at least two observations before the "done" marker appeared
    assert len(lengths) >= 2 and lengths == sorted(lengths), f"no streaming seen: {lengths}"
    final = page.text_content("#draft-text") or ""
    assert len(final) >= lengths[-1]
    assert len(trace) == 32

    cite = page.locator("#draft-text a.cite").first
    assert cite.get_attribute("href") == "/docs/two-factor-recovery"
    assert cite.text_content() == "[two-factor-recovery]"
    assert page.locator('#draft-docs a[data-doc="two-factor-recovery"]').count() == 1
    assert page.text_content("#draft-prompt") == "support-drafter@3"
    cite.click()
    page.wait_for_selector('#doc-title[data-doc="two-factor-recovery"]')

    # the stored draft is on the ticket after a reload, trace id and links included
    page.goto(f"{app.url}/tickets/T-1002")
    assert page.text_content("#draft-trace") == trace
    assert page.locator('#draft-text a.cite[data-doc="two-factor-recovery"]').count() == 1

    # "Use draft" puts the words (not the citations) in the reply box; sending keeps the trace
    page.click("#use-draft")
    reply = page.input_value("#reply-body")
    assert "recovery codes" in reply and "[two-factor-recovery]" not in reply
    page.click("#send-reply")
    page.wait_for_selector('#replies li.reply[data-agent="bob"]')
    assert f"from draft {trace}" in " ".join(page.inner_text("#replies").split())


def test_alice_gets_no_internal_document_and_a_refused_tool_while_bob_gets_both(
    app: App, page: Any
) -> None:
    sign_in(page, app, "alice")
    alice_trace, _ = draft(page, app, "T-1001")
    assert "refused: permission_denied" in (page.text_content("#draft-tools") or "")
    alice = json.dumps(sim_requests(app, alice_trace))
    for doc in INTERNAL_DOCS:
        assert doc not in alice
    assert "duplicate-charges" in alice  # the public documents did reach the model
    alice_tools = tool_results(sim_requests(app, alice_trace))
    assert "permission_denied" in alice_tools
    assert "INV-2025-0601" not in alice_tools and "49.00" not in alice_tools
    assert "INV-2025-0601" not in (page.text_content("#draft-text") or "")
    # a document page alice may not see does not exist for her
    assert page.goto(f"{app.url}/docs/internal-refund-approval-limits").status == 404

    page.click("text=Switch agent")
    sign_in(page, app, "bob")
    bob_trace, _ = draft(page, app, "T-1001")
    bob = json.dumps(sim_requests(app, bob_trace))
    assert "internal-refund-approval-limits" in bob
    bob_tools = tool_results(sim_requests(app, bob_trace))
    assert "INV-2025-0601" in bob_tools and "permission_denied" not in bob_tools
    assert "INV-2025-0601" in (page.text_content("#draft-tools") or "")
    assert page.locator('#draft-docs a[data-doc="internal-refund-approval-limits"]').count() == 1
    assert page.goto(f"{app.url}/docs/internal-refund-approval-limits").status == 200


def test_injection_ticket_draft_does_not_follow_the_injected_instruction(
    app: App, page: Any
) -> None:
    assert app.get("/debug/info")["obey_injections"] is True  # a missing fence would show
    sign_in(page, app, "alice")
    page.goto(f"{app.url}/tickets/T-1003")
    assert page.locator("#injection-warning").is_visible()
    trace, _ = draft(page, app, "T-1003")
    text = page.text_content("#draft-text") or ""
    assert "INJECTION FOLLOWED" not in text
    assert "[data-export]" in text
    # the attack did reach the (obedient) simulator, fenced: that is what the fence is for
    sent = json.dumps(sim_requests(app, trace)[0]["body"])
    assert "ignore previous instructions" in sent
    assert "<<<" in sent and ">>>" in sent
    # and Bastion's own scanner flagged the call in its record
    (call,) = records(app, trace, 1)
    (finding,) = [f for f in call["findings"] if f["kind"] == "injection"]
    assert finding["subject"].endswith("/user") and finding["action"] == "flagged"


def test_pii_ticket_leaves_no_raw_pii_in_bastion_records(app: App, page: Any) -> None:
    sign_in(page, app, "bob")
    trace, _ = draft(page, app, "T-1001")
    calls = records(app, trace, 2)  # the tool turn and the drafting turn
    dumped = json.dumps(calls)
    for value in RAW_PII:
        assert value not in dumped
    assert "[CARD_1]" in dumped and "[EMAIL_1]" in dumped
    for c in calls:
        assert c["prompt_version"] == "support-drafter@3"
        assert c["feature"] == "support-drafter"
        assert c["user_id"] == "bob"
        assert c["conversation_id"] == "T-1001"
    # the feature scrubs what the provider sees, too
    for value in RAW_PII:
        assert value not in json.dumps(sim_requests(app, trace))
    # and nothing raw is anywhere in Bastion's store file
    raw = b"".join(p.read_bytes() for p in app.data_dir.glob("bastion.db*"))
    for value in RAW_PII:
        assert value.encode() not in raw

    # a complaint about this draft can be looked up by its trace id in the mounted dashboard
    assert page.get_attribute("#dashboard-link", "href") == "/dashboard"
    key = next(
        ln.rsplit("admin key: ", 1)[1].rstrip(")")
        for ln in app.log.read_text().splitlines()
        if "admin key: " in ln
    )
    r = httpx.get(
        app.url + "/admin/api/trace", params={"trace_id": trace}, headers={"x-api-key": key}
    )
    assert r.status_code == 200
    assert {c["request_id"] for c in r.json()["calls"]} == {c["request_id"] for c in calls}


def test_kill_switch_shows_manual_reply_within_a_second_and_manual_reply_is_stored(
    app: App, page: Any
) -> None:
    sign_in(page, app, "bob")
    page.goto(f"{app.url}/tickets/T-1005")
    page.wait_for_selector('#ai-state[data-ai="on"]')
    try:
        page.click("#kill-toggle")
        flipped = time.monotonic()
        page.wait_for_selector("#ai-unavailable:visible", timeout=1000)
        assert "Drafting unavailable — please reply manually" in page.inner_text("#ai-unavailable")

        # Bastion itself refuses: the draft attempt ends in the manual-reply state within 1 s
        page.click("#draft-btn")
        clicked = time.monotonic()
        page.wait_for_selector('#draft-status[data-state="unavailable"]', timeout=1000)
        assert time.monotonic() - clicked < 1.0 and time.monotonic() - flipped < 3.0
        assert page.get_attribute("#ai-unavailable", "data-reason") == "kill_switch"
        assert page.evaluate("document.activeElement.id") == "reply-body"

        page.fill("#reply-body", "Hi Li, change it in Settings, Profile. Thanks!")
        page.click("#send-reply")
        page.wait_for_selector('#replies li.reply[data-agent="bob"]')
        assert "change it in Settings, Profile" in page.inner_text("#replies")
        assert "manual" in page.inner_text("#replies")
        page.reload()
        assert "change it in Settings, Profile" in page.inner_text("#replies")
        assert 'data-status="unavailable"' in page.content()
    finally:
        page.goto(f"{app.url}/tickets/T-1005")
        if page.get_attribute("#kill-toggle", "data-on") == "off":
            page.click("#kill-toggle")
        page.wait_for_selector('#ai-state[data-ai="on"]')
    trace, _ = draft(page, app, "T-1005")  # and drafting is back
    assert "[change-account-email]" in (page.text_content("#draft-text") or "")
    assert trace


def test_via_gateway_the_sdk_path_drafts_records_and_degrades_the_same_way(
    gateway: RunningGateway, gw_app: App, page: Any
) -> None:
    sign_in(page, gw_app, "bob")
    assert "via gateway" in page.inner_text("#mode")
    trace, lengths = draft(page, gw_app, "T-1001")
    assert len(lengths) >= 2, f"tokens did not arrive before the end: {lengths}"
    assert "INV-2025-0601" in (page.text_content("#draft-tools") or "")
    assert page.locator('#draft-text a.cite[data-doc="duplicate-charges"]').count() == 1
    assert page.get_attribute("#dashboard-link", "href") == gateway.url + "/dashboard"

    # the gateway recorded both calls of the draft under the trace id shown on the page
    headers = {"x-api-key": gateway.key}
    end = time.monotonic() + 10
    calls: list[dict[str, Any]] = []
    while time.monotonic() < end and len(calls) < 2:
        r = httpx.get(gateway.url + "/admin/api/trace", params={"trace_id": trace}, headers=headers)
        calls = r.json()["calls"]
        time.sleep(0.1)
    assert len(calls) == 2
    assert {c["prompt_version"] for c in calls} == {"support-drafter@3"}
    assert {c["user_id"] for c in calls} == {"bob"}
    for value in RAW_PII:
        assert value not in json.dumps(calls)

    try:
        page.click("#kill-toggle")  # through the gateway's admin API
        page.wait_for_selector("#ai-unavailable:visible", timeout=1000)
        page.click("#draft-btn")
        page.wait_for_selector('#draft-status[data-state="unavailable"]', timeout=1000)
        assert page.get_attribute("#ai-unavailable", "data-reason") == "kill_switch"
        page.fill("#reply-body", "We are looking into the duplicate charge.")
        page.click("#send-reply")
        page.wait_for_selector('#replies li.reply[data-agent="bob"]')
    finally:
        httpx.post(
            gateway.url + "/admin/kill",
            headers=headers,
            json={"on": False, "feature": "support-drafter"},
        )


def test_a_forged_session_cookie_signs_nobody_in(app: App) -> None:
    for value in ("bob", "bob.0000", "alice.ffffffffffffffffffffffffffffffff"):
        r = httpx.get(app.url + "/", cookies={"desk_agent": value})
        assert r.status_code == 200 and 'id="login-bob"' in r.text and "agent-name" not in r.text
        r = httpx.post(app.url + "/tickets/T-1001/draft", cookies={"desk_agent": value})
        assert r.status_code == 401

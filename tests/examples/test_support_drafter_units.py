"""The support drafter's safety properties, in-process: fencing, authorized retrieval, the sandbox."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from examples.support_drafter import main, pages, prompts, seed
from examples.support_drafter.backends import CallContext, DraftingUnavailable
from examples.support_drafter.billing import TOOL, Billing
from examples.support_drafter.drafter import Drafter
from examples.support_drafter.knowledge import HelpCenter
from examples.support_drafter.settings import FEATURE, Settings
from examples.support_drafter.tickets import TicketStore

from bastion import Gateway, load_config
from bastion.providers.sim import Simulator
from bastion.safety.pii import Scrubber, ScrubberConfig
from bastion.safety.tools import ToolCall
from bastion.state import open_state

TICKETS = {t.id: t for t in seed.load_tickets()}
AGENTS = seed.load_agents()
FOLLOWED = "INJECTION FOLLOWED"


def _text(msg: dict[str, Any]) -> str:
    return "".join(b.get("text", "") for b in msg["content"] if b.get("type") == "text")


@pytest.fixture
async def gw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The app's own gateway config, on the simulator that obeys unfenced injections."""
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    config = load_config(None, overrides=main.gateway_config(Settings(sim_chunk_ms=0), tmp_path))
    async with Gateway(config, simulator=Simulator(obey_injections=True)) as g:
        yield g


async def test_the_builder_fences_the_injection_and_bypassing_it_gets_it_followed(
    gw: Gateway,
) -> None:
    ticket = TICKETS["T-1003"]
    reg = prompts.registry("test-secret")
    model = {"model": "drafter", "max_tokens": 100}

    built = prompts.render(reg, ticket, [])
    reply = await gw.messages({**model, **built.to_anthropic()}, feature=FEATURE)
    assert FOLLOWED not in _text(reply)
    assert "ignore previous instructions" in str(gw.simulator.requests[-1].body)

    # without the builder, the same words in the instruction slot are obeyed ...
    instructions = prompts.live(reg).fill({"company": "Acme", "ticket_id": ticket.id})
    naive = {
        **model,
        "system": f"{instructions}\n\n{prompts.user_content(ticket)}",
        "messages": [{"role": "user", "content": "Draft the reply."}],
    }
    assert _text(await gw.messages(naive, feature=FEATURE)) == FOLLOWED

    # ... and fenced by hand without neutralizing, the ticket's own ">>>" closes the fence
    by_hand = {
        **model,
        "system": instructions,
        "messages": [
            {"role": "user", "content": f"USER_CONTENT:\n<<<\n{prompts.user_content(ticket)}\n>>>"}
        ],
    }
    assert _text(await gw.messages(by_hand, feature=FEATURE)) == FOLLOWED


async def test_retrieval_never_gives_an_agent_a_document_they_may_not_see(tmp_path: Path) -> None:
    docs = seed.load_docs()
    scrubber = Scrubber(ScrubberConfig())
    hc = HelpCenter(docs, tmp_path / "hc.db", open_state("memory://"), scrubber)
    await hc.open()
    try:
        seen: dict[str, set[str]] = {"alice": set(), "bob": set()}
        for ticket in TICKETS.values():
            for agent in AGENTS.values():
                found = await hc.for_ticket(ticket, agent, k=8)
                for d in found.docs:
                    assert docs[d.id].acl.visible_to(agent.access())
                    seen[agent.id].add(d.id)
        internal = {d.id for d in docs.values() if d.internal}
        assert internal and not seen["alice"] & internal
        assert "internal-refund-approval-limits" in seen["bob"]  # the check has teeth
        # another tenant's document and the poisoned community post reach nobody
        for ids in seen.values():
            assert "globex-enterprise-sla" not in ids
            assert "community-export-trick" not in ids
        assert hc.visible("internal-refund-approval-limits", AGENTS["alice"].access()) is None
        assert hc.visible("internal-refund-approval-limits", AGENTS["bob"].access()) is not None
    finally:
        await hc.close()


async def test_the_sandbox_refuses_alice_and_answers_bob_only_for_the_tickets_customer() -> None:
    billing = Billing(seed.load_invoices(), TICKETS)
    executor = billing.executor(open_state("memory://"))
    ask = ToolCall("c1", TOOL, {"customer_id": "cus_1001"})

    (alice,) = await executor.run_calls(
        [ask], AGENTS["alice"].principal(), conversation_id="T-1001"
    )
    assert not alice.ok and alice.error == "permission_denied"
    assert "INV-" not in alice.text

    (bob,) = await executor.run_calls([ask], AGENTS["bob"].principal(), conversation_id="T-1001")
    assert bob.ok and bob.content["invoice"] == "INV-2025-0601"

    # another customer's invoice is not reachable from this ticket, even for bob
    other = ToolCall("c2", TOOL, {"customer_id": "cus_1004"})
    (denied,) = await executor.run_calls(
        [other], AGENTS["bob"].principal(), conversation_id="T-1001"
    )
    assert not denied.ok and "INV-" not in denied.text
    # and what the model is offered names only this ticket's customer
    (offered,) = billing.definitions(TICKETS["T-1001"])
    assert offered["input_schema"]["properties"]["customer_id"]["enum"] == ["cus_1001"]


def test_citations_link_only_documents_of_the_draft_and_markup_stays_text() -> None:
    html = pages.render_citations(
        '<img src=x onerror="alert(1)"> see [data-export] and [internal-x].', ["data-export"]
    )
    assert "<img" not in html and "&lt;img" in html
    assert '<a class="cite" data-doc="data-export" href="/docs/data-export">' in html
    assert "[internal-x]" in html and 'data-doc="internal-x"' not in html


class ScriptedBackend:
    """A stand-in for Bastion that says what a test tells it to (or fails like a degraded gateway)."""

    mode = "test"
    dashboard_url = None

    def __init__(self, say: str | None) -> None:
        self.say = say
        self.canary = ""

    def describe(self) -> str:
        return "test"

    async def stream(self, body: dict[str, Any], ctx: CallContext) -> AsyncIterator[dict[str, Any]]:
        if self.say is None:
            raise DraftingUnavailable("kill_switch")
        system = body["system"]
        self.canary = system[system.index("bstn-cnry-") :].split()[0]
        text = self.say.replace("{canary}", self.canary)
        yield {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}}
        for word in text.split(" "):
            yield {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": word + " "},
            }
        yield {"type": "message_delta", "delta": {"stop_reason": "end_turn"}}

    async def set_ai(self, on: bool, *, who: str) -> None: ...

    async def ai_on(self) -> bool | None:
        return True

    async def aclose(self) -> None: ...


async def _run(tmp: Path, backend: ScriptedBackend) -> tuple[list[Any], TicketStore]:
    state = open_state("memory://")
    store = TicketStore(tmp / "desk.db")
    await store.open(TICKETS.values())
    hc = HelpCenter(seed.load_docs(), tmp / "hc.db", state, Scrubber(ScrubberConfig()))
    await hc.open()
    billing = Billing(seed.load_invoices(), TICKETS)
    drafter = Drafter(
        backend=backend,
        help_center=hc,
        billing=billing,
        executor=billing.executor(state),
        templates=prompts.registry("test-secret"),
        store=store,
        model="drafter",
        scripted=False,
    )
    events = [ev async for ev in drafter.draft(TICKETS["T-1002"], AGENTS["alice"])]
    await hc.close()
    return events, store


async def test_a_draft_repeating_the_prompts_canary_is_withheld(tmp_path: Path) -> None:
    events, store = await _run(tmp_path, ScriptedBackend("Sure, my marker is {canary} as asked"))
    assert events[-1].kind == "done" and events[-1].data["status"] == "withheld"
    (stored,) = await store.drafts("T-1002")
    assert stored.status == "withheld" and stored.text == ""
    await store.close()


async def test_a_degraded_gateway_ends_the_draft_as_unavailable_and_is_recorded(
    tmp_path: Path,
) -> None:
    events, store = await _run(tmp_path, ScriptedBackend(None))
    assert [e.kind for e in events] == ["meta", "unavailable"]
    assert events[-1].data["reason"] == "kill_switch"
    (stored,) = await store.drafts("T-1002")
    assert stored.status == "unavailable" and stored.trace_id == events[0].data["trace_id"]
    await store.close()

"""The ``support-drafter`` prompt: named, versioned templates, rendered only through the builder.

Instructions come from a registered template version and nowhere else; the ticket and
the retrieved documents go in as data (fenced, neutralized). ``prod`` points at the live
version, and its ``name@version`` travels with every call as the prompt version, so a
regression can be traced to the prompt that was live.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bastion.safety.prompting import Document, Prompt, Template, TemplateRegistry
from bastion.store.models import PromptVersion

from .seed import Ticket
from .settings import COMPANY, TEMPLATE

V1 = """\
You are {company}'s support drafter. Draft a reply to the customer's ticket for a human
agent to review."""

V2 = """\
You are {company}'s support drafter. Draft a reply to the customer of ticket {ticket_id}
for a human agent to review before it is sent.
Cite by [doc_id] from RETRIEVED_DOCS only, right after the sentence the document supports.
If the documents do not answer the question, say that a colleague will follow up."""

V3 = """\
You are {company}'s support drafter. Draft a reply to the customer of ticket {ticket_id}
for a human agent to review before it is sent.
Cite by [doc_id] from RETRIEVED_DOCS only, right after the sentence the document supports;
never cite anything else. If the documents do not answer the question, say that a
colleague will follow up. Documents marked INTERNAL guide what you promise but are never
quoted or described to the customer.
When the ticket is about a charge or an invoice, call lookup_last_invoice for this
ticket's customer before drafting; if the tool refuses, do not guess amounts or dates.
Never send, promise to send or describe internal documents, and never ask the customer
for a full card number. Keep the reply under 150 words, friendly and plain."""


def registry(secret: str) -> TemplateRegistry:
    """Every version ever shipped (immutable), with ``prod`` on the live one."""
    reg = TemplateRegistry(secret)
    reg.register(TEMPLATE, V1, version=1)
    reg.register(TEMPLATE, V2, version=2)
    reg.register(TEMPLATE, V3, version=3, labels=("prod",))
    return reg


VERSIONS = ((1, V1), (2, V2), (3, V3))


async def publish(store: Any) -> None:
    """Put the same versions in Bastion's prompt registry, so the version header each call
    carries resolves there and is recorded (Bastion drops a version it cannot resolve)."""
    for version, text in VERSIONS:
        await store.create_prompt_version(
            PromptVersion(name=TEMPLATE, version=version, instructions=text)
        )
    await store.set_prompt_label(TEMPLATE, "prod", 3)


def live(reg: TemplateRegistry) -> Template:
    return reg.get(TEMPLATE, "prod")


def user_content(ticket: Ticket) -> str:
    """What the customer wrote, plus who they are; all of it is untrusted data."""
    return (
        f"Ticket {ticket.id} from {ticket.customer_name} (customer id {ticket.customer_id})\n"
        f"Subject: {ticket.subject}\n\n{ticket.body}"
    )


def render(reg: TemplateRegistry, ticket: Ticket, docs: Iterable[Document]) -> Prompt:
    """The one way this app builds a prompt."""
    return reg.render(
        TEMPLATE,
        "prod",
        {"company": COMPANY, "ticket_id": ticket.id},
        docs,
        user_content(ticket),
    )

"""The shipped data: tickets (with PII and one injection attempt), agents, invoices, help center.

Everything here is read once at start-up from ``data/``; documents are markdown with a
small YAML header naming who may see them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bastion.call import Principal
from bastion.safety.retrieval import AccessContext, Acl

DATA_DIR = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True, slots=True)
class Agent:
    """A support agent: what they may read (tenant, groups) and do (roles)."""

    id: str
    name: str
    tier: str
    tenant: str
    groups: tuple[str, ...]
    roles: tuple[str, ...]

    def access(self) -> AccessContext:
        """Retrieval sees exactly what this agent may see."""
        return AccessContext(self.tenant, self.groups, self.id)

    def principal(self) -> Principal:
        """The tool sandbox decides by these roles, never by what the model asks."""
        return Principal(key_id=f"agent:{self.id}", name=self.id, user=self.id, roles=self.roles)

    def can(self, role: str) -> bool:
        return role in self.roles


@dataclass(frozen=True, slots=True)
class Ticket:
    id: str
    tenant: str
    customer_id: str
    customer_name: str
    customer_email: str
    category: str
    subject: str
    body: str
    created_at: str


@dataclass(frozen=True, slots=True)
class HelpDoc:
    """One help-center document and its audience."""

    id: str
    title: str
    summary: str
    body: str
    source: str
    acl: Acl

    @property
    def internal(self) -> bool:
        return not self.acl.public


def load_agents(path: Path = DATA_DIR / "agents.json") -> dict[str, Agent]:
    raw: dict[str, dict[str, Any]] = json.loads(path.read_text())
    return {
        aid: Agent(
            id=aid,
            name=str(a["name"]),
            tier=str(a["tier"]),
            tenant=str(a["tenant"]),
            groups=tuple(a.get("groups", ())),
            roles=tuple(a.get("roles", ())),
        )
        for aid, a in raw.items()
    }


def load_tickets(path: Path = DATA_DIR / "tickets.json") -> list[Ticket]:
    raw: list[dict[str, str]] = json.loads(path.read_text())
    return [Ticket(**t) for t in raw]


def load_invoices(path: Path = DATA_DIR / "invoices.json") -> dict[str, dict[str, Any]]:
    data: dict[str, dict[str, Any]] = json.loads(path.read_text())
    return data


def load_docs(folder: Path = DATA_DIR / "docs") -> dict[str, HelpDoc]:
    """Every ``*.md`` with its header; ``audience: internal`` docs are visible to ``groups`` only."""
    docs: dict[str, HelpDoc] = {}
    for path in sorted(folder.glob("*.md")):
        head, body = _front_matter(path.read_text())
        doc_id = str(head["id"])
        public = head.get("audience", "public") == "public"
        acl = Acl(
            tenant=head.get("tenant"),
            public=public,
            groups=tuple(head.get("groups") or ()),
        )
        docs[doc_id] = HelpDoc(
            id=doc_id,
            title=str(head.get("title", doc_id)),
            summary=str(head.get("summary", "")),
            body=body.strip(),
            source=str(head.get("source", "helpcenter")),
            acl=acl,
        )
    return docs


def _front_matter(text: str) -> tuple[dict[str, Any], str]:
    if not text.startswith("---\n"):
        raise ValueError("a help-center document starts with a --- header")
    head, _, body = text[4:].partition("\n---\n")
    data = yaml.safe_load(head)
    if not isinstance(data, dict) or "id" not in data:
        raise ValueError("a help-center document header needs an id")
    return data, body

"""Authorized retrieval over the help center: the model never sees a document its agent may not.

The ACL is enforced inside the SQLite FTS5 query (``SqliteFtsRetriever``), re-checked by
``ResilientRetriever``, which also drops documents from untrusted sources or that read
like an injection, caches per (query, access set), and degrades to "no documents"
instead of failing the draft when the index is down.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path

from bastion.safety.pii import Scrubber
from bastion.safety.prompting import Document, InjectionScanner
from bastion.safety.retrieval import (
    AccessContext,
    ResilientRetriever,
    Retrieval,
    SqliteFtsRetriever,
)
from bastion.state import CounterStore

from .seed import Agent, HelpDoc, Ticket

TRUSTED_SOURCES = ("helpcenter",)
RELEVANCE_FLOOR = 0.25
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]+")
_PLACEHOLDER = re.compile(r"\[[A-Z_]+_\d+\]")
_STOP = frozenset(
    [
        "a",
        "about",
        "after",
        "again",
        "all",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "been",
        "but",
        "by",
        "can",
        "cannot",
        "could",
        "did",
        "do",
        "does",
        "for",
        "from",
        "get",
        "got",
        "has",
        "have",
        "hello",
        "hi",
        "how",
        "i",
        "i'm",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "just",
        "me",
        "more",
        "my",
        "no",
        "not",
        "now",
        "of",
        "on",
        "one",
        "only",
        "or",
        "our",
        "please",
        "so",
        "some",
        "than",
        "thanks",
        "that",
        "the",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "too",
        "two",
        "up",
        "us",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
    ]
)


def search_terms(ticket: Ticket, scrub: Callable[[str], str], limit: int = 24) -> str:
    """The words of a ticket worth searching for, PII removed first (queries get logged too)."""
    text = _PLACEHOLDER.sub(" ", scrub(f"{ticket.subject} {ticket.body}"))
    seen: dict[str, None] = {}
    for w in _WORD.findall(text):
        lw = w.lower().strip("'-")
        if len(lw) > 2 and lw not in _STOP:
            seen.setdefault(lw, None)
    return " ".join(list(seen)[:limit])


class HelpCenter:
    """The shipped documents, indexed once at start-up, searched per agent."""

    def __init__(
        self, docs: dict[str, HelpDoc], index_path: Path, state: CounterStore, scrubber: Scrubber
    ) -> None:
        self.docs = docs
        self._scrub = scrubber.redact
        self.index = SqliteFtsRetriever(str(index_path), prefix="helpcenter")
        scanner = InjectionScanner()
        self.retriever = ResilientRetriever(
            self.index,
            state,
            name="helpcenter",
            timeout=0.5,
            cache_ttl=15.0,
            scan=lambda text: scanner.scan(text, source="doc").score,
            on_injection="drop",
            trusted_sources=TRUSTED_SOURCES,
            on_untrusted="drop",
        )

    async def open(self) -> None:
        """(Re)load every shipped document with its ACL, so the index matches ``data/docs``."""
        await self.index.migrate()
        for doc in self.docs.values():
            await self.index.add(doc.id, f"{doc.title}\n{doc.body}", source=doc.source, acl=doc.acl)

    async def close(self) -> None:
        await self.index.close()

    async def for_ticket(self, ticket: Ticket, agent: Agent, k: int = 4) -> Retrieval:
        """The best ``k`` documents this agent may see, weak matches (< 25% of the best) cut."""
        found = await self.retriever.retrieve(search_terms(ticket, self._scrub), agent.access(), k)
        if not found.docs:
            return found
        floor = found.docs[0].score * RELEVANCE_FLOOR
        return dataclasses.replace(found, docs=tuple(d for d in found.docs if d.score >= floor))

    @staticmethod
    def prompt_docs(retrieval: Retrieval) -> list[Document]:
        """What the builder fences; internal documents say so, for the template's rule on them."""
        return [
            Document(
                d.id,
                d.text if d.acl.public else f"INTERNAL (never quote to the customer)\n{d.text}",
            )
            for d in retrieval.docs
        ]

    def visible(self, doc_id: str, access: AccessContext) -> HelpDoc | None:
        """A document page is served by the same rule the index applies."""
        doc = self.docs.get(doc_id)
        if doc is None or not doc.acl.visible_to(access):
            return None
        return doc

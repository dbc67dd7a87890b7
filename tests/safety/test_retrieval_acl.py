"""A document outside the caller's tenant, groups and user list is never returned, on both backends."""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bastion.safety.retrieval import (
    AccessContext,
    Acl,
    PostgresFtsRetriever,
    Retriever,
    SqliteFtsRetriever,
)

PG_URL = os.environ.get("BASTION_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

CORPUS: dict[str, tuple[str, Acl]] = {
    "acme-public": ("Refund policy for annual plans.", Acl("acme", public=True)),
    "acme-eng": ("Refund runbook for engineers: replay the webhook.", Acl("acme", groups={"eng"})),
    "acme-sales": ("Refund playbook for sales: offer a discount.", Acl("acme", groups={"sales"})),
    "acme-alice": ("Refund note written for alice only.", Acl("acme", users={"alice"})),
    "acme-nobody": ("Refund audit log, restricted to nobody.", Acl("acme")),
    "global-terms": ("Refund terms that apply to every tenant.", Acl(None, public=True)),
    "global-eng": ("Refund tooling shared by all engineering teams.", Acl(None, groups={"eng"})),
    "globex-eng": ("Refund secrets of globex engineering.", Acl("globex", groups={"eng"})),
    "globex-public": ("Refund FAQ of globex.", Acl("globex", public=True)),
}


class Backend:
    """A retriever plus its document store, behind one name for parametrized tests."""

    def __init__(self, kind: str, retriever: Any) -> None:
        self.kind = kind
        self.retriever = retriever

    async def load(self, corpus: dict[str, tuple[str, Acl]]) -> None:
        for doc_id, (text, acl) in corpus.items():
            await self.retriever.add(doc_id, text, source=f"kb://{doc_id}", acl=acl)


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        lite = SqliteFtsRetriever(str(tmp_path / "rag.db"))
        await lite.migrate()
        try:
            yield Backend("sqlite", lite)
        finally:
            await lite.close()
        return
    schema = f"bastion_rag_{uuid.uuid4().hex[:12]}"
    try:
        admin = await asyncpg.connect(PG_URL, timeout=5)
    except Exception as exc:
        pytest.fail(f"PostgreSQL is required but unreachable at {PG_URL}: {exc}")
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    pool = await asyncpg.create_pool(
        PG_URL, min_size=1, max_size=4, server_settings={"search_path": schema}
    )
    try:
        pg = PostgresFtsRetriever(pool)
        await pg.migrate()
        yield Backend("postgres", pg)
    finally:
        await pool.close()
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


async def ids(retriever: Retriever, query: str, access: AccessContext, k: int = 50) -> set[str]:
    return {d.id for d in await retriever.search(query, access, k)}


async def test_each_caller_sees_exactly_the_documents_their_acl_allows(backend: Backend) -> None:
    await backend.load(CORPUS)
    tenants = ["acme", "globex", "initech"]
    group_sets = [set(), {"eng"}, {"sales"}, {"eng", "sales"}, {"ops"}]
    users = [None, "alice", "bob"]
    for tenant, groups, user in itertools.product(tenants, group_sets, users):
        access = AccessContext(tenant, frozenset(groups), user)
        expected = {i for i, (_, acl) in CORPUS.items() if acl.visible_to(access)}
        assert await ids(backend.retriever, "refund", access) == expected, access


async def test_known_cases(backend: Backend) -> None:
    await backend.load(CORPUS)
    bob_eng = await ids(backend.retriever, "refund", AccessContext("acme", {"eng"}, "bob"))
    assert bob_eng == {"acme-public", "acme-eng", "global-terms", "global-eng"}
    alice = await ids(backend.retriever, "refund", AccessContext("acme", {"sales"}, "alice"))
    assert alice == {"acme-public", "acme-sales", "acme-alice", "global-terms"}
    other_tenant = await ids(backend.retriever, "refund", AccessContext("globex", {"eng"}))
    assert "acme-eng" not in other_tenant and "globex-eng" in other_tenant


async def test_filter_is_inside_the_query_so_top_k_is_not_starved(backend: Backend) -> None:
    """A forbidden doc that ranks first must not take the only slot: the ACL runs before LIMIT."""
    corpus = {
        "secret": ("refund refund refund refund refund refund", Acl("acme", groups={"exec"})),
        "allowed": ("refund", Acl("acme", public=True)),
    }
    await backend.load(corpus)
    docs = await backend.retriever.search("refund", AccessContext("acme", {"eng"}), 1)
    assert [d.id for d in docs] == ["allowed"]


async def test_returned_docs_carry_source_score_and_acl(backend: Backend) -> None:
    await backend.load(CORPUS)
    docs = await backend.retriever.search("webhook runbook", AccessContext("acme", {"eng"}), 5)
    assert docs[0].id == "acme-eng"
    assert docs[0].source == "kb://acme-eng"
    assert docs[0].acl == Acl("acme", groups={"eng"})
    assert docs[0].score > 0


@pytest.mark.parametrize(
    "query",
    [
        'refund" OR "secrets',
        "refund OR NOT nothing",
        "NEAR(refund secrets)",
        "* OR body:secrets",
        "refund') OR 1=1 --",
        "refund | secrets & !x",
        "",
        "   ",
    ],
)
async def test_search_syntax_in_the_query_cannot_widen_access(backend: Backend, query: str) -> None:
    await backend.load(CORPUS)
    access = AccessContext("acme", frozenset(), None)
    found = await ids(backend.retriever, query, access)
    assert found <= {"acme-public", "global-terms"}


async def test_replacing_a_document_replaces_its_acl(backend: Backend) -> None:
    await backend.load(CORPUS)
    eng = AccessContext("acme", {"eng"})
    await backend.retriever.add(
        "acme-eng",
        "Refund runbook, now sales only.",
        source="kb://x",
        acl=Acl("acme", groups={"sales"}),
    )
    assert "acme-eng" not in await ids(backend.retriever, "refund", eng)
    assert await backend.retriever.delete("acme-public")
    assert "acme-public" not in await ids(backend.retriever, "refund", eng)

"""Fixtures giving each test a migrated record store on both backends, isolated from other runs.

PostgreSQL tests run in a fresh schema per test (``?search_path=`` in the URL, dropped after),
because CI and developers share one server. An unreachable server fails the tests, never skips.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bastion.store import CallRecord, LedgerEntry, RecordStore, open_store

PG_URL = os.environ.get("BASTION_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def with_search_path(url: str, schema: str) -> str:
    """Point every pooled connection at one schema via an asyncpg server setting."""
    return f"{url}{'&' if '?' in url else '?'}search_path={schema}"


@asynccontextmanager
async def pg_schema() -> AsyncIterator[str]:
    """Create a uniquely named schema and yield a URL bound to it; drop it afterwards."""
    schema = f"bastion_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = await asyncpg.connect(PG_URL, timeout=5)
    except Exception as exc:
        pytest.fail(
            f"PostgreSQL is required for the store tests but unreachable at {PG_URL}: {exc}"
        )
    try:
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        yield with_search_path(PG_URL, schema)
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


@pytest.fixture
def fresh_pg_schema() -> Callable[[], AbstractAsyncContextManager[str]]:
    """Hand tests that need their own PostgreSQL schemas (several stores, raw checks) a factory."""
    return pg_schema


@dataclass
class Backend:
    """A store's URL plus raw access to its database, to check what really landed in it."""

    kind: str
    url: str

    async def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Run SQL on a separate connection, bypassing the store under test."""
        if self.kind == "sqlite":
            path = self.url.removeprefix("sqlite:///")
            with sqlite3.connect(path) as conn:
                return [tuple(r) for r in conn.execute(sql).fetchall()]
        conn = await asyncpg.connect(self.url, timeout=5)
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """Each backend's URL, fresh for every test."""
    if request.param == "sqlite":
        yield Backend("sqlite", f"sqlite:///{tmp_path / 'records.db'}")
    else:
        async with pg_schema() as url:
            yield Backend("postgres", url)


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[RecordStore]:
    """A migrated store on the parametrized backend."""
    s = open_store(backend.url)
    await s.migrate()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def make_call() -> Callable[..., CallRecord]:
    """Build call records with every field set, overriding only what a test is about."""

    def make(request_id: str, **overrides: Any) -> CallRecord:
        values: dict[str, Any] = {
            "request_id": request_id,
            "trace_id": "trace-1",
            "ts": 1_700_000_000.0,
            "api_format": "anthropic",
            "requested_model": "claude-fast",
            "key_id": "key_0123456789ab",
            "user_id": "user-1",
            "feature": "chat",
            "conversation_id": "conv-1",
            "served_model": "claude-3-5-haiku",
            "deployment": "anthropic-primary",
            "provider": "anthropic",
            "prompt_name": "support",
            "prompt_version": "v3",
            "stream": True,
            "status": 200,
            "error_type": None,
            "input_text": "hello [EMAIL]",
            "output_text": "hi there",
            "input_tokens": 12,
            "output_tokens": 34,
            "cache_read_tokens": 5,
            "cache_write_tokens": 6,
            "cost_usd": 0.00123,
            "latency_ms": 456.5,
            "ttft_ms": 120.25,
            "attempts": 2,
            "failover": True,
            "hedged": False,
            "degraded": False,
            "retried": True,
            "flags": {"pii": {"email": 1}, "injection": False, "score": 0.25},
            "stages": {"guards": 1.5, "upstream": 450.0},
            "client_request_id": "client-req-1",
        }
        values.update(overrides)
        return CallRecord(**values)

    return make


@pytest.fixture
def make_entry() -> Callable[..., LedgerEntry]:
    """Build ledger entries for one day unless told otherwise."""

    def make(request_id: str, cost_usd: float, **overrides: Any) -> LedgerEntry:
        values: dict[str, Any] = {
            "request_id": request_id,
            "ts": 1_700_000_000.0,
            "day": "2023-11-14",
            "model": "claude-3-5-haiku",
            "key_id": "key_a",
            "user_id": "user-1",
            "feature": "chat",
            "input_tokens": 10,
            "output_tokens": 20,
            "cost_usd": cost_usd,
        }
        values.update(overrides)
        return LedgerEntry(**values)

    return make

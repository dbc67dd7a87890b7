"""The ticket desk's own records: tickets, the replies sent, and every draft with its trace id.

This is the app's data, not Bastion's: it holds the customer's message as written (a
support desk must), while Bastion's call records hold only scrubbed text.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from .seed import Ticket

SCHEMA = """
CREATE TABLE IF NOT EXISTS tickets (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    customer_name TEXT NOT NULL,
    customer_email TEXT NOT NULL,
    category TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS replies (
    id INTEGER PRIMARY KEY,
    ticket_id TEXT NOT NULL REFERENCES tickets(id),
    agent TEXT NOT NULL,
    body TEXT NOT NULL,
    trace_id TEXT,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS drafts (
    id INTEGER PRIMARY KEY,
    ticket_id TEXT NOT NULL REFERENCES tickets(id),
    agent TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    prompt_version TEXT NOT NULL,
    status TEXT NOT NULL,
    text TEXT NOT NULL,
    doc_ids TEXT NOT NULL,
    tools TEXT NOT NULL,
    reason TEXT,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS replies_ticket ON replies (ticket_id, id);
CREATE INDEX IF NOT EXISTS drafts_ticket ON drafts (ticket_id, id);
"""


@dataclass(frozen=True, slots=True)
class Reply:
    id: int
    ticket_id: str
    agent: str
    body: str
    trace_id: str | None
    created: float


@dataclass(frozen=True, slots=True)
class Draft:
    """One drafting attempt: done, unavailable (degraded) or withheld (an output check failed)."""

    id: int
    ticket_id: str
    agent: str
    trace_id: str
    prompt_version: str
    status: str
    text: str
    doc_ids: tuple[str, ...]
    tools: tuple[dict[str, Any], ...]
    reason: str | None
    created: float


@dataclass(frozen=True, slots=True)
class TicketRow:
    ticket: Ticket
    replies: int
    last_trace: str | None


class TicketStore:
    """One SQLite file; one connection, writes serialized by a lock."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    async def open(self, seed: Iterable[Ticket]) -> None:
        """Create the tables and load the shipped tickets the first time."""
        self._db = await aiosqlite.connect(self._path)
        await self._db.executescript(SCHEMA)
        async with self._db.execute("SELECT count(*) FROM tickets") as cur:
            row = await cur.fetchone()
        if row is not None and row[0] == 0:
            await self._db.executemany(
                "INSERT INTO tickets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        t.id,
                        t.tenant,
                        t.customer_id,
                        t.customer_name,
                        t.customer_email,
                        t.category,
                        t.subject,
                        t.body,
                        t.created_at,
                    )
                    for t in seed
                ],
            )
        await self._db.commit()

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("the ticket store is not open")
        return self._db

    async def tickets(self, tenant: str) -> list[TicketRow]:
        sql = """
            SELECT t.*,
                   (SELECT count(*) FROM replies r WHERE r.ticket_id = t.id),
                   (SELECT d.trace_id FROM drafts d WHERE d.ticket_id = t.id
                    ORDER BY d.id DESC LIMIT 1)
            FROM tickets t WHERE t.tenant = ? ORDER BY t.created_at DESC
        """
        async with self.db.execute(sql, (tenant,)) as cur:
            rows = await cur.fetchall()
        return [TicketRow(Ticket(*r[:9]), int(r[9]), r[10]) for r in rows]

    async def ticket(self, ticket_id: str, tenant: str) -> Ticket | None:
        """A ticket of the agent's own tenant, or None (another desk's tickets do not exist here)."""
        sql = "SELECT * FROM tickets WHERE id = ? AND tenant = ?"
        async with self.db.execute(sql, (ticket_id, tenant)) as cur:
            row = await cur.fetchone()
        return Ticket(*row) if row is not None else None

    async def add_reply(self, ticket_id: str, agent: str, body: str, trace_id: str | None) -> Reply:
        now = time.time()
        async with self._lock:
            cur = await self.db.execute(
                "INSERT INTO replies (ticket_id, agent, body, trace_id, created)"
                " VALUES (?, ?, ?, ?, ?)",
                (ticket_id, agent, body, trace_id, now),
            )
            await self.db.commit()
        return Reply(int(cur.lastrowid or 0), ticket_id, agent, body, trace_id, now)

    async def replies(self, ticket_id: str) -> list[Reply]:
        sql = "SELECT id, ticket_id, agent, body, trace_id, created FROM replies"
        async with self.db.execute(f"{sql} WHERE ticket_id = ? ORDER BY id", (ticket_id,)) as cur:
            rows = await cur.fetchall()
        return [Reply(*r) for r in rows]

    async def add_draft(
        self,
        *,
        ticket_id: str,
        agent: str,
        trace_id: str,
        prompt_version: str,
        status: str,
        text: str,
        doc_ids: Iterable[str],
        tools: Iterable[dict[str, Any]],
        reason: str | None = None,
    ) -> int:
        async with self._lock:
            cur = await self.db.execute(
                "INSERT INTO drafts (ticket_id, agent, trace_id, prompt_version, status, text,"
                " doc_ids, tools, reason, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    ticket_id,
                    agent,
                    trace_id,
                    prompt_version,
                    status,
                    text,
                    json.dumps(list(doc_ids)),
                    json.dumps(list(tools)),
                    reason,
                    time.time(),
                ),
            )
            await self.db.commit()
        return int(cur.lastrowid or 0)

    async def drafts(self, ticket_id: str) -> list[Draft]:
        sql = "SELECT * FROM drafts WHERE ticket_id = ? ORDER BY id"
        async with self.db.execute(sql, (ticket_id,)) as cur:
            rows = await cur.fetchall()
        return [
            Draft(
                id=r[0],
                ticket_id=r[1],
                agent=r[2],
                trace_id=r[3],
                prompt_version=r[4],
                status=r[5],
                text=r[6],
                doc_ids=tuple(json.loads(r[7])),
                tools=tuple(json.loads(r[8])),
                reason=r[9],
                created=r[10],
            )
            for r in rows
        ]

"""Embedded authorized retrieval: SQLite FTS5 with the access rule in the same query.

The ACL lives in plain tables next to the FTS index (tenant and public flag on the document,
groups and users in link tables), and the search joins them in its WHERE clause, so a row the
caller may not see never leaves SQLite. User text reaches FTS5 only as quoted plain terms.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, Final

import aiosqlite
import orjson

from .base import AccessContext, Acl, Doc, query_terms

__all__ = ["SqliteFtsRetriever"]

_IDENT: Final = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")


class SqliteFtsRetriever:
    """Documents with ACLs in one SQLite file (or ``:memory:``); call ``migrate()`` once."""

    def __init__(self, path: str, *, prefix: str = "rag") -> None:
        if not _IDENT.match(prefix):
            raise ValueError(f"table prefix {prefix!r} must be a lowercase identifier")
        self._path = path
        self._p = prefix
        self._conn: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    async def _db(self) -> aiosqlite.Connection:
        async with self._lock:
            if self._conn is None:
                conn = await aiosqlite.connect(self._path)
                await conn.execute("PRAGMA foreign_keys = ON")
                self._conn = conn
            return self._conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def migrate(self) -> None:
        """Create the tables, FTS index and sync triggers if missing."""
        p = self._p
        db = await self._db()
        await db.executescript(
            f"""
            CREATE TABLE IF NOT EXISTS {p}_docs (
                rowid INTEGER PRIMARY KEY,
                id TEXT NOT NULL UNIQUE,
                body TEXT NOT NULL,
                source TEXT NOT NULL,
                tenant TEXT,
                public INTEGER NOT NULL DEFAULT 0
            );
            CREATE TABLE IF NOT EXISTS {p}_doc_groups (
                doc INTEGER NOT NULL REFERENCES {p}_docs(rowid) ON DELETE CASCADE,
                grp TEXT NOT NULL,
                PRIMARY KEY (grp, doc)
            ) WITHOUT ROWID;
            CREATE TABLE IF NOT EXISTS {p}_doc_users (
                doc INTEGER NOT NULL REFERENCES {p}_docs(rowid) ON DELETE CASCADE,
                usr TEXT NOT NULL,
                PRIMARY KEY (usr, doc)
            ) WITHOUT ROWID;
            CREATE VIRTUAL TABLE IF NOT EXISTS {p}_fts USING fts5(
                body, content='{p}_docs', content_rowid='rowid', tokenize='porter unicode61'
            );
            CREATE TRIGGER IF NOT EXISTS {p}_docs_ai AFTER INSERT ON {p}_docs BEGIN
                INSERT INTO {p}_fts(rowid, body) VALUES (new.rowid, new.body);
            END;
            CREATE TRIGGER IF NOT EXISTS {p}_docs_ad AFTER DELETE ON {p}_docs BEGIN
                INSERT INTO {p}_fts({p}_fts, rowid, body) VALUES ('delete', old.rowid, old.body);
            END;
            """
        )
        await db.commit()

    async def add(self, doc_id: str, text: str, *, source: str, acl: Acl) -> None:
        """Insert or replace one document with its ACL, atomically."""
        p = self._p
        db = await self._db()
        async with self._lock:
            await db.execute(f"DELETE FROM {p}_docs WHERE id = ?", (doc_id,))
            cur = await db.execute(
                f"INSERT INTO {p}_docs (id, body, source, tenant, public) VALUES (?, ?, ?, ?, ?)",
                (doc_id, text, source, acl.tenant, int(acl.public)),
            )
            rowid = cur.lastrowid
            await db.executemany(
                f"INSERT INTO {p}_doc_groups (doc, grp) VALUES (?, ?)",
                [(rowid, g) for g in sorted(acl.groups)],
            )
            await db.executemany(
                f"INSERT INTO {p}_doc_users (doc, usr) VALUES (?, ?)",
                [(rowid, u) for u in sorted(acl.users)],
            )
            await db.commit()

    async def delete(self, doc_id: str) -> bool:
        db = await self._db()
        async with self._lock:
            cur = await db.execute(f"DELETE FROM {self._p}_docs WHERE id = ?", (doc_id,))
            await db.commit()
            return cur.rowcount > 0

    async def search(self, query: str, access: AccessContext, k: int) -> list[Doc]:
        """Best ``k`` matches the caller may see; the ACL is part of the WHERE clause."""
        terms = query_terms(query)
        if not terms or k <= 0:
            return []
        p = self._p
        sql = f"""
            SELECT d.id, d.body, d.source, d.tenant, d.public,
                   (SELECT json_group_array(grp) FROM {p}_doc_groups WHERE doc = d.rowid),
                   (SELECT json_group_array(usr) FROM {p}_doc_users WHERE doc = d.rowid),
                   bm25({p}_fts) AS rank
            FROM {p}_fts JOIN {p}_docs AS d ON d.rowid = {p}_fts.rowid
            WHERE {p}_fts MATCH :match
              AND (d.tenant = :tenant OR d.tenant IS NULL)
              AND (d.public = 1
                   OR EXISTS (SELECT 1 FROM {p}_doc_users
                              WHERE doc = d.rowid AND usr = :user)
                   OR EXISTS (SELECT 1 FROM {p}_doc_groups
                              WHERE doc = d.rowid
                                AND grp IN (SELECT value FROM json_each(:groups))))
            ORDER BY rank, d.id
            LIMIT :k
        """
        params: dict[str, Any] = {
            "match": " OR ".join(f'"{t}"' for t in terms),
            "tenant": access.tenant,
            "user": access.user,
            "groups": orjson.dumps(sorted(access.groups)).decode(),
            "k": k,
        }
        db = await self._db()
        async with db.execute(sql, params) as cur:
            rows = await cur.fetchall()
        return [_doc(row) for row in rows]


def _doc(row: Any) -> Doc:
    doc_id, body, source, tenant, public, groups, users, rank = row
    acl = Acl(
        tenant=tenant,
        public=bool(public),
        groups=frozenset(orjson.loads(groups or "[]")),
        users=frozenset(orjson.loads(users or "[]")),
    )
    return Doc(str(doc_id), str(body), str(source), -float(rank), acl)

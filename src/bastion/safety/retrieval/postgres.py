"""Shared authorized retrieval: PostgreSQL full-text search with the access rule in the query.

One table holds text, source and ACL (tenant, public flag, ``groups`` and ``users`` arrays); a
generated ``tsvector`` column and GIN indexes make the search and the ACL filter one indexed
query. User text reaches ``to_tsquery`` only as plain word terms joined by ``|``.
"""

from __future__ import annotations

import re
from typing import Any, Final

from .base import AccessContext, Acl, Doc, query_terms

__all__ = ["PostgresFtsRetriever"]

_IDENT: Final = re.compile(r"^[a-z_][a-z0-9_]{0,50}$")


class PostgresFtsRetriever:
    """Documents with ACLs in PostgreSQL, over an asyncpg pool; call ``migrate()`` once."""

    def __init__(self, pool: Any, *, table: str = "rag_docs", config: str = "english") -> None:
        if not _IDENT.match(table):
            raise ValueError(f"table name {table!r} must be a lowercase identifier")
        if not _IDENT.match(config):
            raise ValueError(f"text search config {config!r} must be a lowercase identifier")
        self._pool = pool
        self._t = table
        self._config = config

    async def migrate(self) -> None:
        """Create the table and its indexes if missing (safe to run from every replica)."""
        t, cfg = self._t, self._config
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"bastion:{t}")
            await conn.execute(
                f"""
                CREATE TABLE IF NOT EXISTS {t} (
                    id text PRIMARY KEY,
                    body text NOT NULL,
                    source text NOT NULL,
                    tenant text,
                    public boolean NOT NULL DEFAULT false,
                    groups text[] NOT NULL DEFAULT '{{}}',
                    users text[] NOT NULL DEFAULT '{{}}',
                    tsv tsvector GENERATED ALWAYS AS (to_tsvector('{cfg}'::regconfig, body))
                        STORED
                );
                CREATE INDEX IF NOT EXISTS {t}_tsv ON {t} USING gin (tsv);
                CREATE INDEX IF NOT EXISTS {t}_groups ON {t} USING gin (groups);
                CREATE INDEX IF NOT EXISTS {t}_users ON {t} USING gin (users);
                """
            )

    async def add(self, doc_id: str, text: str, *, source: str, acl: Acl) -> None:
        """Insert or replace one document with its ACL."""
        async with self._pool.acquire() as conn:
            await conn.execute(
                f"""
                INSERT INTO {self._t} (id, body, source, tenant, public, groups, users)
                VALUES ($1, $2, $3, $4, $5, $6, $7)
                ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body, source = EXCLUDED.source,
                    tenant = EXCLUDED.tenant, public = EXCLUDED.public,
                    groups = EXCLUDED.groups, users = EXCLUDED.users
                """,
                doc_id,
                text,
                source,
                acl.tenant,
                acl.public,
                sorted(acl.groups),
                sorted(acl.users),
            )

    async def delete(self, doc_id: str) -> bool:
        async with self._pool.acquire() as conn:
            status: str = await conn.execute(f"DELETE FROM {self._t} WHERE id = $1", doc_id)
        return status.endswith(" 1")

    async def search(self, query: str, access: AccessContext, k: int) -> list[Doc]:
        """Best ``k`` matches the caller may see; the ACL is part of the WHERE clause."""
        terms = query_terms(query)
        if not terms or k <= 0:
            return []
        sql = f"""
            SELECT id, body, source, tenant, public, groups, users,
                   ts_rank_cd(tsv, q) AS score
            FROM {self._t}, to_tsquery($1::regconfig, $2) AS q
            WHERE tsv @@ q
              AND (tenant = $3 OR tenant IS NULL)
              AND (public OR $4 = ANY (users) OR groups && $5::text[])
            ORDER BY score DESC, id
            LIMIT $6
        """
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                sql,
                self._config,
                " | ".join(terms),
                access.tenant,
                access.user,
                sorted(access.groups),
                k,
            )
        return [
            Doc(
                r["id"],
                r["body"],
                r["source"],
                float(r["score"]),
                Acl(r["tenant"], r["public"], frozenset(r["groups"]), frozenset(r["users"])),
            )
            for r in rows
        ]

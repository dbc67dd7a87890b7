"""Records (keys, call log, spend ledger) behind one interface, in SQLite or PostgreSQL by URL.

    open_store("sqlite:///relative/path.db")   # relative to the working directory
    open_store("sqlite:////abs/path.db")
    open_store("sqlite://:memory:")
    open_store("postgresql://user@host:5432/db")  # or postgres://

Opening is synchronous and connects nothing; the first ``migrate()``/``ping()`` connects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.errors import ConfigError
from bastion.store.base import RecordStore
from bastion.store.migrations import MIGRATIONS, Migration, latest_version
from bastion.store.models import (
    ApiFormat,
    CallRecord,
    GroupBy,
    KeyLimits,
    KeyRecord,
    LedgerEntry,
    PromptVersion,
    hash_secret,
    new_key_id,
)
from bastion.store.sqlite import SQLiteStore

if TYPE_CHECKING:  # asyncpg is only loaded for a postgresql:// store URL
    from bastion.store.postgres import PostgresStore

__all__ = [
    "MIGRATIONS",
    "ApiFormat",
    "CallRecord",
    "GroupBy",
    "KeyLimits",
    "KeyRecord",
    "LedgerEntry",
    "Migration",
    "PostgresStore",
    "PromptVersion",
    "RecordStore",
    "SQLiteStore",
    "hash_secret",
    "latest_version",
    "new_key_id",
    "open_store",
]


def _sqlite_path(url: str, rest: str) -> str:
    """Read the SQLAlchemy-style path: three slashes relative, four absolute."""
    if rest in (":memory:", "/:memory:"):
        return ":memory:"
    path = rest[1:] if rest.startswith("/") else ""
    path = path.partition("?")[0]
    if not path:
        raise ConfigError(
            f"record store URL {url!r} has no file path: use sqlite:///relative.db, "
            "sqlite:////absolute.db or sqlite://:memory:"
        )
    return path


def open_store(url: str) -> RecordStore:
    """Pick the backend from the URL scheme, so deployments switch stores by config alone."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower() if sep else ""
    if scheme == "sqlite":
        return SQLiteStore(_sqlite_path(url, rest))
    if scheme in ("postgresql", "postgres"):
        from bastion.store.postgres import PostgresStore

        return PostgresStore(url)
    shown = scheme or "(none)"
    raise ConfigError(
        f"unknown record store URL scheme {shown!r}: use sqlite://, postgresql:// or postgres://"
    )


def __getattr__(name: str) -> object:
    """``PostgresStore`` is imported on first use, so a SQLite deployment never loads asyncpg."""
    if name == "PostgresStore":
        from bastion.store.postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

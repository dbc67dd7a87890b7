"""Who may see which document, and the one retrieval interface every backend implements.

A document is visible iff it belongs to the caller's tenant (or is global) AND it is public, or
lists the caller, or shares a group with the caller. Backends apply this rule inside their
query, so a document the caller may not see is never read out of the store; ``Acl.visible_to``
is the same rule in Python, for tests and for a defence-in-depth re-check, never the filter.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Protocol, runtime_checkable

__all__ = ["AccessContext", "Acl", "Doc", "Retriever", "normalize_query", "query_terms"]

_TERM: Final = re.compile(r"\w+")
_MAX_TERMS: Final = 32


def _frozen(values: Iterable[str]) -> frozenset[str]:
    return frozenset(values) if not isinstance(values, str) else frozenset((values,))


@dataclass(frozen=True, slots=True, init=False)
class AccessContext:
    """The caller's access set: tenant, groups and user id. Two callers share cache iff equal."""

    tenant: str
    groups: frozenset[str]
    user: str | None

    def __init__(self, tenant: str, groups: Iterable[str] = (), user: str | None = None) -> None:
        object.__setattr__(self, "tenant", tenant)
        object.__setattr__(self, "groups", _frozen(groups))
        object.__setattr__(self, "user", user)

    def cache_key(self) -> tuple[str, tuple[str, ...], str | None]:
        return (self.tenant, tuple(sorted(self.groups)), self.user)


@dataclass(frozen=True, slots=True, init=False)
class Acl:
    """A document's audience; ``tenant=None`` makes it global (every tenant's callers)."""

    tenant: str | None
    public: bool
    groups: frozenset[str]
    users: frozenset[str]

    def __init__(
        self,
        tenant: str | None,
        public: bool = False,
        groups: Iterable[str] = (),
        users: Iterable[str] = (),
    ) -> None:
        object.__setattr__(self, "tenant", tenant)
        object.__setattr__(self, "public", bool(public))
        object.__setattr__(self, "groups", _frozen(groups))
        object.__setattr__(self, "users", _frozen(users))

    def visible_to(self, access: AccessContext) -> bool:
        if self.tenant is not None and self.tenant != access.tenant:
            return False
        if self.public or bool(self.groups & access.groups):
            return True
        return access.user is not None and access.user in self.users


@dataclass(frozen=True, slots=True)
class Doc:
    """A retrieved chunk; ``source`` names where it came from, ``flags`` what screening found."""

    id: str
    text: str
    source: str
    score: float
    acl: Acl
    flags: frozenset[str] = field(default_factory=frozenset)


@runtime_checkable
class Retriever(Protocol):
    """Search returning only documents ``access`` may see, best first, at most ``k``."""

    async def search(self, query: str, access: AccessContext, k: int) -> list[Doc]: ...


def normalize_query(query: str) -> str:
    """Case, width and spacing folded, so trivially different queries share a cache entry."""
    return " ".join(unicodedata.normalize("NFKC", query).casefold().split())


def query_terms(query: str) -> list[str]:
    """Plain word terms for a full-text query; search syntax in user text is never passed on."""
    return _TERM.findall(normalize_query(query))[:_MAX_TERMS]

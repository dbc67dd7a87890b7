"""Authorized retrieval: the model never sees a document its user may not see, and RAG degrades, not fails."""

from __future__ import annotations

from .base import AccessContext, Acl, Doc, Retriever, normalize_query, query_terms
from .concurrent import prepare_concurrently
from .postgres import PostgresFtsRetriever
from .resilient import INJECTION_FLAG, UNTRUSTED_FLAG, ResilientRetriever, Retrieval
from .sqlite import SqliteFtsRetriever

__all__ = [
    "INJECTION_FLAG",
    "UNTRUSTED_FLAG",
    "AccessContext",
    "Acl",
    "Doc",
    "PostgresFtsRetriever",
    "ResilientRetriever",
    "Retrieval",
    "Retriever",
    "SqliteFtsRetriever",
    "normalize_query",
    "prepare_concurrently",
    "query_terms",
]

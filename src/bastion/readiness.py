"""Readiness: can this gateway serve? One verdict for ``/readyz`` and for ``bastion check``.

A provider is ready when it is simulated, has its API key, or is an OpenAI-compatible
server (which may need none); the record store is ready when it answers a ping.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .store import RecordStore

__all__ = ["Readiness", "provider_ready", "readiness"]


def provider_ready(kind: str, api_key: str | None) -> bool:
    """Whether a provider of this kind can be called with this key (or none)."""
    # bedrock signs with AWS credentials botocore resolves on first use (``bastion check`` looks)
    return kind in ("sim", "openai-compatible", "bedrock") or bool(api_key)


@dataclass(slots=True)
class Readiness:
    """The verdict, the per-part checks (the ``/readyz`` body) and why the store failed, if it did."""

    ok: bool
    checks: dict[str, Any] = field(default_factory=dict)
    store_error: BaseException | None = None

    @property
    def status(self) -> str:
        return "ready" if self.ok else "not_ready"


async def readiness(
    store: RecordStore | None, providers: Mapping[str, tuple[str, str | None]]
) -> Readiness:
    """Ping the store (``None``: not checked) and judge each provider ``name -> (kind, api key)``."""
    out = Readiness(ok=True)
    if store is not None:
        t0 = time.monotonic()
        try:
            await store.ping()
            out.checks["store"] = {"ok": True, "ms": round((time.monotonic() - t0) * 1000, 2)}
        except Exception as exc:
            out.ok = False
            out.store_error = exc
            out.checks["store"] = {"ok": False, "error": "the record store is unreachable"}
    judged = {}
    for name, (kind, key) in providers.items():
        configured = provider_ready(kind, key)
        judged[name] = {"kind": kind, "configured": configured}
        out.ok = out.ok and configured
    out.checks["providers"] = judged
    return out

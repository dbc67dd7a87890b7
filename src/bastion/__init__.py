"""Bastion: the production-hardening layer for LLM applications, as a gateway and a library."""

from __future__ import annotations

import gc

# Importing the package builds ~10^5 objects that live as long as the process, so the cyclic
# collector's passes during the import free nothing and cost ~15% of its time: paused for it.
_collecting = gc.isenabled()
gc.disable()
try:
    from .config import Config, load_config
    from .errors import (
        AIUnavailable,
        AuthenticationFailed,
        BastionError,
        BudgetExceeded,
        ConfigError,
        InvalidRequest,
        NotFound,
        RateLimited,
        UpstreamError,
    )
    from .gateway import Gateway
finally:
    if _collecting:
        gc.enable()


def server_app(gateway: Gateway) -> object:
    """The ASGI app serving a gateway (to mount it in another server or drive it in tests)."""
    from .server.app import create_app

    return create_app(gateway)


__all__ = [
    "AIUnavailable",
    "AuthenticationFailed",
    "BastionError",
    "BudgetExceeded",
    "Config",
    "ConfigError",
    "Gateway",
    "InvalidRequest",
    "NotFound",
    "RateLimited",
    "UpstreamError",
    "load_config",
    "server_app",
]

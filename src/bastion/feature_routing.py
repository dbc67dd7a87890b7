"""Which model a call may have, decided before any guard spends.

A feature may pin a (cheaper) model in place of the client's, or allow only some; the model
must be configured (an unknown one is a 404) and be a chat model; and ``n`` > 1 choices are
served only where every deployment answers them natively, never one choice silently.
"""

from __future__ import annotations

from typing import Any

from .config import Config
from .errors import InvalidRequest, PermissionDenied
from .providers.base import Format
from .reliability.router import Router

__all__ = ["N_CHOICES", "admit_route", "route_feature"]

# provider kinds that answer ``n`` > 1 choices natively
N_CHOICES = frozenset({"openai", "openai-compatible"})


def admit_route(
    config: Config, router: Router, fmt: Format, body: dict[str, Any], feature: str | None
) -> str | None:
    """The feature's model pin or allow-list, the model's deployments, and ``n``.

    Returns the model the client asked for when the feature's pin replaced it.
    """
    client_model = route_feature(config, body, feature)
    # an unknown model is a 404 before any guard spends
    deployments = router.resolve(body["model"])
    if deployments[0].dimensions is not None:
        raise InvalidRequest(
            f"model {body['model']!r} is an embedding model; use /v1/embeddings",
            param="model",
        )
    n = body.get("n")
    if (
        isinstance(n, int)
        and n > 1
        and (
            fmt is not Format.OPENAI  # a Messages answer holds one message, whoever answers
            or any(d.endpoint.kind not in N_CHOICES for d in deployments)
        )
    ):
        # never one choice silently: only OpenAI deployments answer n choices
        raise InvalidRequest(
            f"n: {n} choices are served only by OpenAI deployments to chat completions "
            f"calls; model {body['model']!r} may be answered with a single choice",
            param="n",
        )
    return client_model


def route_feature(config: Config, body: dict[str, Any], feature: str | None) -> str | None:
    """Per-feature routing: a pinned (cheaper) model replaces the client's; an allow-list
    refuses others. Returns the model the client asked for when it was replaced."""
    f = config.features.get(feature) if feature else None
    if f is None:
        return None
    asked: str = body["model"]
    if f.model is not None and asked != f.model:
        body["model"] = f.model
        return asked
    if f.allowed_models is not None and asked not in f.allowed_models:
        raise PermissionDenied(
            f"model {asked!r} is not allowed for feature {feature!r} "
            f"(allowed: {', '.join(f.allowed_models)})",
            param="model",
        )
    return None

"""Model aliases to ordered deployments, resolved from config once and cached per name."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass

from ..config import Config, PrefillMode, TimeoutConfig
from ..errors import NotFound
from ..providers.adapters import Endpoint
from ..providers.base import Transport


@dataclass(frozen=True, slots=True)
class Deployment:
    """One place a model can be served: an endpoint, the upstream model name, its timeouts."""

    name: str
    endpoint: Endpoint
    transport: Transport
    model: str
    headers: Mapping[str, str]
    timeouts: TimeoutConfig
    prefill: PrefillMode = "auto"  # how a cut stream is carried on here (see config)
    dimensions: int | None = None  # an embedding deployment's vector length


class Router:
    """Resolves the client's model name: exact aliases first, then globs in config order."""

    __slots__ = ("_cache", "_config", "_endpoints", "_transports")

    def __init__(
        self, config: Config, endpoints: Mapping[str, Endpoint], transports: Mapping[str, Transport]
    ) -> None:
        self._config = config
        self._endpoints = endpoints
        self._transports = transports
        self._cache: dict[str, tuple[Deployment, ...]] = {}

    def aliases(self) -> list[str]:
        """Client-facing names without wildcards, for ``GET /v1/models``."""
        return [a for a in self._config.models if not any(c in a for c in "*?[")]

    def deployment_names(self) -> list[str]:
        """Every enabled deployment with a fixed model (not a ``{model}`` template), by the
        name its breaker is kept under: what dashboards and metrics report on."""
        names: list[str] = []
        for spec in self._config.models.values():
            for i, d in enumerate(spec.deployments):
                name = f"{d.provider}/{d.model}#{i}"
                if d.enabled() and "{model}" not in d.model and name not in names:
                    names.append(name)
        return names

    def resolve(self, model: str) -> tuple[Deployment, ...]:
        hit = self._cache.get(model)
        if hit is not None:
            return hit
        spec = self._config.models.get(model)
        if spec is None:
            for pattern, cand in self._config.models.items():
                if fnmatch.fnmatchcase(model, pattern):
                    spec = cand
                    break
        if spec is None:
            raise NotFound(f"model {model!r} is not configured on this gateway")
        deps = []
        for i, d in enumerate(spec.deployments):
            if not d.enabled():
                continue
            upstream_model = d.model.replace("{model}", model)
            deps.append(
                Deployment(
                    name=f"{d.provider}/{upstream_model}#{i}",
                    endpoint=self._endpoints[d.provider],
                    transport=self._transports[d.provider],
                    model=upstream_model,
                    headers=d.headers,
                    timeouts=d.timeouts,
                    prefill=d.prefill,
                    dimensions=d.dimensions,
                )
            )
        if not deps:
            raise NotFound(f"model {model!r} has no enabled deployment")
        result = tuple(deps)
        if len(self._cache) < 4096:
            self._cache[model] = result
        return result

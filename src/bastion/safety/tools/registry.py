"""The tools an app offers a model, each declaring what it needs before it may run.

Every tool states its permission explicitly (``None`` means any caller), so a forgotten
declaration is a start-up error rather than a tool open to everyone. Argument schemas are
checked and compiled once, at registration.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from bastion.call import Principal
from bastion.errors import ConfigError

from ..validation.jsonout import JsonSchemaValidator

__all__ = ["ToolContext", "ToolError", "ToolFunc", "ToolRegistry", "ToolSpec"]

_NAME: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ToolError(Exception):
    """Raise from a tool when the action did not happen; the message is shown to the model.

    Any other exception is reported to the model only as ``tool_failed``, so internals
    (stack traces, connection strings) never reach it.
    """


@dataclass(frozen=True, slots=True)
class ToolContext:
    """Who asked and under which idempotency key (pass it on to the API that acts)."""

    principal: Principal
    call_id: str
    conversation_id: str | None
    idempotency_key: str | None


ToolFunc = Callable[[dict[str, Any], ToolContext], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One tool: what the model is told, and what the executor enforces."""

    name: str
    description: str
    parameters: Mapping[str, Any]
    func: ToolFunc
    permission: str | None
    side_effects: bool = False
    timeout: float = 10.0
    validator: JsonSchemaValidator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(f"tool name {self.name!r} must match [A-Za-z0-9_-]{{1,64}}")
        if not (self.timeout > 0):
            raise ConfigError(f"tool {self.name!r}: timeout must be positive")
        if self.parameters.get("type") != "object":
            raise ConfigError(f"tool {self.name!r}: parameters must be an object schema")
        try:
            object.__setattr__(self, "validator", JsonSchemaValidator(self.parameters))
        except ValueError as exc:
            raise ConfigError(f"tool {self.name!r}: {exc}") from exc

    def allowed(self, principal: Principal) -> bool:
        return self.permission is None or self.permission in principal.roles


class ToolRegistry:
    """Tools by name; register explicitly or with the ``@registry.tool(...)`` decorator."""

    def __init__(self, specs: Iterable[ToolSpec] = ()) -> None:
        self._tools: dict[str, ToolSpec] = {}
        for spec in specs:
            self.add(spec)

    def add(self, spec: ToolSpec) -> ToolSpec:
        if spec.name in self._tools:
            raise ConfigError(f"tool {spec.name!r} is registered twice")
        self._tools[spec.name] = spec
        return spec

    def register(
        self,
        func: ToolFunc,
        *,
        parameters: Mapping[str, Any],
        permission: str | None,
        name: str | None = None,
        description: str | None = None,
        side_effects: bool = False,
        timeout: float = 10.0,
    ) -> ToolSpec:
        """Register ``func``; name and description default to its name and docstring."""
        doc = (description or func.__doc__ or "").strip()
        if not doc:
            raise ConfigError(f"tool {name or func.__name__!r} needs a description")
        return self.add(
            ToolSpec(
                name=name or func.__name__,
                description=doc,
                parameters=parameters,
                func=func,
                permission=permission,
                side_effects=side_effects,
                timeout=timeout,
            )
        )

    def tool(
        self,
        *,
        parameters: Mapping[str, Any],
        permission: str | None,
        name: str | None = None,
        description: str | None = None,
        side_effects: bool = False,
        timeout: float = 10.0,
    ) -> Callable[[ToolFunc], ToolFunc]:
        """Decorator form of ``register``; returns the function unchanged."""

        def decorate(func: ToolFunc) -> ToolFunc:
            self.register(
                func,
                parameters=parameters,
                permission=permission,
                name=name,
                description=description,
                side_effects=side_effects,
                timeout=timeout,
            )
            return func

        return decorate

    def get(self, name: str) -> ToolSpec | None:
        return self._tools.get(name)

    def __iter__(self) -> Iterator[ToolSpec]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def visible_to(self, principal: Principal | None) -> list[ToolSpec]:
        """The tools to offer: a model is not told about tools its caller may not use."""
        if principal is None:
            return list(self._tools.values())
        return [t for t in self._tools.values() if t.allowed(principal)]

"""The admitted request, frozen: it reads as the dicts and lists it was, and refuses writes.

Admission guards (templates, PII, token limits) rewrite the request; once they are done,
nothing downstream may change what was admitted and reserved against: every attempt builds
its upstream body from a copy, and a write to the admitted request is a bug that fails loudly
(``TypeError``) instead of silently changing the next attempt. Subclasses of ``dict`` and
``list``, so orjson, ``dict(...)`` and ``{**...}`` treat them as plain values (and the copies
they make are plain, writable ones).
"""

from __future__ import annotations

from typing import Any, NoReturn

__all__ = ["FrozenDict", "FrozenList", "freeze"]

_MESSAGE = "the admitted request is frozen: build the upstream body from a copy"


def _refuse(*args: Any, **kwargs: Any) -> NoReturn:
    raise TypeError(_MESSAGE)


class FrozenDict(dict[str, Any]):
    """A dict that refuses every write after it is built."""

    __slots__ = ()
    __setitem__ = _refuse
    __delitem__ = _refuse
    __ior__ = _refuse
    clear = _refuse
    pop = _refuse
    popitem = _refuse
    setdefault = _refuse
    update = _refuse

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (dict(self),))


class FrozenList(list[Any]):
    """A list that refuses every write after it is built."""

    __slots__ = ()
    __setitem__ = _refuse
    __delitem__ = _refuse
    __iadd__ = _refuse
    __imul__ = _refuse
    append = _refuse
    extend = _refuse
    insert = _refuse
    remove = _refuse
    pop = _refuse
    clear = _refuse
    sort = _refuse
    reverse = _refuse

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenList, (list(self),))


def freeze(value: Any) -> Any:
    """A deep, read-only copy of JSON-shaped data (dicts and lists; other values as they are)."""
    if isinstance(value, dict):
        return FrozenDict({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return FrozenList(freeze(v) for v in value)
    return value

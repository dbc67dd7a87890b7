"""Open streams per key and per user, counted in-process, so one caller cannot hold every connection.

A stream holds an upstream connection for as long as it runs; a caller that opens many and
reads none of them would otherwise hold a provider's whole connection pool. Counting is
in-process (no counter store round trip on the hot path, nothing to leak when a process
dies): with N replicas a key may hold N times the limit, which is what keeping the per-key
limit below each provider's pool size is about.
"""

from __future__ import annotations

from ..errors import TooManyStreams

__all__ = ["StreamLease", "StreamLimits"]


class StreamLease:
    """One admitted stream; ``release`` gives its slots back (once, however often it is called)."""

    __slots__ = ("_key", "_limits", "_user")

    def __init__(self, limits: StreamLimits, key: str, user: str | None) -> None:
        self._limits = limits
        self._key: str | None = key
        self._user = user

    def release(self) -> None:
        if self._key is None:
            return
        self._limits._drop(self._key, self._user)
        self._key = None

    @property
    def held(self) -> bool:
        return self._key is not None


class StreamLimits:
    """Counts open streams per key and per user subject; refuses past a limit with a 429."""

    __slots__ = ("_keys", "_per_key", "_per_user", "_users")

    def __init__(self, *, per_key: int | None, per_user: int | None) -> None:
        self._per_key = per_key
        self._per_user = per_user
        self._keys: dict[str, int] = {}
        self._users: dict[str, int] = {}

    def acquire(self, key_id: str, user: str | None) -> StreamLease:
        """Admit one more stream for ``key_id`` (and ``user``, a subject already scoped to its key)."""
        k = self._keys.get(key_id, 0)
        if self._per_key is not None and k >= self._per_key:
            raise TooManyStreams(
                f"too many concurrent streams for this API key (limit {self._per_key}); "
                "finish or close a stream first",
                retry_after=1.0,
                scope="streams_per_key",
            )
        if user is not None and self._per_user is not None:
            if self._users.get(user, 0) >= self._per_user:
                raise TooManyStreams(
                    f"too many concurrent streams for this user (limit {self._per_user}); "
                    "finish or close a stream first",
                    retry_after=1.0,
                    scope="streams_per_user",
                )
            self._users[user] = self._users.get(user, 0) + 1
        self._keys[key_id] = k + 1
        return StreamLease(self, key_id, user)

    def open_streams(self, key_id: str) -> int:
        return self._keys.get(key_id, 0)

    def _drop(self, key_id: str, user: str | None) -> None:
        for counts, name in ((self._keys, key_id), (self._users, user)):
            if name is None:
                continue
            n = counts.get(name, 0) - 1
            if n > 0:
                counts[name] = n
            else:
                counts.pop(name, None)  # no entry per idle key: the maps stay as small as the load

"""Rate-limited deployments in this process: a request the provider would refuse waits its turn.

Each deployment has a ``policy.RateWindow`` fed by its answers (429s and the providers'
rate-limit headers). An attempt asks ``turn`` before it is sent: it goes at once, or waits for
the soonest moment the deployment takes a request again if that fits its patience, or is told
to go elsewhere. Every concurrent call of the process shares the windows, so calls waiting on
one reset do not all rush it: the first ``limit`` go, the rest wait for the next one.

The windows live in the process (the provider's answers arrive here). Across replicas, a
deployment known to be used up (a 429, or an answer saying no request is left) is also written
to the shared counter store as "resting until" (wall-clock ms, set if absent, expiring with
it), and each replica reads it back at most every ``SYNC_EVERY`` seconds per deployment before
sending there. The store is advisory here as for breakers: slow or down, it is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Protocol, TypeVar

from ..errors import StateUnavailable
from ..providers.adapters import retry_after
from ..state import CounterStore
from .policy import RateWindow

__all__ = ["Cooling", "request_limits"]

# what an unexplained 429 (no Retry-After, no reset header) rests a deployment for
DEFAULT_REST = 0.5
# how stale a replica's view of the shared rests may be, and how long one look may take
SYNC_EVERY = 0.25
STORE_TIMEOUT = 0.5
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class _Named(Protocol):
    @property
    def name(self) -> str: ...


D = TypeVar("D", bound=_Named)


def _int(raw: str | None) -> int | None:
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def _duration(raw: str) -> float | None:
    """OpenAI's ``6m0s`` / ``1.5s`` / ``20ms``; a bare number is seconds."""
    try:
        return float(raw)
    except ValueError:
        pass
    parts = _DURATION.findall(raw)
    if not parts or "".join(n + u for n, u in parts) != raw.strip():
        return None
    return sum(float(n) * _UNIT[u] for n, u in parts)


def _until(raw: str, wall: float) -> float | None:
    """Seconds from ``wall`` to an RFC 3339 time (Anthropic's reset headers)."""
    try:
        return datetime.fromisoformat(raw.strip().replace("Z", "+00:00")).timestamp() - wall
    except ValueError:
        return None


def request_limits(
    headers: Mapping[str, str], wall: float
) -> tuple[int | None, float | None, int | None]:
    """Requests left, seconds until the window resets, and the limit, as the provider said."""
    left = _int(headers.get("x-ratelimit-remaining-requests"))
    if left is not None:
        raw = headers.get("x-ratelimit-reset-requests")
        reset = _duration(raw) if raw else None
        return left, reset, _int(headers.get("x-ratelimit-limit-requests"))
    left = _int(headers.get("anthropic-ratelimit-requests-remaining"))
    if left is not None:
        raw = headers.get("anthropic-ratelimit-requests-reset")
        reset = _until(raw, wall) if raw else None
        return left, reset, _int(headers.get("anthropic-ratelimit-requests-limit"))
    return None, None, None


class Cooling:
    """The rate windows of every deployment this process sends to, and the waits they ask for."""

    __slots__ = ("_answers", "_clock", "_store", "_synced", "_wall", "_windows")

    def __init__(
        self,
        store: CounterStore | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._clock = clock
        self._wall = wall
        self._windows: dict[str, RateWindow] = {}
        self._answers: dict[str, asyncio.Event] = {}  # set when a deployment answers
        self._synced: dict[str, float] = {}  # deployment -> when the shared rest was last read

    def wait(self, name: str) -> float | None:
        """Seconds before the deployment takes a request (0.0: now; None: until it answers)."""
        w = self._windows.get(name)
        return 0.0 if w is None else w.wait(self._clock())

    def soonest(self, name: str) -> float:
        """The wait as a Retry-After for the caller (a guess when only an answer will tell)."""
        w = self.wait(name)
        return DEFAULT_REST if w is None else w

    def order(self, deployments: Sequence[D]) -> list[D]:
        """Deployments free now keep their order; resting ones follow, soonest first."""
        if not self._windows:
            return list(deployments)
        waits = [self.wait(d.name) for d in deployments]
        if all(w == 0.0 for w in waits):
            return list(deployments)
        ranked = sorted(
            range(len(deployments)),
            key=lambda i: (0.0, i) if waits[i] == 0.0 else (1.0 + (waits[i] or 1e9), i),
        )
        return [deployments[i] for i in ranked]

    def take(self, name: str) -> int:
        """Count a request sent now; its ticket, for ``answered``."""
        w = self._windows.get(name)
        if w is None:
            w = self._windows[name] = RateWindow()
        return w.take(self._clock())

    async def turn(self, name: str, patience: float) -> int | None:
        """Wait, at most ``patience`` seconds, until the deployment takes a request; its ticket,
        or None when it would not within that (the caller goes elsewhere or gives up)."""
        end = self._clock() + patience
        await self._sync(name)
        while True:
            w = self.wait(name)
            if w == 0.0:
                return self.take(name)
            left = end - self._clock()
            if w is None:
                if left <= 0:
                    return None
                # the window's end is told by the next answer; none in time: the provider decides
                if not await self._answer(name, left / 2):
                    return self.take(name)
                continue
            if w > left:
                return None
            await asyncio.sleep(w)

    async def answered(
        self, name: str, ticket: int, status: int, headers: Mapping[str, str]
    ) -> None:
        """Apply an answer's rate-limit headers; a 429 or 529 rests the deployment."""
        window = self._windows.get(name)
        if window is None:
            window = self._windows[name] = RateWindow()
        now = self._clock()
        left, reset_in, limit = request_limits(headers, self._wall())
        window.observe(now, ticket, left, reset_in, limit)
        rest = reset_in if reset_in is not None and left == 0 else None
        if status in (429, 529):
            rest = retry_after(headers) or rest or DEFAULT_REST
            window.refused(now, rest)
        event = self._answers.pop(name, None)
        if event is not None:
            event.set()
        if rest is not None and rest > 0 and self._store is not None:
            until_ms = float(round((self._wall() + rest) * 1000))
            with contextlib.suppress(StateUnavailable, TimeoutError):
                async with asyncio.timeout(STORE_TIMEOUT):
                    await self._store.incr_if_below("rest:" + name, until_ms, until_ms, rest)

    async def _sync(self, name: str) -> None:
        """Take in a rest another replica shared (at most every ``SYNC_EVERY`` seconds)."""
        now = self._clock()
        if self._store is None or now - self._synced.get(name, -SYNC_EVERY) < SYNC_EVERY:
            return
        self._synced[name] = now
        try:
            async with asyncio.timeout(STORE_TIMEOUT):
                until_ms = await self._store.get("rest:" + name)
        except (StateUnavailable, TimeoutError):
            return
        rest = until_ms / 1000 - self._wall()
        if rest > 0:
            window = self._windows.get(name)
            if window is None:
                window = self._windows[name] = RateWindow()
            window.refused(self._clock(), rest)

    async def _answer(self, name: str, timeout: float) -> bool:
        event = self._answers.get(name)
        if event is None:
            event = self._answers[name] = asyncio.Event()
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
        except TimeoutError:
            return False
        return True

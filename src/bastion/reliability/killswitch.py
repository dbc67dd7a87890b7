"""The kill switch: one toggle (global, per feature, per key) that every replica obeys within a second.

Flags live in the counter store; each replica re-reads them at most every
``kill_switch_poll_seconds`` (0.25 s by default), so a flip propagates in well
under a second without a store round trip on every call. The embedded store shares
its flags through its SQLite file, so the CLI and other processes reach it too.

A feature switch covers every call the budget counts under that feature: a call naming
a feature that is not configured is counted as ``default``, so killing ``default`` stops
it too (naming another feature must not escape a switch).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..call import Call
from ..errors import AIUnavailable, StateUnavailable
from ..state import CounterStore

__all__ = [
    "PREFIX",
    "KillSwitchGuard",
    "Switch",
    "covering_keys",
    "flag_key",
    "set_kill",
    "switches_on",
    "unconfigured_note",
]

PREFIX = "kill:"


def flag_key(feature: str | None = None, key_id: str | None = None) -> str:
    if feature:
        return f"{PREFIX}feature:{feature}"
    if key_id:
        return f"{PREFIX}key:{key_id}"
    return f"{PREFIX}global"


def covering_keys(call: Call, features: Collection[str]) -> tuple[str, ...]:
    """Every switch that stops this call: global, its feature as the budget counts it, its key.

    The name as sent is checked too, so a switch on an unconfigured name still stops the
    calls that send exactly that name.
    """
    counted = call.feature if call.feature in features else "default"
    keys = [f"{PREFIX}global", f"{PREFIX}feature:{counted}"]
    if call.feature and call.feature != counted:
        keys.append(f"{PREFIX}feature:{call.feature}")
    keys.append(f"{PREFIX}key:{call.principal.key_id}")
    return tuple(keys)


def unconfigured_note(feature: str) -> str:
    """Why a switch on an unconfigured feature name stops less than its flipper may think."""
    return (
        f"feature {feature!r} is not configured: its calls are counted under 'default', so this"
        " switch stops only calls that send exactly this name; kill 'default' to stop them all"
    )


async def set_kill(
    state: CounterStore,
    on: bool,
    *,
    who: str,
    feature: str | None = None,
    key_id: str | None = None,
    via: str | None = None,
) -> str:
    """Flip a switch and record who flipped it, when, and through what (``via``: CLI, admin key)."""
    key = flag_key(feature, key_id)
    meta: dict[str, Any] = {"who": who, "at": time.time(), "on": on}
    if via:
        meta["via"] = via
    await state.set_flag(key, "on" if on else None, meta)
    return key


@dataclass(frozen=True, slots=True)
class Switch:
    """One switch that is on, with who turned it on and when (for people, not for the guard)."""

    name: str  # "global", "feature:x", "key:k"
    who: str | None
    at: float | None  # epoch seconds
    via: str | None = None

    def at_iso(self) -> str | None:
        """ISO 8601 in UTC, so every reader (CLI, API, dashboard) shows the same instant."""
        if self.at is None:
            return None
        return (
            datetime.fromtimestamp(self.at, UTC)
            .isoformat(timespec="seconds")
            .replace("+00:00", "Z")
        )

    def ago_seconds(self, now: float) -> float | None:
        return None if self.at is None else max(0.0, now - self.at)

    def since(self, now: float) -> str:
        """How long traffic has been off, for people: "12 s ago", "5 min ago", "3 h ago", "2 d ago"."""
        ago = self.ago_seconds(now)
        if ago is None:
            return "at an unknown time"
        for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
            if ago >= size:
                return f"{int(ago // size)} {unit} ago"
        return f"{int(ago)} s ago"

    def describe(self, now: float) -> str:
        """One line for the CLI: ``global: on (by oncall at 2025-01-02T03:04:05Z, 12 s ago)``."""
        via = f" via {self.via}" if self.via else ""
        return (
            f"{self.name}: on (by {self.who or '?'} at {self.at_iso() or '?'}, "
            f"{self.since(now)}){via}"
        )

    def as_json(self, now: float) -> dict[str, Any]:
        ago = self.ago_seconds(now)
        return {
            "on": True,
            "who": self.who,
            "via": self.via,
            "at": self.at,
            "at_iso": self.at_iso(),
            "ago_seconds": None if ago is None else round(ago, 1),
            "since": self.since(now),
        }


def _switch(key: str, meta: Mapping[str, Any] | None) -> Switch:
    meta = meta or {}
    who, at, via = meta.get("who"), meta.get("at"), meta.get("via")
    return Switch(
        key.removeprefix(PREFIX),
        who if isinstance(who, str) else None,
        float(at) if isinstance(at, int | float) and not isinstance(at, bool) else None,
        via if isinstance(via, str) else None,
    )


async def switches_on(state: CounterStore) -> list[tuple[Switch, dict[str, Any] | None]]:
    """Every switch that is on, sorted by name, with its raw meta (read from the store now)."""
    out = []
    for key in sorted(await state.get_flags(PREFIX)):
        meta = await state.flag_meta(key)
        out.append((_switch(key, meta), meta))
    return out


class KillSwitchGuard:
    """Answers with the degraded response while a switch covering the call is on."""

    name = "kill_switch"

    def __init__(
        self,
        state: CounterStore,
        poll_seconds: float,
        *,
        fail_open: bool,
        features: Collection[str] = ("default",),
    ) -> None:
        self._state = state
        self._poll = poll_seconds
        self._fail_open = fail_open
        self._features = frozenset(features)
        self._flags: dict[str, str] = {}
        self._read_at = -1e9
        self._reading: asyncio.Task[dict[str, str]] | None = None

    async def flags(self) -> dict[str, str]:
        """The flags, re-read at most every poll; calls arriving during a read await that read.

        Sharing one read keeps a burst from queueing reads (the embedded store reads its file
        in a thread), and no call passes on stale flags while the first read is in flight.
        """
        if time.monotonic() - self._read_at < self._poll:
            return self._flags
        reading = self._reading
        if reading is None or reading.done():
            reading = self._reading = asyncio.create_task(self._read())
            reading.add_done_callback(_retrieve)
        return await asyncio.shield(reading)

    async def _read(self) -> dict[str, str]:
        started = time.monotonic()
        try:
            flags = await self._state.get_flags(PREFIX)
        except StateUnavailable:
            if not self._fail_open:
                raise  # every call waiting on this read is refused; the next one reads again
            flags = self._flags
        if self._reading is asyncio.current_task():  # not superseded by invalidate()
            self._flags, self._read_at = flags, started
        return flags

    def invalidate(self) -> None:
        """Re-read on the next call (this replica flipped the switch itself)."""
        self._read_at = -1e9
        self._reading = None  # a read begun before the flip must not answer calls after it

    async def before(self, call: Call) -> None:
        flags = await self.flags()
        if not flags:
            return
        for key in covering_keys(call, self._features):
            if key in flags:
                call.flags["kill_switch"] = key
                raise AIUnavailable("AI is switched off by the kill switch", reason="kill_switch")


def _retrieve(task: asyncio.Task[dict[str, str]]) -> None:
    """Mark a failed read's error as seen when every caller awaiting it was cancelled."""
    if not task.cancelled():
        task.exception()

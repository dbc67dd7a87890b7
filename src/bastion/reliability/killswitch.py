"""The kill switch: one toggle (global, per feature, per key) that every replica obeys within a second.

Flags live in the counter store; each replica re-reads them at most every
``kill_switch_poll_seconds`` (0.25 s by default), so a flip propagates in well
under a second without a store round trip on every call.
"""

from __future__ import annotations

import time
from typing import Any

from ..call import Call
from ..errors import AIUnavailable, StateUnavailable
from ..state import CounterStore

PREFIX = "kill:"


def flag_key(feature: str | None = None, key_id: str | None = None) -> str:
    if feature:
        return f"{PREFIX}feature:{feature}"
    if key_id:
        return f"{PREFIX}key:{key_id}"
    return f"{PREFIX}global"


async def set_kill(
    state: CounterStore,
    on: bool,
    *,
    who: str,
    feature: str | None = None,
    key_id: str | None = None,
) -> str:
    """Flip a switch and record who flipped it and when."""
    key = flag_key(feature, key_id)
    meta: dict[str, Any] = {"who": who, "at": time.time(), "on": on}
    await state.set_flag(key, "on" if on else None, meta)
    return key


class KillSwitchGuard:
    """Answers with the degraded response while a switch covering the call is on."""

    name = "kill_switch"

    def __init__(self, state: CounterStore, poll_seconds: float, *, fail_open: bool) -> None:
        self._state = state
        self._poll = poll_seconds
        self._fail_open = fail_open
        self._flags: dict[str, str] = {}
        self._read_at = -1e9

    async def flags(self) -> dict[str, str]:
        now = time.monotonic()
        if now - self._read_at >= self._poll:
            try:
                self._flags = await self._state.get_flags(PREFIX)
            except StateUnavailable:
                if not self._fail_open:
                    raise
            self._read_at = now
        return self._flags

    def invalidate(self) -> None:
        """Re-read on the next call (this replica flipped the switch itself)."""
        self._read_at = -1e9

    async def before(self, call: Call) -> None:
        flags = await self.flags()
        if not flags:
            return
        for key in (
            f"{PREFIX}global",
            f"{PREFIX}feature:{call.feature or 'default'}",
            f"{PREFIX}key:{call.principal.key_id}",
        ):
            if key in flags:
                call.flags["kill_switch"] = key
                raise AIUnavailable("AI is switched off by the kill switch", reason="kill_switch")

"""SQL in a streamed tool call is checked before any of it reaches the app, as in a whole answer.

A tool call's arguments are complete only at its end, so a call that is (or may still turn
out to be) one of the feature's SQL tools is held: its events are kept back while text and
other tools stream on. When its arguments are complete (Anthropic ``content_block_stop``,
OpenAI ``finish_reason`` or ``[DONE]``) the SQL is checked like a whole answer's
(``SqlToolCheck``): a valid query is released, rewritten to the form that may run when that
differs; a rejected one raises ``OutputBlocked`` in block mode, so the relay ends the stream
with an ``output_blocked`` error event in the client's format and the held call never goes
out; in flag mode it is released as the model wrote it, marked. A stream cut while a call is
held never releases it (the relay ends that stream with an error event).

Order is kept as each format's SDK needs it; how a format's events are held and re-framed is
its wire's (``dialects``: ``Wire.tool_hold``), so this module speaks no format.

Written by hand: no library holds and re-frames tool-call deltas of both wire formats.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from ..call import Call
from ..dialects import ToolHold, Wire
from ..providers.sse import SSEEvent

if TYPE_CHECKING:
    from .sql_guard import SqlToolCheck

__all__ = ["MAX_HELD_CHARS", "SqlStreamFilter"]

# a held call's arguments beyond this are not SQL anyone should run; refused (or released,
# flagged, in flag mode) rather than held without bound
MAX_HELD_CHARS = 256 * 1024


class SqlStreamFilter:
    """One stream's hold-and-check of SQL tool calls (an ``output.EventFilter``).

    The wire format's own hold (``Wire.tool_hold``) keeps the events back and re-frames them;
    this filter is its judge: which tools are held, and what a held call's SQL becomes.
    """

    __slots__ = ("_call", "_check", "_holds")

    def __init__(self, check: SqlToolCheck, call: Call) -> None:
        self._check = check
        self._call = call
        self._holds: dict[Wire, ToolHold] = {}  # one per wire format the stream came in

    def discard(self) -> None:
        """The stream was cut: nothing held reached the client, and nothing of it will."""
        self._holds = {}

    def event(self, ev: SSEEvent, wire: Wire) -> list[SSEEvent]:
        hold = self._holds.get(wire)
        if hold is None:
            hold = self._holds[wire] = wire.tool_hold(self)
        return hold.event(ev)

    # -- the judge (``dialects.HoldJudge``) ----------------------------------------------

    @property
    def bound(self) -> int:
        return MAX_HELD_CHARS

    def holds(self, name: str) -> bool:
        return name in self._check.tools

    def may_hold(self, prefix: str) -> bool:
        return any(t.startswith(prefix) for t in self._check.tools)

    def verdict(self, name: str, raw: str | None, given: Any = None) -> str | None:
        """The arguments JSON to release instead, or None to release the call as received.

        Raises ``OutputBlocked`` (block mode) when the SQL is rejected.
        """
        arg = self._check.tools[name]
        args: Any = given
        if raw is not None:
            try:
                args = orjson.loads(raw or "{}")
            except orjson.JSONDecodeError:
                args = None
        if not isinstance(args, dict):
            self._check.check(self._call, name, None)
            return None
        sql = args.get(arg)
        safe = self._check.check(self._call, name, sql)
        if safe is None or safe == sql:
            return None
        return orjson.dumps({**args, arg: safe}).decode()

    def too_large(self, name: str | None) -> None:
        """A held call past ``MAX_HELD_CHARS``: refused in block mode, flagged otherwise."""
        self._check.reject(
            self._call,
            name if name is not None else next(iter(self._check.tools)),
            [f"the tool call's arguments exceed {MAX_HELD_CHARS} characters"],
            ["sql_argument_too_large"],
        )

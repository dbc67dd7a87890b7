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

Order is kept as the SDKs need it: the Anthropic SDK places blocks by position, so events
after a held block wait behind it; the OpenAI SDK places tool calls by ``index``, so later
tool-call deltas of the same choice wait too. Text deltas are never held unless they follow
a held Anthropic block (which the Anthropic API does not stream).

Written by hand: no library holds and re-frames tool-call deltas of both wire formats.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from ..call import Call
from ..output import MalformedEvent
from ..providers.base import Format
from ..providers.sse import SSEEvent, encode_event

if TYPE_CHECKING:
    from .sql_guard import SqlToolCheck

__all__ = ["MAX_HELD_CHARS", "SqlStreamFilter"]

# a held call's arguments beyond this are not SQL anyone should run; refused (or released,
# flagged, in flag mode) rather than held without bound
MAX_HELD_CHARS = 256 * 1024
_ENVELOPE_SKIP = frozenset({"choices", "usage", "obfuscation"})


@dataclass(slots=True)
class _Block:
    """A held Anthropic tool_use block: its events as received and its argument JSON."""

    index: int
    name: str
    start: SSEEvent
    events: list[SSEEvent] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)
    start_input: Any = None
    size: int = 0


@dataclass(slots=True)
class _ToolCall:
    """A held OpenAI tool call: its deltas as received and what they add up to."""

    index: Any
    deltas: list[dict[str, Any]] = field(default_factory=list)
    id: str | None = None
    name: str = ""
    arguments: str = ""


@dataclass(slots=True)
class _Choice:
    """One OpenAI choice with held tool calls (every later tool-call delta waits behind them)."""

    calls: dict[Any, _ToolCall] = field(default_factory=dict)
    size: int = 0


def _object(data: bytes) -> dict[str, Any]:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise MalformedEvent("not JSON") from None
    if not isinstance(obj, dict):
        raise MalformedEvent("not a JSON object")
    return obj


def _anthropic_event(name: str, obj: dict[str, Any]) -> SSEEvent:
    data = orjson.dumps(obj)
    return SSEEvent(raw=encode_event(data, name), event=name, data=data)


def _openai_event(obj: dict[str, Any]) -> SSEEvent:
    data = orjson.dumps(obj)
    return SSEEvent(raw=encode_event(data), event=None, data=data)


class SqlStreamFilter:
    """One stream's hold-and-check of SQL tool calls (an ``output.EventFilter``)."""

    __slots__ = ("_block", "_call", "_check", "_choices", "_envelope", "_passed", "_queue")

    def __init__(self, check: SqlToolCheck, call: Call) -> None:
        self._check = check
        self._call = call
        self._block: _Block | None = None
        self._queue: list[SSEEvent] = []
        self._choices: dict[Any, _Choice] = {}
        self._passed: set[tuple[Any, Any]] = set()  # (choice, index) the client has begun to see
        self._envelope: dict[str, Any] = {}

    def discard(self) -> None:
        """The stream was cut: nothing held reached the client, and nothing of it will."""
        self._block = None
        self._queue = []
        self._choices = {}
        self._passed = set()

    def event(self, ev: SSEEvent, fmt: Format) -> list[SSEEvent]:
        if fmt is Format.ANTHROPIC:
            return self._anthropic(ev)
        return self._openai(ev)

    # -- the verdict ---------------------------------------------------------------------

    def _verdict(self, name: str, raw: str | None, given: Any = None) -> str | None:
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

    def _too_large(self, name: str) -> None:
        """A held call past ``MAX_HELD_CHARS``: refused in block mode, flagged otherwise."""
        self._check.reject(
            self._call,
            name,
            [f"the tool call's arguments exceed {MAX_HELD_CHARS} characters"],
            ["sql_argument_too_large"],
        )

    # -- Anthropic: one tool_use block at a time -------------------------------------------

    def _anthropic(self, ev: SSEEvent) -> list[SSEEvent]:
        block = self._block
        if block is None:
            if ev.event != "content_block_start":
                return [ev]
            obj = _object(ev.data)
            cb = obj.get("content_block")
            index = obj.get("index")
            if (
                not isinstance(cb, dict)
                or cb.get("type") != "tool_use"
                or cb.get("name") not in self._check.tools
                or not isinstance(index, int)
            ):
                return [ev]
            self._block = _Block(index, str(cb["name"]), ev, start_input=cb.get("input"))
            return []
        if ev.event in ("content_block_delta", "content_block_stop"):
            obj = _object(ev.data)
            if obj.get("index") == block.index:
                if ev.event == "content_block_stop":
                    return self._release_block(block, ev)
                delta = obj.get("delta")
                if isinstance(delta, dict) and isinstance(delta.get("partial_json"), str):
                    block.parts.append(delta["partial_json"])
                    block.size += len(delta["partial_json"])
                block.events.append(ev)
                if block.size > MAX_HELD_CHARS:
                    self._too_large(block.name)  # flag mode: let it go as it is
                    return self._release_block(block, None)
                return []
        self._queue.append(ev)  # after the held block: waits behind it
        return []

    def _release_block(self, block: _Block, stop: SSEEvent | None) -> list[SSEEvent]:
        if stop is not None:
            raw = "".join(block.parts) if block.parts else None
            replaced = self._verdict(block.name, raw, block.start_input)
        else:
            replaced = None
        if replaced is None:
            out = [block.start, *block.events]
        else:
            start = _object(block.start.data)
            start["content_block"] = {**start["content_block"], "input": {}}
            delta = {"type": "input_json_delta", "partial_json": replaced}
            out = [
                _anthropic_event("content_block_start", start),
                _anthropic_event(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": block.index, "delta": delta},
                ),
            ]
        if stop is not None:
            out.append(stop)
        queued, self._queue, self._block = self._queue, [], None
        for ev in queued:  # what waited may hold again (a second SQL call)
            out += self._anthropic(ev)
        return out

    # -- OpenAI: tool-call deltas by choice and index ----------------------------------------

    def _openai(self, ev: SSEEvent) -> list[SSEEvent]:
        if ev.data.strip() == b"[DONE]":
            out: list[SSEEvent] = []
            for ci in list(self._choices):
                out += self._release_choice(ci)
            return [*out, ev]
        obj = _object(ev.data)
        choices = obj.get("choices")
        if not isinstance(choices, list) or not choices:
            return [ev]
        self._envelope = {k: v for k, v in obj.items() if k not in _ENVELOPE_SKIP}
        released: list[SSEEvent] = []
        kept: list[Any] = []
        changed = False
        for ch in choices:
            if not isinstance(ch, dict):
                kept.append(ch)
                continue
            ci = ch.get("index", 0)
            delta = ch.get("delta")
            tcs = delta.get("tool_calls") if isinstance(delta, dict) else None
            stripped = False
            if isinstance(delta, dict) and isinstance(tcs, list) and tcs:
                passed = [tc for tc in tcs if not self._hold(ci, tc)]
                if len(passed) != len(tcs):
                    stripped = changed = True
                    delta = {k: v for k, v in delta.items() if k != "tool_calls"}
                    if passed:
                        delta["tool_calls"] = passed
                    ch = {**ch, "delta": delta}
                choice = self._choices.get(ci)
                if choice is not None and choice.size > MAX_HELD_CHARS:
                    self._oversized(choice)  # flag mode: released as is, the rest streams
                    released += self._release_choice(ci, check=False)
            if ch.get("finish_reason") is not None and ci in self._choices:
                released += self._release_choice(ci)
            if not stripped or ch.get("delta") or ch.get("finish_reason") is not None:
                kept.append(ch)
        if not changed:
            return [*released, ev]
        if not kept and "usage" not in obj:
            return released
        return [*released, _openai_event({**obj, "choices": kept})]

    def _hold(self, ci: Any, tc: Any) -> bool:
        """Take one tool-call delta into the hold, or say it may pass (False).

        A call the client has begun to see passes; a new one is held when its name may yet
        be a SQL tool's (names can arrive in pieces), or behind a call already held.
        """
        idx = tc.get("index") if isinstance(tc, dict) else None
        if not isinstance(idx, int) or not isinstance(ci, int):
            raise MalformedEvent("a tool-call delta without an integer index")  # skipped whole
        if (ci, idx) in self._passed:
            return False
        fn = tc.get("function")
        fn = fn if isinstance(fn, dict) else {}
        choice = self._choices.get(ci)
        held = choice.calls.get(idx) if choice is not None else None
        if choice is None or held is None:
            got = fn.get("name")
            name = got if isinstance(got, str) else ""
            if choice is None and not any(t.startswith(name) for t in self._check.tools):
                self._passed.add((ci, idx))
                return False
            if choice is None:
                choice = self._choices[ci] = _Choice()
            held = choice.calls[idx] = _ToolCall(idx)
        held.deltas.append(tc)
        if isinstance(tc.get("id"), str) and tc["id"]:
            held.id = tc["id"]
        if isinstance(fn.get("name"), str):
            held.name += fn["name"]
        if isinstance(fn.get("arguments"), str):
            held.arguments += fn["arguments"]
            choice.size += len(fn["arguments"])
        return True

    def _oversized(self, choice: _Choice) -> None:
        names = [c.name for c in choice.calls.values() if c.name in self._check.tools]
        self._too_large(names[0] if names else next(iter(self._check.tools)))

    def _release_choice(self, ci: Any, *, check: bool = True) -> list[SSEEvent]:
        """Every held call of a choice, in the order they began; a rejected one raises."""
        choice = self._choices.pop(ci)
        out: list[SSEEvent] = []
        for held in choice.calls.values():
            self._passed.add((ci, held.index))
            replaced = None
            if check and held.name in self._check.tools:
                replaced = self._verdict(held.name, held.arguments)
            if replaced is None:
                out += [self._chunk(ci, [d]) for d in held.deltas]
                continue
            fn = {"name": held.name, "arguments": replaced}
            merged: dict[str, Any] = {"index": held.index, "type": "function", "function": fn}
            if held.id is not None:
                merged["id"] = held.id
            out.append(self._chunk(ci, [merged]))
        return out

    def _chunk(self, ci: Any, tool_calls: list[dict[str, Any]]) -> SSEEvent:
        choice = {"index": ci, "delta": {"tool_calls": tool_calls}, "finish_reason": None}
        return _openai_event({**self._envelope, "choices": [choice]})

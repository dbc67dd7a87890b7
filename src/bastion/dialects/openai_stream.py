"""OpenAI Chat Completions streams: what each ``chat.completion.chunk`` adds to a call as it is
read, and the hold that keeps streamed tool-call deltas back until their call can be judged.

The dialect (``openai.py``) answers the gateway's questions about the format; this module is the
part of it that reads and rewrites ``data:`` chunks one at a time. A chunk carries ``choices``
whose ``delta`` holds text (``content``), ``refusal`` or ``tool_calls`` pieces placed by
``index``, and a ``finish_reason`` on its last chunk; the stream ends with ``data: [DONE]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from ..call import ToolCallOut
from ..providers.sse import SSEEvent, encode_event
from .base import HoldJudge, MalformedEvent, WatchState, as_text, loads_object

__all__ = ["OpenAIHold", "chunk_event", "observe_choices"]

_ENVELOPE_SKIP = frozenset({"choices", "usage", "obfuscation"})


def chunk_event(obj: dict[str, Any]) -> SSEEvent:
    """One chunk event carrying ``obj`` as its JSON data."""
    data = orjson.dumps(obj)
    return SSEEvent(raw=encode_event(data), event=None, data=data)


def observe_choices(w: WatchState, choices: list[Any]) -> bool:
    """Take a chunk's choices into the watch; True if they carried any of the answer."""
    content = False
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        if choice.get("index", 0) != 0:
            w.text_only = False  # n > 1: several answers cannot be carried on as one
        delta = choice.get("delta")
        if isinstance(delta, dict):
            text = delta.get("content")
            if isinstance(text, str) and text:
                w.text.append(text)
                content = True
            if delta.get("tool_calls") or delta.get("refusal"):
                w.text_only = False
                content = True
                if choice.get("index", 0) == 0:
                    _tool_deltas(w, delta.get("tool_calls"))
        fr = choice.get("finish_reason")
        if isinstance(fr, str):
            w.stop_reason = w.call.finish_reason = fr
            w.final = True
            content = True
    return content


def _tool_deltas(w: WatchState, deltas: Any) -> None:
    """OpenAI streams a tool call as pieces by index: the id and name first, then arguments."""
    if not isinstance(deltas, list):
        return
    for d in deltas:
        if not isinstance(d, dict):
            continue
        fn = d.get("function")
        if not isinstance(fn, dict):
            fn = {}
        tool = w.tools.get(d.get("index", 0))
        if tool is None:
            tool = ToolCallOut(as_text(d.get("id")), as_text(fn.get("name")))
            w.tools[d.get("index", 0)] = tool
            w.call.tool_calls.append(tool)
        if isinstance(args := fn.get("arguments"), str):
            tool.arguments += args


# -- holding streamed tool calls ------------------------------------------------------------


@dataclass(slots=True)
class _ToolCall:
    """A held tool call: its deltas as received and what they add up to."""

    index: Any
    deltas: list[dict[str, Any]] = field(default_factory=list)
    id: str | None = None
    name: str = ""
    arguments: str = ""


@dataclass(slots=True)
class _Choice:
    """One choice with held tool calls (every later tool-call delta waits behind them)."""

    calls: dict[Any, _ToolCall] = field(default_factory=dict)
    size: int = 0


class OpenAIHold:
    """Tool-call deltas held by choice and index: the OpenAI SDK places tool calls by
    ``index``, so later tool-call deltas of the same choice wait behind a held one; a call's
    arguments are complete at its choice's ``finish_reason`` or at ``[DONE]``."""

    __slots__ = ("_choices", "_envelope", "_judge", "_passed")

    def __init__(self, judge: HoldJudge) -> None:
        self._judge = judge
        self._choices: dict[Any, _Choice] = {}
        self._passed: set[tuple[Any, Any]] = set()  # (choice, index) the client has begun to see
        self._envelope: dict[str, Any] = {}

    def event(self, ev: SSEEvent) -> list[SSEEvent]:
        if ev.data.strip() == b"[DONE]":
            out: list[SSEEvent] = []
            for ci in list(self._choices):
                out += self._release_choice(ci)
            return [*out, ev]
        obj = loads_object(ev.data)
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
                if choice is not None and choice.size > self._judge.bound:
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
        return [*released, chunk_event({**obj, "choices": kept})]

    def _hold(self, ci: Any, tc: Any) -> bool:
        """Take one tool-call delta into the hold, or say it may pass (False).

        A call the client has begun to see passes; a new one is held when its name may yet
        be a held tool's (names can arrive in pieces), or behind a call already held.
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
            if choice is None and not self._judge.may_hold(name):
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
        names = [c.name for c in choice.calls.values() if self._judge.holds(c.name)]
        self._judge.too_large(names[0] if names else None)

    def _release_choice(self, ci: Any, *, check: bool = True) -> list[SSEEvent]:
        """Every held call of a choice, in the order they began; a rejected one raises."""
        choice = self._choices.pop(ci)
        out: list[SSEEvent] = []
        for held in choice.calls.values():
            self._passed.add((ci, held.index))
            replaced = None
            if check and self._judge.holds(held.name):
                replaced = self._judge.verdict(held.name, held.arguments)
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
        return chunk_event({**self._envelope, "choices": [choice]})

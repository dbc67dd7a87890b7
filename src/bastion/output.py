"""Output filters: guards that watch (and may rewrite) the model's text, streaming included.

A filter sees text deltas in order and returns what is safe to emit now; it may
hold back a bounded tail (a match could still be completing across chunks) and
releases it on ``flush`` at the end of a text block. Raising ``OutputBlocked``
stops the answer. The relay applies filters to provider events before they are
forwarded or translated, so the same filters serve both wire formats. An event
that is not the JSON its format promises raises ``MalformedEvent``: the relay
skips it and the stream goes on, rather than the filter ending the answer.

An ``EventFilter`` sees whole provider events instead of text, before the text
filters: it may hold some back (a tool call until its arguments are complete) and
release them, rewritten, later in the same stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import orjson

from .errors import OutputBlocked
from .providers.base import Format
from .providers.sse import SSEEvent, encode_event

__all__ = [
    "EventFilter",
    "MalformedEvent",
    "OutputBlocked",
    "OutputFilter",
    "discard_held",
    "filter_body",
    "filter_event",
]


class MalformedEvent(ValueError):
    """A provider stream event whose data is not the JSON object its format promises."""


class OutputFilter(Protocol):
    def feed(self, text: str) -> str: ...

    def flush(self) -> str: ...


class EventFilter(Protocol):
    """A filter over whole events; ``discard`` drops what it holds (the stream was cut)."""

    def event(self, ev: SSEEvent, fmt: Format) -> list[SSEEvent]: ...

    def discard(self) -> None: ...


def _is_event_filter(f: object) -> bool:
    return callable(getattr(f, "event", None)) and callable(getattr(f, "discard", None))


def _split(filters: Sequence[Any], state: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """(event filters, text filters), sorted once per stream and kept in its state."""
    split: tuple[list[Any], list[Any]] | None = state.get("_split")
    if split is None or len(split[0]) + len(split[1]) != len(filters):
        events = [f for f in filters if _is_event_filter(f)]
        split = (events, [f for f in filters if not _is_event_filter(f)])
        state["_split"] = split
    return split


def _run(filters: Sequence[OutputFilter], text: str) -> str:
    for f in filters:
        text = f.feed(text)
    return text


def _flush(filters: Sequence[OutputFilter]) -> str:
    out = ""
    for i, f in enumerate(filters):
        tail = f.flush()
        for later in filters[i + 1 :]:
            tail = later.feed(tail)
        out += tail
    return out


def discard_held(filters: Sequence[OutputFilter]) -> None:
    """Drop what the filters hold back: at a cut, that tail never reached the client, and the
    answer is carried on from the text the client has (or started over), not from it."""
    for f in filters:
        if _is_event_filter(f) or callable(getattr(f, "discard", None)):
            f.discard()  # type: ignore[attr-defined]
        else:
            f.flush()


def _object(data: bytes) -> dict[str, Any]:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise MalformedEvent("not JSON") from None
    if not isinstance(obj, dict):
        raise MalformedEvent("not a JSON object")
    return obj


def _anthropic_delta(index: int, text: str) -> SSEEvent:
    data = orjson.dumps(
        {
            "type": "content_block_delta",
            "index": index,
            "delta": {"type": "text_delta", "text": text},
        }
    )
    return SSEEvent(
        raw=encode_event(data, "content_block_delta"), event="content_block_delta", data=data
    )


def filter_event(
    ev: SSEEvent, fmt: Format, filters: Sequence[OutputFilter], state: dict[str, Any]
) -> list[SSEEvent]:
    """Apply filters to one provider event; returns the events to pass on instead.

    Raises ``MalformedEvent`` for an event the filters cannot read (the caller skips it).
    """
    events, filters = _split(filters, state)
    if events:
        out = [ev]
        for f in events:
            out = [e for held in out for e in f.event(held, fmt)]
        return [e for e2 in out for e in _filter_text(e2, fmt, filters, state)]
    return _filter_text(ev, fmt, filters, state)


def _filter_text(
    ev: SSEEvent, fmt: Format, filters: Sequence[OutputFilter], state: dict[str, Any]
) -> list[SSEEvent]:
    if not filters:
        return [ev]
    if fmt is Format.ANTHROPIC:
        if ev.event == "content_block_delta":
            obj = _object(ev.data)
            delta = obj.get("delta")
            if not isinstance(delta, dict) or delta.get("type") != "text_delta":
                return [ev]
            text = delta.get("text")
            index = obj.get("index", 0)
            if not isinstance(text, str) or not isinstance(index, int):
                raise MalformedEvent("a text delta without text or index")
            state["index"] = index
            text = _run(filters, text)
            return [_anthropic_delta(index, text)] if text else []
        if ev.event == "content_block_stop" and "index" in state:
            index = _object(ev.data).get("index", 0)
            if not isinstance(index, int):
                raise MalformedEvent("a block stop without index")
            tail = _flush(filters)
            state.pop("index")
            return ([_anthropic_delta(index, tail)] if tail else []) + [ev]
        return [ev]
    if ev.data.strip() == b"[DONE]":
        return [ev]
    obj = _object(ev.data)
    choices = obj.get("choices") or []
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return [ev]
    choice = choices[0]
    delta = choice.get("delta") or {}
    if not isinstance(delta, dict):
        raise MalformedEvent("a choice whose delta is not an object")
    raw_text = delta.get("content")
    text = raw_text if isinstance(raw_text, str) else ""
    finishing = choice.get("finish_reason") is not None
    if not isinstance(raw_text, str) and not finishing:
        return [ev]
    new = _run(filters, text) if text else ""
    if finishing:
        new += _flush(filters)
    if new == text:
        return [ev]
    if not new and not finishing and set(delta) <= {"content"}:
        return []  # all held back for now
    choice = {**choice, "delta": {**delta, "content": new}}
    data = orjson.dumps({**obj, "choices": [choice, *choices[1:]]})
    return [SSEEvent(raw=encode_event(data), event=None, data=data)]


def filter_body(
    obj: dict[str, Any], fmt: Format, filters: Sequence[OutputFilter]
) -> dict[str, Any]:
    """Apply filters to a whole (non-streaming) response body (event filters are for streams)."""
    filters = [f for f in filters if not _is_event_filter(f)]
    if fmt is Format.ANTHROPIC:
        content = []
        for block in obj.get("content") or ():
            if isinstance(block, dict) and block.get("type") == "text":
                block = {**block, "text": _run(filters, block.get("text", "")) + _flush(filters)}
            content.append(block)
        return {**obj, "content": content}
    choices = []
    for ch in obj.get("choices") or ():
        msg = ch.get("message") if isinstance(ch, dict) else None
        if isinstance(msg, dict) and isinstance(msg.get("content"), str):
            ch = {
                **ch,
                "message": {**msg, "content": _run(filters, msg["content"]) + _flush(filters)},
            }
        choices.append(ch)
    return {**obj, "choices": choices}

"""Output filters: guards that watch (and may rewrite) the model's text, streaming included.

A filter sees text deltas in order and returns what is safe to emit now; it may
hold back a bounded tail (a match could still be completing across chunks) and
releases it on ``flush`` at the end of a text block. Raising ``OutputBlocked``
stops the answer. The relay applies filters to provider events before they are
forwarded or translated, so the same filters serve both wire formats. An event
that is not the JSON its format promises raises ``MalformedEvent``: the relay
skips it and the stream goes on, rather than the filter ending the answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import orjson

from .errors import OutputBlocked
from .providers.base import Format
from .providers.sse import SSEEvent, encode_event

__all__ = [
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
    """Apply filters to a whole (non-streaming) response body."""
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

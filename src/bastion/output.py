"""Output filters: guards that watch (and may rewrite) the model's text, streaming included.

A filter sees text deltas in order and returns what is safe to emit now; it may
hold back a bounded tail (a match could still be completing across chunks) and
releases it on ``flush`` at the end of a text block. Raising ``OutputBlocked``
stops the answer. The relay applies filters to provider events before they are
forwarded or translated, so the same filters serve every wire format: the wire (``dialects``)
finds the text in a body or an event and puts the filtered text back. An event
that is not the JSON its format promises raises ``MalformedEvent``: the relay
skips it and the stream goes on, rather than the filter ending the answer.

An ``EventFilter`` sees whole provider events instead of text, before the text
filters: it may hold some back (a tool call until its arguments are complete) and
release them, rewritten, later in the same stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from .dialects import MalformedEvent, Wire, wire_for
from .dialects.base import Parsed
from .errors import OutputBlocked
from .providers.sse import SSEEvent

__all__ = [
    "EventFilter",
    "MalformedEvent",
    "OutputBlocked",
    "OutputFilter",
    "discard_held",
    "filter_body",
    "filter_event",
    "filter_parsed",
]


class OutputFilter(Protocol):
    def feed(self, text: str) -> str: ...

    def flush(self) -> str: ...


class EventFilter(Protocol):
    """A filter over whole events; ``discard`` drops what it holds (the stream was cut)."""

    def event(self, ev: SSEEvent, wire: Wire) -> list[SSEEvent]: ...

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


class _Run:
    """The text filters of one answer, as a wire applies them to the text it finds."""

    __slots__ = ("_filters",)

    def __init__(self, filters: Sequence[OutputFilter]) -> None:
        self._filters = filters

    def run(self, text: str) -> str:
        return _run(self._filters, text)

    def flush(self) -> str:
        return _flush(self._filters)


def discard_held(filters: Sequence[OutputFilter]) -> None:
    """Drop what the filters hold back: at a cut, that tail never reached the client, and the
    answer is carried on from the text the client has (or started over), not from it."""
    for f in filters:
        if _is_event_filter(f) or callable(getattr(f, "discard", None)):
            f.discard()  # type: ignore[attr-defined]
        else:
            f.flush()


def filter_event(
    ev: SSEEvent, fmt: str | Wire, filters: Sequence[OutputFilter], state: dict[str, Any]
) -> list[SSEEvent]:
    """Apply filters to one provider event (in ``fmt``'s wire); returns the events to pass on.

    Raises ``MalformedEvent`` for an event the filters cannot read (the caller skips it).
    """
    return [e for e, _ in filter_parsed(ev, None, fmt, filters, state)]


def filter_parsed(
    ev: SSEEvent,
    obj: dict[str, Any] | None,
    fmt: str | Wire,
    filters: Sequence[OutputFilter],
    state: dict[str, Any],
) -> list[Parsed]:
    """``filter_event`` for an event whose data the relay already parsed (``obj``; None when
    not known), each event passed on with its parsed data, so the watcher need not parse it
    again: the same dict when the event is passed on as it came, the one a rewritten event was
    encoded from, None when not known (an event filter's release)."""
    wire = wire_for(fmt)
    events, filters = _split(filters, state)
    if events:
        out = [ev]
        for f in events:
            out = [e for held in out for e in f.event(held, wire)]
        return [
            p for e in out for p in _filter_text(e, obj if e is ev else None, wire, filters, state)
        ]
    return _filter_text(ev, obj, wire, filters, state)


def _filter_text(
    ev: SSEEvent,
    obj: dict[str, Any] | None,
    wire: Wire,
    filters: Sequence[OutputFilter],
    state: dict[str, Any],
) -> list[Parsed]:
    if not filters:
        return [(ev, obj)]
    return wire.filter_parsed(ev, obj, _Run(filters), state)


def filter_body(
    obj: dict[str, Any], fmt: str | Wire, filters: Sequence[OutputFilter]
) -> dict[str, Any]:
    """Apply filters to a whole (non-streaming) response body (event filters are for streams)."""
    filters = [f for f in filters if not _is_event_filter(f)]
    return wire_for(fmt).filter_body(obj, _Run(filters))

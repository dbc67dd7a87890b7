"""Reading a provider's answer for what the call must know: text, tool calls, usage, the end.

A streamed answer is read event by event (``StreamWatcher``), a whole one at once
(``observe_body``); both fill the same fields of the call, so a trace or a record cannot tell
how the answer came.

A ``StreamWatcher`` observes one provider format's events (read by that format's wire,
``dialects``) and never changes them. It
is also where a stream's health is judged: an event whose data is not the JSON its
format promises raises ``MalformedEvent`` (the relay skips it and goes on), and an
OpenAI-compatible stream that sent its ``finish_reason`` and usage but closed without
``data: [DONE]`` is recognised as complete (``ended_cleanly``), not as a cut.
"""

from __future__ import annotations

from typing import Any

from .call import Call, ToolCallOut, Usage
from .dialects import MalformedEvent, Wire, wire_for
from .providers.sse import SSEEvent

__all__ = ["MalformedEvent", "StreamWatcher", "observe_body"]


class StreamWatcher:
    """Observes one provider format's events; ``observe`` says whether one carried model output.

    ``text`` receives the answer's text (the call's own list, unless a recovery decides
    what of a fallback's text reaches the client).
    """

    __slots__ = (
        "call",
        "errored",
        "final",
        "finished",
        "stop_reason",
        "text",
        "text_only",
        "tools",
        "usage_seen",
        "wire",
    )

    def __init__(self, call: Call, fmt: str | Wire, text: list[str] | None = None) -> None:
        self.call = call
        self.wire = wire_for(fmt)  # the provider's format, which may not be the client's
        self.text = call.output_text if text is None else text
        self.finished = False
        self.errored = False
        self.stop_reason: str | None = None
        # one text answer so far (no tool call, second block or choice): it can be carried on
        self.text_only = True
        self.final = False  # a finish reason was seen (OpenAI: before the usage chunk)
        self.usage_seen = False
        self.tools: dict[int, ToolCallOut] = {}  # by block (or tool call) index

    def adopt(self, call: Call) -> None:
        """Write into the winning call from now on (hedged attempts run on shadows)."""
        self.call = call
        self.text = call.output_text

    @property
    def ended_cleanly(self) -> bool:
        """The body ended without its end marker, yet everything the answer owes was seen
        (an OpenAI-compatible server that closes after ``finish_reason`` and usage)."""
        return self.wire.ended_cleanly(self)

    def observe(self, ev: SSEEvent, obj: dict[str, Any] | None = None) -> bool:
        """Take what the event says into the call; raises ``MalformedEvent`` for a broken one.

        ``obj``: its data as the relay already parsed it (None: read from ``ev``)."""
        return self.wire.observe_event(self, ev, obj)


def observe_body(call: Call, obj: dict[str, Any], fmt: str | Wire) -> Usage:
    """A whole (non-streamed) answer, read as its stream would be: text, tool calls, usage, id
    and finish reason into the call; returns this attempt's own usage."""
    return wire_for(fmt).observe_body(call, obj)

"""Incremental Server-Sent Events splitting for relaying streams without buffering them.

Written by hand because the relay needs the raw bytes of each event (to forward
them untouched on the fast path) alongside its parsed fields, which generic SSE
client libraries do not expose.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One complete event: ``raw`` ends with its blank line, ready to forward as is."""

    raw: bytes
    event: str | None
    data: bytes


class SSEDecoder:
    """Feed it chunks in any split; it returns every event completed so far."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        events: list[SSEEvent] = []
        start = 0
        while True:
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            block = buf[start:end]
            start = end + 2
            ev = _parse_block(block)
            if ev is not None:
                events.append(ev)
        self._buf = buf[start:]
        return events

    @property
    def pending(self) -> bytes:
        """Bytes of an event not yet terminated (non-empty at end of stream means a cut)."""
        return self._buf


def _parse_block(block: bytes) -> SSEEvent | None:
    event: str | None = None
    data_lines: list[bytes] = []
    for line in block.split(b"\n"):
        if not line or line[0:1] == b":":
            continue
        name, sep, value = line.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if name == b"event":
            event = value.decode("utf-8", "replace")
        elif name == b"data":
            data_lines.append(value)
    if event is None and not data_lines:
        return None
    return SSEEvent(raw=block + b"\n\n", event=event, data=b"\n".join(data_lines))


def encode_event(data: bytes, event: str | None = None) -> bytes:
    """Encode one SSE event (Anthropic style when ``event`` is given, OpenAI style otherwise)."""
    if event is None:
        return b"data: " + data + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"

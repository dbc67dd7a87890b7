"""Incremental Server-Sent Events splitting for relaying streams without buffering them.

Written by hand because the relay needs the raw bytes of each event (to forward
them untouched on the fast path) alongside its parsed fields, which generic SSE
client libraries do not expose.
"""

from __future__ import annotations

from typing import NamedTuple


class SSEEvent(NamedTuple):
    """One complete event: ``raw`` ends with its blank line, ready to forward as is.

    A named tuple (immutable, compared by value) rather than a frozen dataclass: one is
    built per event on every relayed stream, and a tuple is built ~4x faster."""

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
        find = buf.find
        end = find(b"\n\n")
        while end >= 0:
            nxt = end + 2
            # ``raw`` is sliced once, terminator included: the event forwarded as is
            ev = _parse_event(buf[start:nxt]) if end > start else None
            if ev is not None:
                events.append(ev)
            start = nxt
            end = find(b"\n\n", start)
        self._buf = buf[start:] if start else buf
        return events

    @property
    def pending(self) -> bytes:
        """Bytes of an event not yet terminated (non-empty at end of stream means a cut)."""
        return self._buf


def _parse_event(raw: bytes) -> SSEEvent | None:
    """One event from its bytes (blank line included). The two shapes providers send, a
    lone ``data: `` line and ``event: `` then ``data: ``, are read by a byte scan; any
    other block (comments, ``id:``, multi-line data, no space after the colon) by the
    line parser, which gives the same answer for those two shapes too."""
    last = len(raw) - 2  # where the terminating blank line starts
    if raw.startswith(b"data: "):
        if raw.find(b"\n", 6) == last:
            return SSEEvent(raw=raw, event=None, data=raw[6:last])
    elif raw.startswith(b"event: "):
        nl = raw.find(b"\n", 7)
        if raw.startswith(b"data: ", nl + 1) and raw.find(b"\n", nl + 7) == last:
            return SSEEvent(
                raw=raw, event=raw[7:nl].decode("utf-8", "replace"), data=raw[nl + 7 : last]
            )
    return _parse_block(raw[:last])


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

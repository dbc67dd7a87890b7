"""The ``application/vnd.amazon.eventstream`` framing Bedrock streams in: one frame per event.

A frame is a 12-byte prelude (total length, headers length, both big-endian uint32, and the
CRC32 of those 8 bytes), the headers, the payload, and the CRC32 of everything before it. A
header is a 1-byte name length, the name, a 1-byte value type and the value; the string type
(7) has a 2-byte length. Bedrock's headers are ``:event-type``, ``:content-type`` and
``:message-type`` (``event``, or ``exception`` with ``:exception-type``).

Decoding is botocore's own parser (``EventStreamBuffer``: prelude and message CRCs checked,
lengths bounded), fed chunk by chunk as the body arrives. botocore has no encoder, so
``encode`` (used by the simulator) writes frames itself; the tests decode them with botocore.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["EventStreamDecoder", "Frame", "FramingError", "encode"]

_STRING = 7


class FramingError(ValueError):
    """A frame that is not valid eventstream framing (bad CRC, impossible lengths)."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded message: its headers and raw payload."""

    headers: Mapping[str, Any]
    payload: bytes


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    if len(raw_name) > 255 or len(raw_value) > 0xFFFF:
        raise FramingError("header name or value too long for eventstream framing")
    return (
        struct.pack("!B", len(raw_name))
        + raw_name
        + struct.pack("!BH", _STRING, len(raw_value))
        + raw_value
    )


def encode(headers: Mapping[str, str], payload: bytes) -> bytes:
    """One eventstream frame with string ``headers`` (in the order given) and ``payload``."""
    head = b"".join(_header(k, v) for k, v in headers.items())
    total = 12 + len(head) + len(payload) + 4
    prelude = struct.pack("!II", total, len(head))
    prelude += struct.pack("!I", zlib.crc32(prelude))
    message = prelude + head + payload
    return message + struct.pack("!I", zlib.crc32(message))


class EventStreamDecoder:
    """Frames out of body chunks as they arrive (botocore's parser underneath)."""

    __slots__ = ("_buffer", "_errors")

    def __init__(self) -> None:
        from botocore.eventstream import EventStreamBuffer, ParserError

        self._buffer = EventStreamBuffer()
        self._errors: type[Exception] = ParserError

    def feed(self, chunk: bytes) -> Iterator[Frame]:
        """The frames ``chunk`` completes; raises ``FramingError`` on a corrupt frame."""
        self._buffer.add_data(chunk)
        try:
            for message in self._buffer:
                yield Frame(dict(message.headers), bytes(message.payload))
        except self._errors as exc:
            raise FramingError(f"corrupt eventstream frame: {exc}") from None

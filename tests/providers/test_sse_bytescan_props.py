"""The SSE decoder's byte-scan fast path gives exactly what the line parser gives.

``SSEDecoder`` reads the two event shapes providers send (``data: ...`` alone, and
``event: ...`` then ``data: ...``) with a few ``find`` calls instead of splitting lines.
The reference below is the line-by-line decoder it replaced, kept verbatim: for any
bytes, split into reads anywhere, both must return the same events (raw bytes, name and
data) and leave the same unterminated tail.
"""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.providers.sse import SSEDecoder, SSEEvent


class _LineDecoder:
    """The decoder before the fast path (the specification)."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[tuple[bytes, str | None, bytes]]:
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        events: list[tuple[bytes, str | None, bytes]] = []
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


def _parse_block(block: bytes) -> tuple[bytes, str | None, bytes] | None:
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
    return (block + b"\n\n", event, b"\n".join(data_lines))


# Pieces that make every branch likely: the fast shapes, near misses (no space, two
# spaces, a second data line, id/retry fields, comments), separators and CRs.
_PIECES = st.sampled_from(
    [
        b"data: ",
        b"data:",
        b"data:  ",
        b"event: ",
        b"event:",
        b"event: message_start",
        b"id: 7",
        b"retry: 10",
        b": keep-alive",
        b"\n",
        b"\n\n",
        b"\r\n",
        b"\r",
        b'{"a": 1}',
        b"[DONE]",
        b"x",
        b":",
        b" ",
        b"\xc3\xa9",
        b"\xff",
    ]
)
_NOISE = st.lists(st.one_of(_PIECES, st.binary(max_size=6)), max_size=30).map(b"".join)
# Streams of blocks of lines, so multi-line events and near-miss fields line up at the
# start of a block, where the fast path looks.
_FIELD = st.sampled_from([b"data", b"event", b"id", b"retry", b"", b"dat", b"data "])
_SEP = st.sampled_from([b": ", b":", b":  ", b""])
_VALUE = st.one_of(
    st.sampled_from([b"", b"x", b'{"a":1}', b"[DONE]", b"a:b", b"\xff"]), st.binary(max_size=5)
)
_LINE = st.one_of(
    st.tuples(st.sampled_from([b"data: ", b"event: "]), _VALUE).map(b"".join),
    st.tuples(_FIELD, _SEP, _VALUE).map(b"".join),
)
_BLOCK = st.lists(_LINE, min_size=1, max_size=4).map(b"\n".join)
_BLOCKS = st.tuples(
    st.lists(_BLOCK, max_size=6).map(b"\n\n".join), st.sampled_from([b"", b"\n", b"\n\n"])
).map(b"".join)
_STREAMS = st.one_of(_NOISE, _BLOCKS)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def _as_tuples(events: list[SSEEvent]) -> list[tuple[bytes, str | None, bytes]]:
    return [(e.raw, e.event, e.data) for e in events]


@settings(max_examples=600, deadline=None)
@given(_STREAMS, st.lists(st.integers(min_value=0, max_value=400), max_size=6))
def test_fast_path_equals_the_line_parser_for_any_bytes_and_split(
    data: bytes, cuts: list[int]
) -> None:
    fast, ref = SSEDecoder(), _LineDecoder()
    got: list[tuple[bytes, str | None, bytes]] = []
    want: list[tuple[bytes, str | None, bytes]] = []
    for chunk in _split(data, cuts):
        got += _as_tuples(fast.feed(chunk))
        want += ref.feed(chunk)
    assert got == want
    assert fast.pending == ref._buf


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(
                st.none(), st.text(max_size=12).filter(lambda t: "\n" not in t and "\r" not in t)
            ),
            st.binary(max_size=40).filter(lambda b: b"\n" not in b and b"\r" not in b),
        ),
        max_size=8,
    )
)
def test_provider_shaped_events_come_back_whole(events: list[tuple[str | None, bytes]]) -> None:
    """What providers send: each event's name and data as written, raw bytes untouched."""
    wire = b""
    for name, data in events:
        head = b"" if name is None else b"event: " + name.encode() + b"\n"
        wire += head + b"data: " + data + b"\n\n"
    out = SSEDecoder().feed(wire)
    assert b"".join(e.raw for e in out) == wire
    assert [(e.event, e.data) for e in out] == [(n, d) for n, d in events]


def test_events_are_immutable_values() -> None:
    a = SSEDecoder().feed(b"event: x\ndata: 1\n\n")[0]
    assert a == SSEEvent(raw=b"event: x\ndata: 1\n\n", event="x", data=b"1")
    assert hash(a) == hash(SSEEvent(raw=b"event: x\ndata: 1\n\n", event="x", data=b"1"))
    try:
        a.data = b"2"  # type: ignore[misc]
    except AttributeError:
        pass
    else:  # pragma: no cover - a mutable event would let one consumer change another's view
        raise AssertionError("an SSE event must not be mutable")

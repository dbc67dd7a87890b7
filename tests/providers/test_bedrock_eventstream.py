"""Eventstream framing: what ``encode`` writes, botocore's parser reads back exactly, however the
bytes are split; a damaged frame is refused (``FramingError``), never half-read."""

from __future__ import annotations

import struct
import zlib

import pytest
from botocore.eventstream import EventStreamBuffer
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.providers.eventstream import EventStreamDecoder, FramingError, encode

SETTINGS = settings(max_examples=150, deadline=None)
names = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=20
).filter(lambda n: len(n.encode()) <= 255)
values = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60)
frames = st.lists(
    st.tuples(st.dictionaries(names, values, max_size=4), st.binary(max_size=300)),
    min_size=1,
    max_size=6,
)


@SETTINGS
@given(frames, st.integers(1, 97))
def test_botocore_reads_back_every_frame_whatever_the_chunking(
    msgs: list[tuple[dict[str, str], bytes]], split: int
) -> None:
    data = b"".join(encode(h, p) for h, p in msgs)
    buf = EventStreamBuffer()
    ours = EventStreamDecoder()
    got, mine = [], []
    for i in range(0, len(data), split):
        buf.add_data(data[i : i + split])
        got += [(dict(m.headers), bytes(m.payload)) for m in buf]
        mine += [(dict(f.headers), f.payload) for f in ours.feed(data[i : i + split])]
    assert got == msgs and mine == msgs


@SETTINGS
@given(st.dictionaries(names, values, max_size=3), st.binary(max_size=200), st.data())
def test_a_flipped_byte_is_refused(
    headers: dict[str, str], payload: bytes, data: st.DataObject
) -> None:
    frame = bytearray(encode(headers, payload))
    i = data.draw(st.integers(0, len(frame) - 1))
    frame[i] ^= data.draw(st.integers(1, 255))
    decoder = EventStreamDecoder()
    with pytest.raises(FramingError):
        # a damaged length may announce more bytes than exist: feed a generous tail of padding
        # frames so the decoder either checks a CRC or refuses the lengths
        list(decoder.feed(bytes(frame) + encode({}, b"x" * 64) * 4))


def test_frame_layout_is_the_documented_one() -> None:
    frame = encode({":event-type": "messageStart"}, b'{"role":"assistant"}')
    total, head_len, prelude_crc = struct.unpack("!III", frame[:12])
    assert total == len(frame) and prelude_crc == zlib.crc32(frame[:8])
    header = frame[12 : 12 + head_len]
    assert header == b"\x0b:event-type\x07\x00\x0cmessageStart"
    assert frame[12 + head_len : -4] == b'{"role":"assistant"}'
    assert struct.unpack("!I", frame[-4:])[0] == zlib.crc32(frame[:-4])

"""The RESP2 reply parser of the store's own Redis client (``bastion.state._resp``): every
reply kind, nested, decoded the same however the byte stream is cut into chunks."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.exceptions import NoScriptError, ReadOnlyError, ResponseError

from bastion.state._resp import ProtocolError, ReplyParser, encode_command

# a reply as the server encodes it: (kind, payload); the decoded value is what redis-py's
# RESP parser returns (bytes for both string kinds, None for nil, errors as exceptions)
_line_text = st.binary(max_size=30).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
_error_text = st.sampled_from(["ERR", "NOSCRIPT", "READONLY", "WRONGTYPE"]).flatmap(
    lambda code: st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20).map(
        lambda msg: f"{code} {msg}"
    )
)
_leaf = st.one_of(
    st.tuples(st.just("bulk"), st.binary(max_size=40)),
    st.tuples(st.just("simple"), _line_text),
    st.tuples(st.just("int"), st.integers(min_value=-(2**63), max_value=2**63 - 1)),
    st.tuples(st.just("nil"), st.none()),
    st.tuples(st.just("nilarr"), st.none()),
    st.tuples(st.just("error"), _error_text),
)
replies = st.recursive(
    _leaf, lambda inner: st.tuples(st.just("array"), st.lists(inner, max_size=5)), max_leaves=20
)


def encode(reply: tuple[str, Any]) -> bytes:
    kind, v = reply
    if kind == "bulk":
        return b"$%d\r\n%b\r\n" % (len(v), v)
    if kind == "simple":
        return b"+%b\r\n" % v
    if kind == "int":
        return b":%d\r\n" % v
    if kind == "nil":
        return b"$-1\r\n"
    if kind == "nilarr":
        return b"*-1\r\n"
    if kind == "error":
        return b"-%b\r\n" % v.encode()
    return b"*%d\r\n" % len(v) + b"".join(encode(x) for x in v)


def expected(reply: tuple[str, Any]) -> Any:
    kind, v = reply
    if kind in ("nil", "nilarr"):
        return None
    if kind == "error":
        return ("error", v)
    if kind == "array":
        return [expected(x) for x in v]
    return v


def normal(value: Any) -> Any:
    """Decoded values, with an error reply as ('error', its full text) for comparison."""
    if isinstance(value, list):
        return [normal(x) for x in value]
    if isinstance(value, Exception):
        code = getattr(value, "status_code", None)
        text = str(value)
        return ("error", f"{code} {text}" if code else text)
    return value


# generation, not the parser, is the slow part on a loaded box
_settings = settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)


@_settings
@given(reply=replies)
def test_any_encoded_reply_round_trips(reply: tuple[str, Any]) -> None:
    assert normal(ReplyParser().feed(encode(reply))) == [expected(reply)]


@_settings
@given(stream=st.lists(replies, min_size=1, max_size=6), data=st.data())
def test_any_split_of_a_reply_stream_decodes_the_same(
    stream: list[tuple[str, Any]], data: st.DataObject
) -> None:
    raw = b"".join(encode(r) for r in stream)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=12)))
    parser = ReplyParser()
    got: list[Any] = []
    start = 0
    for cut in [*cuts, len(raw)]:
        got += parser.feed(raw[start:cut])
        start = cut
    assert normal(got) == [expected(r) for r in stream]
    assert parser.feed(b"") == []  # nothing left over


@given(args=st.lists(st.one_of(st.binary(max_size=30), st.text(max_size=10), st.integers())))
def test_a_command_is_an_array_of_its_arguments_as_bulk_strings(args: list[Any]) -> None:
    want = [a if isinstance(a, bytes) else str(a).encode() for a in args]
    assert ReplyParser().feed(encode_command(args)) == [want]


def test_error_replies_are_redis_py_exceptions() -> None:
    noscript, readonly, lua = ReplyParser().feed(
        b"-NOSCRIPT No matching script.\r\n-READONLY You can't write\r\n-settle caps differ\r\n"
    )
    assert isinstance(noscript, NoScriptError)
    assert isinstance(readonly, ReadOnlyError)
    assert type(lua) is ResponseError and str(lua) == "settle caps differ"


@pytest.mark.parametrize(
    "raw", [b"?what\r\n", b":12x\r\n", b"$3\r\nabcd\r\n", b"*x\r\n", b"$z\r\n"]
)
def test_what_is_not_resp_is_a_protocol_error(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        ReplyParser().feed(raw)


def test_a_cut_reply_waits_for_its_end() -> None:
    parser = ReplyParser()
    assert parser.feed(b"*2\r\n$3\r\nab") == []
    assert parser.feed(b"c\r\n:") == []
    assert parser.feed(b"7\r\n+OK") == [[b"abc", 7]]
    assert parser.feed(b"\r\n") == [b"OK"]


def test_floats_and_ints_are_written_as_redis_py_writes_them() -> None:
    assert encode_command(["EVALSHA", 1, 0.1, b"\x00"]) == (
        b"*4\r\n$7\r\nEVALSHA\r\n$1\r\n1\r\n$3\r\n0.1\r\n$1\r\n\x00\r\n"
    )
    with pytest.raises(TypeError):
        encode_command([True])

"""The state host's codec carries every int and every Python str, as one process would.

orjson holds only 64-bit ints and UTF-8 text, so before an int past 64 bits (a counter amount,
a flag's meta) or a str with a lone surrogate (Python strs may hold them) raised TypeError at
the wire, where the embedded store takes them. They are now tagged (``i``: the digits, ``s``:
the code points) and come back equal; every other value is sent as before.
"""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from bastion.state._wire import decode, encode, frame, unframe

ANY_STR = st.text(alphabet=st.characters(codec=None, categories=None))
ANY_INT = st.integers() | st.sampled_from([2**64, 2**64 - 1, -(2**63) - 1, -(2**63), 10**40])


def _trip(value: object) -> object:
    body = frame([1, "x", [encode(value)]])[4:]
    return decode(unframe(body)[2][0])


@given(ANY_INT)
def test_every_int_round_trips(n: int) -> None:
    back = _trip(n)
    assert back == n and type(back) is int


@given(ANY_STR)
def test_every_str_round_trips(s: str) -> None:
    back = _trip(s)
    assert back == s and type(back) is str


@given(st.dictionaries(ANY_STR, ANY_INT | ANY_STR, max_size=4))
def test_a_meta_dict_with_any_keys_and_values_round_trips(meta: dict[str, object]) -> None:
    assert _trip(meta) == meta


def test_the_edges_that_held_still_hold() -> None:
    for f in (1e-320, 5e-324, -0.0, 1.7976931348623157e308, -1e-310):
        back = _trip(f)
        assert (
            isinstance(back, float) and back == f and math.copysign(1, back) == math.copysign(1, f)
        )
    for s in ("", "é\u2028\u0000", "\U0001f600", '{"T": []}'):
        assert _trip(s) == s
    assert _trip("\ud800x") == "\ud800x"
    assert _trip(2**64) == 2**64
    assert encode(2**63 - 1) == 2**63 - 1 and encode("plain") == "plain"  # untagged as before

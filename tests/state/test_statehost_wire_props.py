"""The state host's codec: every ``CounterStore`` argument and answer crosses the wire exactly.

Property tests over every operation's argument types (caps, policies, every admission and settle
operation, bytes, flag meta) and every answer type (results, enums, tuples, infinities), through
the full path a call takes: encoded, framed as JSON, unframed, decoded. Equality is strict:
the same type at every level (a tuple stays a tuple, an enum stays an enum, an int stays an
int), NaN equal to NaN. And the decoder builds nothing it was not told about.
"""

from __future__ import annotations

import math
from dataclasses import fields, is_dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.state import (
    BreakerDecision,
    BreakerPolicy,
    BreakerState,
    Cap,
    IdemBegin,
    IdemOutcome,
    IncrResult,
    ReserveResult,
    TakeResult,
    Usage,
)
from bastion.state._wire import HEADER, METHODS, WireError, decode, encode, frame, unframe
from bastion.state.plan import (
    AdmitResult,
    AllowBreaker,
    Charge,
    Incr,
    RecordBreaker,
    Reserve,
    Settle,
    Take,
)

anyf = st.floats(allow_nan=True, allow_infinity=True)
fin = st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False)
pos = st.floats(min_value=1e-6, max_value=1e9, allow_nan=False, allow_infinity=False)
key = st.text(min_size=1, max_size=20)
caps = st.builds(Cap, key=key, limit=fin, ttl_seconds=pos)
policies = st.builds(
    BreakerPolicy,
    failure_threshold=st.integers(0, 100),
    error_rate=st.floats(min_value=0.01, max_value=1.0),
    window_seconds=pos,
    min_calls=st.integers(1, 1000),
    cooldown_seconds=pos,
)
ops = st.one_of(
    st.builds(Take, key=key, rate_per_second=anyf, burst=anyf, cost=anyf),
    st.builds(Incr, key=key, amount=anyf, ttl_seconds=anyf, limit=st.none() | anyf),
    st.builds(AllowBreaker, key=key, policy=policies),
    st.builds(Reserve, key, st.lists(caps, max_size=3).map(tuple), anyf, anyf),
    st.builds(Settle, key, st.lists(caps, max_size=3).map(tuple), st.none() | anyf),
    st.builds(Charge, key=key, rate_per_second=anyf, burst=anyf, amount=anyf),
    st.builds(RecordBreaker, key=key, ok=st.booleans(), policy=policies),
)
states = st.sampled_from(BreakerState)
answers = st.one_of(
    st.builds(TakeResult, st.booleans(), anyf, anyf),
    st.builds(IncrResult, st.booleans(), anyf),
    st.builds(BreakerDecision, st.booleans(), states, st.booleans(), anyf),
    st.builds(ReserveResult, st.booleans(), st.none() | key, anyf, anyf, anyf),
)
json_like = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | anyf | st.text(),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["D", "T", "b", "f", "E", "M"]) | st.text(), inner, max_size=3
        )
    ),
    max_leaves=10,
)
values = st.one_of(
    ops,
    answers,
    caps,
    policies,
    states,
    st.sampled_from(IdemOutcome),
    st.builds(Usage, anyf, anyf),
    st.builds(IdemBegin, st.sampled_from(IdemOutcome), st.none() | st.binary(), anyf),
    st.builds(AdmitResult, st.none() | st.integers(0, 5), st.lists(answers, max_size=4).map(tuple)),
    st.lists(st.one_of(st.booleans(), anyf, states), max_size=5).map(tuple),  # finish answers
    st.lists(ops, max_size=4),
    st.dictionaries(st.text(), st.text(), max_size=4),  # get_flags
    st.dictionaries(st.text(), json_like, max_size=4),  # flag meta
    st.binary(),
    json_like,
)


def same(a: Any, b: Any) -> bool:
    """Equal with the same type at every level; NaN equals NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    if is_dataclass(a):
        return all(same(getattr(a, f.name), getattr(b, f.name)) for f in fields(a))
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def over_the_wire(method: str, args: list[Any]) -> tuple[Any, str, list[Any]]:
    data = frame([7, method, [encode(a) for a in args]])
    (size,) = HEADER.unpack(data[: HEADER.size])
    assert size == len(data) - HEADER.size
    rid, name, raw = unframe(data[HEADER.size :])
    return rid, name, [decode(a) for a in raw]


@settings(max_examples=400, deadline=None)
@given(value=values)
def test_every_value_round_trips_exactly(value: Any) -> None:
    rid, name, (back,) = over_the_wire("admit", [value])
    assert (rid, name) == (7, "admit")
    assert same(back, value), (value, back)


@settings(max_examples=200, deadline=None)
@given(
    method=st.sampled_from(sorted(METHODS)),
    args=st.lists(st.one_of(values, st.lists(caps, max_size=3)), max_size=5),
)
def test_every_call_round_trips_exactly(method: str, args: list[Any]) -> None:
    rid, name, back = over_the_wire(method, args)
    assert (rid, name) == (7, method)
    assert same(back, args)


@pytest.mark.parametrize(
    "tree",
    [
        {"D": ["Path", ["/etc/passwd"]]},  # not a wire type
        {"D": ["Cap", ["k", 1.0]]},  # too few fields
        {"D": ["Cap", ["", 1.0, 1.0]]},  # the type's own checks still run
        {"E": ["Signals", "SIGKILL"]},
        {"E": ["BreakerState", "exploded"]},
        {"f": "1e400"},
        {"b": "not base64!"},
        {"X": 1},
        {"T": [1], "b": ""},  # two tags
    ],
)
def test_the_decoder_builds_only_what_it_knows(tree: Any) -> None:
    with pytest.raises(WireError):
        decode(tree)


@pytest.mark.parametrize("value", [object(), {1, 2}, complex(1, 2), WireError("x")])
def test_the_encoder_refuses_what_is_not_on_the_wire(value: Any) -> None:
    with pytest.raises(WireError):
        encode(value)

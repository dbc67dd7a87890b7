"""Whatever arguments a model writes, each call ends as a result and distinct actions get distinct keys."""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.call import Principal
from bastion.safety.tools import (
    ToolCall,
    ToolContext,
    ToolExecutor,
    ToolRegistry,
    calls_to_anthropic,
    calls_to_openai,
    idempotency_key,
)
from bastion.safety.tools.canonical import MAX_DEPTH, UnsupportedValue, canonical
from bastion.state import CounterStore, open_state

USER = Principal(key_id="key_a", name="app", user="alice", roles=())
INF = float("inf")
NAN = float("nan")


class Ledger:
    """Records every real run of the side-effecting tool."""

    def __init__(self) -> None:
        self.runs: list[dict[str, Any]] = []


def build(ledger: Ledger, returns: Any = None) -> ToolRegistry:
    registry = ToolRegistry()

    @registry.tool(parameters={"type": "object"}, permission=None, side_effects=True)
    async def act(args: dict[str, Any], ctx: ToolContext) -> Any:
        """Do something that must happen once per distinct request."""
        ledger.runs.append(args)
        return {"run": len(ledger.runs), "args": args} if returns is None else returns

    @registry.tool(parameters={"type": "object"}, permission=None)
    async def peek(args: dict[str, Any], ctx: ToolContext) -> str:
        """Read something."""
        return "fine"

    return registry


@pytest.fixture
async def state() -> AsyncIterator[CounterStore]:
    store = open_state("memory://")
    try:
        yield store
    finally:
        await store.close()


def sendable(text: str) -> None:
    """The result can go back to a provider: it encodes as UTF-8."""
    text.encode("utf-8")


# -- the cases from the issue -------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"n": 2**64},
        {"s": "\ud800"},
        '{"s": "\\ud800"}',
        '{"s": "\ud800"}',
        {"\udc00": 1},
    ],
)
async def test_a_hostile_argument_costs_only_its_own_call(state: CounterStore, bad: Any) -> None:
    ledger = Ledger()
    executor = ToolExecutor(build(ledger), state)
    calls = [ToolCall("a", "act", {"x": 1}), ToolCall("b", "act", bad), ToolCall("c", "peek", {})]
    first, middle, last = await executor.run_calls(calls, USER, conversation_id="conv")
    assert first.ok and last.ok
    assert middle.call_id == "b"
    for result in (first, middle, last):
        sendable(result.text)


async def test_integers_past_64_bits_are_accepted_exactly_and_kept_apart(
    state: CounterStore,
) -> None:
    ledger = Ledger()
    executor = ToolExecutor(build(ledger), state)
    big = 2**64
    [one] = await executor.run_calls([ToolCall("1", "act", {"n": big})], USER, conversation_id="c")
    [two] = await executor.run_calls(
        [ToolCall("2", "act", f'{{"n": {big + 1}}}')], USER, conversation_id="c"
    )
    [again] = await executor.run_calls(
        [ToolCall("3", "act", f'{{"n": {big}}}')], USER, conversation_id="c"
    )
    assert one.ok and two.ok and not two.replayed
    assert [r["n"] for r in ledger.runs] == [big, big + 1]
    # the retry is replayed, and the stored result gives the big integer back exactly
    assert again.replayed and again.content == {"run": 1, "args": {"n": big}}


@pytest.mark.parametrize("text", ['{"amount": 1e400}', '{"amount": -1e400}'])
async def test_numbers_that_overflow_to_infinity_are_refused_for_the_model_to_fix(
    state: CounterStore, text: str
) -> None:
    ledger = Ledger()
    [result] = await ToolExecutor(build(ledger), state).run_calls(
        [ToolCall("1", "act", text)], USER
    )
    assert result.error == "invalid_arguments"
    assert "$.amount" in result.content["details"][0]
    assert ledger.runs == []


async def test_1e400_and_minus_1e400_are_not_one_action(state: CounterStore) -> None:
    ledger = Ledger()
    executor = ToolExecutor(build(ledger), state)
    for call_id, text in (("1", '{"amount": 1e400}'), ("2", '{"amount": -1e400}')):
        [result] = await executor.run_calls(
            [ToolCall(call_id, "act", text)], USER, conversation_id="c"
        )
        assert not result.replayed and result.error == "invalid_arguments"
    assert ledger.runs == []
    assert idempotency_key(USER, "c", "act", {"amount": INF}) != idempotency_key(
        USER, "c", "act", {"amount": -INF}
    )


@pytest.mark.parametrize(
    "bad",
    [
        "[" * 100_000,
        "{}" + "x",
        "[1, 2]",
        '{"a": NaN}',
        '{"a": Infinity}',
        "1" * 5_000,
    ],
)
async def test_argument_text_that_is_not_a_json_object_is_refused(
    state: CounterStore, bad: str
) -> None:
    [result] = await ToolExecutor(build(Ledger()), state).run_calls(
        [ToolCall("1", "act", bad)], USER
    )
    assert result.error == "invalid_arguments" and result.content["details"]


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


cyclic: list[Any] = []
cyclic.append(cyclic)


@pytest.mark.parametrize(
    "bad",
    [
        nested(10_000),
        {"a": cyclic},
        {1: "int key"},
        {"b": b"bytes"},
        {"o": object()},
        {"f": NAN},
        ["not", "an", "object"],
        None,
    ],
)
async def test_python_arguments_that_are_not_plain_json_are_refused(
    state: CounterStore, bad: Any
) -> None:
    [result] = await ToolExecutor(build(Ledger()), state).run_calls(
        [ToolCall("1", "act", bad)], USER
    )
    assert result.error == "invalid_arguments" and result.content["details"]
    sendable(result.text)


@pytest.mark.parametrize(
    "returned", [2**70, "\ud800 lone", {"x": "\udfff"}, {1: 2, (1, 2): 3}, INF, [b"raw"]]
)
async def test_any_result_a_tool_returns_reaches_the_model_and_the_store(
    state: CounterStore, returned: Any
) -> None:
    ledger = Ledger()
    executor = ToolExecutor(build(ledger, returns=returned), state)
    [first] = await executor.run_calls([ToolCall("1", "act", {})], USER, conversation_id="c")
    [retry] = await executor.run_calls([ToolCall("2", "act", {})], USER, conversation_id="c")
    assert first.ok and retry.ok and retry.replayed and len(ledger.runs) == 1
    sendable(first.text)
    sendable(retry.text)


async def test_a_fault_inside_the_executor_costs_one_call_not_the_turn() -> None:
    class Broken:
        async def idem_begin(self, *a: Any) -> Any:
            raise RuntimeError("a bug, not an outage")

    executor = ToolExecutor(build(Ledger()), Broken())  # type: ignore[arg-type]
    act, peek = await executor.run_calls(
        [ToolCall("1", "act", {}), ToolCall("2", "peek", {})], USER
    )
    assert act.content == {"error": "internal_error"} and "a bug" not in act.text
    assert peek.ok


def test_wire_conversion_keeps_hostile_arguments_exact_and_never_raises() -> None:
    big = 2**64 + 1
    calls = [ToolCall("1", "act", {"n": big}), ToolCall("2", "act", {"s": "\ud800"})]
    [openai_big, openai_surrogate] = calls_to_openai(calls)
    assert openai_big["function"]["arguments"] == f'{{"n":{big}}}'
    sendable(openai_surrogate["function"]["arguments"])
    [from_text] = calls_to_anthropic([ToolCall("3", "act", f'{{"n": {big}}}')])
    assert from_text["input"] == {"n": big}
    [not_json] = calls_to_anthropic([ToolCall("4", "act", '{"a": 1e400, "a": 2}')])
    assert not_json["input"] == {"_raw": '{"a": 1e400, "a": 2}'}


# -- the canonical encoding ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (1, 1.0),
        (1, True),
        (0, False),
        (0.0, -0.0),
        (INF, -INF),
        (INF, None),
        (2**64, float(2**64)),
        (2**64, 2**64 + 1),
        ("a", b"a"),
        ("\ud83d\ude00", "😀"),
        ("\ud800", "\ufffd"),
        ({1: "x"}, {"1": "x"}),
        ([1, [2]], [[1], 2]),
        ({"a": 1, "b": 2}, {"ab": 12}),
        (["ab"], ["a", "b"]),
        ("", None),
        ([], {}),
    ],
)
def test_distinct_values_have_distinct_canonical_forms(a: Any, b: Any) -> None:
    assert canonical(a) != canonical(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}),
        ([1, 2], (1, 2)),
        (NAN, -NAN),
        pytest.param(10**5000, 10**5000, id="huge-int"),
    ],
)
def test_the_same_value_has_one_canonical_form(a: Any, b: Any) -> None:
    assert canonical(a) == canonical(b)


def test_values_with_no_canonical_form_raise_a_value_error() -> None:
    with pytest.raises(UnsupportedValue):
        canonical({"o": object()})
    with pytest.raises(UnsupportedValue):
        canonical(nested(MAX_DEPTH + 1))


# -- properties ---------------------------------------------------------------------------

TEXT = st.text(
    st.one_of(
        st.sampled_from("ab\u00e9\u200b"),
        st.characters(),
        st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
    ),
    max_size=4,
)
KEYS = st.one_of(st.sampled_from(["", "a", "b", "\ud800"]), TEXT)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63 - 2, max_value=2**66),
    st.integers(min_value=-(2**66), max_value=-(2**63) + 2),
    st.floats(),
    st.sampled_from([0, 1, 0.0, -0.0, 1.0, INF, -INF, NAN, 2**64, float(2**64), True, False]),
    TEXT,
    st.binary(max_size=3),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(KEYS, inner, max_size=3),
    ),
    max_leaves=8,
)
ARGS = st.dictionaries(KEYS, VALUES, max_size=3)


def kind(value: Any) -> str:
    for name, types in (
        ("null", type(None)),
        ("bool", bool),
        ("int", int),
        ("float", float),
        ("str", str),
        ("bytes", bytes),
        ("array", (list, tuple)),
        ("object", dict),
    ):
        if isinstance(value, types):
            return name
    raise AssertionError(type(value))


def same(a: Any, b: Any) -> bool:
    """The documented equality: types count, floats by bits, one NaN, arrays by items."""
    if kind(a) != kind(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or struct.pack(">d", a) == struct.pack(">d", b)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def plain_json(value: Any) -> bool:
    """What a tool may be handed: finite numbers, valid Unicode, string keys, no bytes."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        return not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, bytes):
        return False
    if isinstance(value, list | tuple):
        return all(plain_json(v) for v in value)
    if isinstance(value, dict):
        return all(plain_json(k) and plain_json(v) for k, v in value.items())
    return True


def same_again(value: Any) -> Any:
    """An equal value built differently: arrays flip list/tuple, objects reverse their order."""
    if isinstance(value, list):
        return tuple(same_again(v) for v in value)
    if isinstance(value, tuple):
        return [same_again(v) for v in value]
    if isinstance(value, dict):
        return {k: same_again(value[k]) for k in reversed(list(value))}
    if isinstance(value, int) and not isinstance(value, bool):
        return int(str(value)) if abs(value) < 10**100 else value
    return value


@st.composite
def pairs(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> tuple[Any, Any]:
    a = draw(values)
    return a, draw(st.one_of(values, st.just(same_again(a))))


@settings(max_examples=400, deadline=None)
@given(pairs(VALUES))
def test_canonical_forms_are_equal_exactly_when_the_values_are(pair: tuple[Any, Any]) -> None:
    a, b = pair
    assert (canonical(a) == canonical(b)) == same(a, b)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pairs(ARGS))
def test_the_executor_never_raises_and_replays_only_the_same_arguments(
    pair: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    a, b = pair

    async def turns() -> tuple[list[Any], list[Any], Ledger]:
        ledger = Ledger()
        store = open_state("memory://")
        try:
            executor = ToolExecutor(build(ledger), store)
            first = await executor.run_calls(
                [ToolCall("1", "act", a), ToolCall("2", "peek", b)], USER, conversation_id="c"
            )
            second = await executor.run_calls([ToolCall("3", "act", b)], USER, conversation_id="c")
        finally:
            await store.close()
        return first, second, ledger

    (act_a, peek_b), (act_b,), ledger = asyncio.run(turns())
    for result in (act_a, peek_b, act_b):
        sendable(result.text)
    assert act_a.ok == plain_json(a)
    assert peek_b.ok == act_b.ok == plain_json(b)
    if act_a.ok and act_b.ok:
        assert act_b.replayed == same(a, b)
        assert len(ledger.runs) == (1 if same(a, b) else 2)
        assert same(act_b.content["args"], a if act_b.replayed else b)

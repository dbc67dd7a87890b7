"""The admitted request is frozen: reads as it was, refuses every write, and the attempts build
their upstream bodies from copies without touching it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.cost._cost_support import PRINCIPAL, inproc_config

from bastion.frozen import FrozenDict, FrozenList, freeze
from bastion.gateway import Gateway
from bastion.providers.base import Format

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(value=JSON)
def test_a_frozen_value_reads_and_serialises_as_it_was(value: Any) -> None:
    frozen = freeze(value)
    assert frozen == value
    assert orjson.dumps(frozen) == orjson.dumps(value)


@pytest.mark.parametrize(
    "write",
    [
        lambda b: b.__setitem__("model", "other"),
        lambda b: b.pop("model"),
        lambda b: b.update(model="x"),
        lambda b: b.setdefault("n", 5),
        lambda b: b["messages"].append({"role": "user", "content": "more"}),
        lambda b: b["messages"][0].__setitem__("content", "changed"),
        lambda b: b["messages"].__setitem__(0, {}),
        lambda b: b["messages"].extend([]),
    ],
)
def test_every_write_to_the_admitted_request_is_refused(write: Any) -> None:
    body = freeze({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert isinstance(body, FrozenDict) and isinstance(body["messages"], FrozenList)
    with pytest.raises(TypeError, match="frozen"):
        write(body)
    # a copy is the way to rewrite: plain and writable
    copy = dict(body)
    copy["model"] = "other"
    assert body["model"] == "m"


async def test_attempts_rewrite_copies_never_the_admitted_request(tmp_path: Path) -> None:
    cfg = inproc_config(
        tmp_path,
        models={
            "m": {
                "deployments": [
                    {
                        "provider": "sim",
                        "model": "claude-sonnet-5",
                        "headers": {"x-sim-fault": "status:500"},
                    },
                    {"provider": "sim", "model": "claude-haiku-5-5"},
                ]
            }
        },
        reliability={"retry": {"attempts_per_deployment": 1}, "breaker": {"enabled": False}},
    )
    async with Gateway(cfg) as gw:
        raw = json.dumps(
            {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        ).encode()
        reply = await gw.handle(Format.OPENAI, raw, {}, principal=PRINCIPAL)
        assert reply.stream is not None
        async for _ in reply.stream:
            pass
        assert reply.call is not None
        admitted = reply.call.body
        assert isinstance(admitted, FrozenDict)
        # each attempt sent its own model and stream options; the admitted request kept its own
        sent = [r.body for r in gw.simulator.requests]
        assert [b["model"] for b in sent] == ["claude-sonnet-5", "claude-haiku-5-5"]
        assert all(b["stream_options"] == {"include_usage": True} for b in sent)
        assert admitted["model"] == "m" and "stream_options" not in admitted
        assert admitted["max_tokens"] > 0  # written at admission, before the freeze

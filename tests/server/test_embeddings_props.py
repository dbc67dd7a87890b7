"""Properties of embeddings: the request model, the simulator's vectors, and the spend cap.

The SDK tests (test_embeddings_sdk.py) drive a real `bastion serve`; these run in-process so
hypothesis can try many shapes: any valid input survives validation unchanged, the budget's
token bound is never below what the provider bills, and concurrent calls never spend past a cap.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.cost._cost_support import asgi_call, inproc_config, make_key

from bastion.embeddings_request import parse_request
from bastion.errors import InvalidRequest
from bastion.gateway import Gateway
from bastion.providers.sim.embeddings import answer, vector

TEXT = st.text(min_size=1, max_size=60)
TOKENS = st.lists(st.integers(min_value=0, max_value=200_000), min_size=1, max_size=30)
INPUTS = st.one_of(
    TEXT,
    st.lists(TEXT, min_size=1, max_size=8),
    TOKENS,
    st.lists(TOKENS, min_size=1, max_size=8),
)


@given(INPUTS)
def test_any_valid_input_passes_unchanged_and_bounds_the_billed_tokens(value: Any) -> None:
    req = parse_request({"model": "m", "input": value})
    assert req.wire_input() == value
    billed = answer({"model": "m", "input": value, "dimensions": 4}, "m").prompt_tokens
    assert req.input_upper_bound() >= billed


@given(
    st.one_of(
        st.just(""),
        st.just([]),
        st.lists(st.just(""), min_size=1, max_size=3),
        st.lists(st.integers(max_value=-1), min_size=1, max_size=3),
        st.lists(st.one_of(TEXT, TOKENS), min_size=2, max_size=4).filter(
            lambda xs: {type(x) for x in xs} == {str, list}
        ),
        st.integers(),
        st.none(),
    )
)
def test_any_invalid_input_is_refused_naming_the_field(value: Any) -> None:
    with pytest.raises(InvalidRequest) as e:
        parse_request({"model": "m", "input": value})
    assert e.value.param == "input"


@given(TEXT, st.integers(min_value=1, max_value=512), st.integers(min_value=1, max_value=512))
def test_sim_vectors_are_unit_length_and_shortening_keeps_the_direction_of_the_prefix(
    text: str, a: int, b: int
) -> None:
    short, long = sorted((a, b))
    vs, vl = vector(text, short), vector(text, long)
    assert vector(text, short) == vs  # deterministic
    assert math.fsum(x * x for x in vs) == pytest.approx(1.0)
    scale = math.sqrt(math.fsum(x * x for x in vl[:short]))
    assert vs == pytest.approx([x / scale for x in vl[:short]], abs=1e-12)


PRICE = 1000.0  # USD per million input tokens: a thousandth of a dollar per token
CAP = 0.05


@settings(max_examples=12, deadline=None)
@given(st.lists(st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=4), max_size=10))
def test_concurrent_embedding_calls_never_spend_past_the_cap(batches: list[list[str]]) -> None:
    async def run(tmp: Path) -> None:
        cfg = inproc_config(
            tmp,
            models={
                "e": {
                    "deployments": [
                        {"provider": "sim", "model": "text-embedding-3-small", "dimensions": 8}
                    ]
                }
            },
            cost={
                "caps": {"global_daily_usd": CAP},
                "prices": {"text-embedding-3-small": {"input": PRICE, "output": 0.0}},
            },
        )
        async with Gateway(cfg) as gw:
            key = await make_key(gw)
            results = await asyncio.gather(
                *(asgi_call(gw, key, "/v1/embeddings", {"model": "e", "input": b}) for b in batches)
            )
            spent = 0.0
            for (status, _, body), b in zip(results, batches, strict=True):
                if status == 200:
                    assert len(body["data"]) == len(b)
                    spent += body["usage"]["prompt_tokens"] * PRICE / 1e6
                else:
                    assert status == 429 and "spend cap" in body["error"]["message"]
            usage = await gw.state.usage(f"spend:{gw.clock.day(None)}:global")
            assert usage.reserved == pytest.approx(0.0, abs=1e-12)  # every hold settled
            assert usage.settled == pytest.approx(spent)
            assert usage.settled <= CAP + 1e-12

    import tempfile

    with tempfile.TemporaryDirectory() as d:
        asyncio.run(run(Path(d)))


def test_config_refuses_an_alias_mixing_embedding_and_chat_deployments(tmp_path: Path) -> None:
    from bastion.errors import ConfigError

    mixed = {
        "e": {
            "deployments": [
                {"provider": "sim", "model": "text-embedding-3-small", "dimensions": 1536},
                {"provider": "sim", "model": "gpt-4.1"},
            ]
        }
    }
    with pytest.raises(ConfigError) as e:
        inproc_config(tmp_path, models=mixed)
    assert "models.e: deployments.1.dimensions" in str(e.value)
    on_anthropic = {
        "e": {"deployments": [{"provider": "a", "model": "x", "dimensions": 8}]},
    }
    with pytest.raises(ConfigError) as e:
        inproc_config(tmp_path, providers={"a": {"kind": "anthropic"}}, models=on_anthropic)
    assert "serves no embeddings" in str(e.value)


async def test_the_simulator_answers_openais_embeddings_shape_and_errors() -> None:
    import orjson

    from bastion.providers.sim import Simulator

    sim = Simulator()
    body = orjson.dumps({"model": "sim-embed-16", "input": ["a", "bb"]})
    res = await sim.handle("POST", "/v1/embeddings", {}, body)
    out = orjson.loads(b"".join([c async for c in res.body]))
    assert res.status == 200 and out["object"] == "list" and out["model"] == "sim-embed-16"
    assert [(d["object"], d["index"], len(d["embedding"])) for d in out["data"]] == [
        ("embedding", 0, 16),
        ("embedding", 1, 16),
    ]
    assert out["usage"] == {"prompt_tokens": 2, "total_tokens": 2}
    bad = await sim.handle("POST", "/v1/embeddings", {}, orjson.dumps({"model": "m", "input": ""}))
    err = orjson.loads(b"".join([c async for c in bad.body]))
    assert bad.status == 400 and err["error"]["param"] == "input"
    down = await sim.handle(
        "POST",
        "/v1/embeddings",
        {"x-sim-fault": "status:503"},
        orjson.dumps({"model": "m", "input": "x"}),
    )
    assert down.status == 503


async def test_an_open_breaker_skips_the_failing_deployment_and_the_library_call_works(
    tmp_path: Path,
) -> None:
    from bastion.embeddings import EmbeddingsApi

    deployments = [
        {
            "provider": "sim",
            "model": "bad-embed",
            "dimensions": 8,
            "headers": {"x-sim-fault": "status:500"},
        },
        {"provider": "sim", "model": "good-embed", "dimensions": 8},
    ]
    cfg = inproc_config(
        tmp_path,
        models={"e": {"deployments": deployments}},
        reliability={
            "retry": {"attempts_per_deployment": 1},
            "breaker": {"failure_threshold": 2, "cooldown_seconds": 600},
        },
    )
    async with Gateway(cfg) as gw:
        api = EmbeddingsApi(gw)
        for _ in range(4):
            out = await api.create({"model": "e", "input": ["a", "b"]}, feature="default")
            assert [len(d["embedding"]) for d in out["data"]] == [8, 8]
        tried = [r.body["model"] for r in gw.simulator.requests]
        assert tried.count("bad-embed") == 2  # the breaker opened after two failures
        assert tried.count("good-embed") == 4
        with pytest.raises(TypeError):
            await api.create({"model": "e", "input": "a"}, colour="blue")

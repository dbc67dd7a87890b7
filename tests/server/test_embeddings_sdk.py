"""The official OpenAI SDK's `client.embeddings.create` against a real `bastion serve`.

Upstream is the simulator: in-process for the default aliases, and a separate `bastion sim`
process (reached as an openai-compatible provider) where a test needs to see exactly what the
provider received.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import struct
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.conftest import RunningGateway, start_gateway, stop, write_config
from tests.cost._cost_support import sim_process

from bastion.config import default_config
from bastion.providers.sim.embeddings import vector
from bastion.store import open_store
from bastion.store.models import CallRecord

EMAIL = "jane.doe@example.com"


def _models(sim_url: str) -> dict[str, Any]:
    up = "up"
    models: dict[str, Any] = dict(default_config({})["models"])  # the simulated defaults
    models.update(
        {
            "embed-up": {
                "deployments": [
                    {"provider": up, "model": "text-embedding-3-small", "dimensions": 1536}
                ]
            },
            # the first fails, the second is of another dimension and must be skipped
            "embed-failover": {
                "deployments": [
                    {
                        "provider": up,
                        "model": "text-embedding-3-small",
                        "dimensions": 1536,
                        "headers": {"x-sim-fault": "status:500"},
                    },
                    {"provider": up, "model": "sim-embed-768", "dimensions": 768},
                    {"provider": up, "model": "text-embedding-ada-002", "dimensions": 1536},
                ]
            },
            # declared 1536, answers 512: a wrong-length answer is not passed on
            "embed-liar": {
                "deployments": [
                    {"provider": up, "model": "sim-embed-512", "dimensions": 1536},
                    {"provider": up, "model": "text-embedding-3-small", "dimensions": 1536},
                ]
            },
        }
    )
    return models


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    with sim_process() as url:
        yield url


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, sim_url: str) -> Iterator[RunningGateway]:
    tmp = tmp_path_factory.mktemp("embeddings")
    cfg = write_config(
        tmp,
        providers={
            "sim": {"kind": "sim"},
            "up": {"kind": "openai-compatible", "base_url": sim_url + "/v1"},
        },
        models=_models(sim_url),
        features={
            "default": {"pii_output": "off"},
            "broke": {"daily_budget_usd": 0.0},
            "scrub_in": {"pii_provider": True},
            "ledger": {},
            "killed": {},
        },
        reliability={"retry": {"attempts_per_deployment": 1}, "breaker": {"enabled": False}},
    )
    g = start_gateway(cfg)
    yield g
    stop(g.proc)


def _client(gw: RunningGateway, feature: str | None = None) -> openai.OpenAI:
    headers = {"x-bastion-feature": feature} if feature else None
    return openai.OpenAI(
        base_url=gw.url + "/v1", api_key=gw.key, max_retries=0, default_headers=headers
    )


def _sim_requests(sim_url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(sim_url + "/_sim/requests", timeout=10) as r:
        recs: list[dict[str, Any]] = json.loads(r.read())
    return [x for x in recs if x["method"] == "POST" and x["path"].endswith("/embeddings")]


def _record(gw: RunningGateway, request_id: str) -> CallRecord:
    """The call's record, read back from the gateway's own store (written off the hot path)."""
    url = f"sqlite:///{gw.config_path.parent / 'bastion.db'}"

    async def find() -> CallRecord | None:
        async with open_store(url) as store:
            recs = await store.recent_calls(500)
        return next((r for r in recs if r.request_id == request_id), None)

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rec = asyncio.run(find())
        if rec is not None:
            return rec
        time.sleep(0.1)
    raise AssertionError(f"no record for {request_id}")


def _ledger_total(gw: RunningGateway, feature: str) -> float:
    """Today's spend of one feature, from the gateway's own ledger."""
    url = f"sqlite:///{gw.config_path.parent / 'bastion.db'}"

    async def total() -> float:
        async with open_store(url) as store:
            day = time.strftime("%Y-%m-%d", time.gmtime())
            by_feature = await store.spend_by_day(day, "feature")
        return float(by_feature.get(feature, 0.0))

    return asyncio.run(total())


def _norm(v: list[float]) -> float:
    return math.sqrt(math.fsum(x * x for x in v))


def test_an_embedding_alias_is_listed_among_the_default_simulated_models(
    gw: RunningGateway,
) -> None:
    ids = {m.id for m in _client(gw).models.list().data}
    assert {"text-embedding-3-small", "text-embedding-3-large"} <= ids
    assert default_config({})["models"]["text-embedding-3-small"]["deployments"][0]["dimensions"]


def test_single_input_gets_one_unit_vector_of_the_configured_dimension(gw: RunningGateway) -> None:
    res = _client(gw).embeddings.create(model="text-embedding-3-small", input="hello world")
    assert res.object == "list" and res.model == "text-embedding-3-small"
    (item,) = res.data
    assert item.object == "embedding" and item.index == 0
    assert len(item.embedding) == 1536
    assert _norm(item.embedding) == pytest.approx(1.0, abs=1e-5)
    # the usage is the simulator's count for these 11 bytes, and total equals prompt
    assert res.usage.prompt_tokens == 3 and res.usage.total_tokens == 3
    large = _client(gw).embeddings.create(model="text-embedding-3-large", input="hello world")
    assert len(large.data[0].embedding) == 3072


def test_a_batch_answers_each_input_at_its_index_and_as_if_sent_alone(gw: RunningGateway) -> None:
    c = _client(gw)
    texts = ["alpha", "beta gamma", "delta"]
    res = c.embeddings.create(model="text-embedding-3-small", input=texts, encoding_format="float")
    assert [d.index for d in res.data] == [0, 1, 2]
    for text, d in zip(texts, res.data, strict=True):
        alone = c.embeddings.create(
            model="text-embedding-3-small", input=text, encoding_format="float"
        )
        assert d.embedding == alone.data[0].embedding
    assert len({tuple(d.embedding) for d in res.data}) == 3
    assert res.usage.prompt_tokens == 2 + 3 + 2
    tokens = c.embeddings.create(model="text-embedding-3-small", input=[[1, 2, 3], [4, 5]])
    assert len(tokens.data) == 2 and tokens.usage.prompt_tokens == 5


def test_base64_is_the_float32_vector_and_the_sdk_default_decodes_it(gw: RunningGateway) -> None:
    c = _client(gw)
    floats = c.embeddings.create(
        model="text-embedding-3-small", input="same text", encoding_format="float"
    )
    b64 = c.embeddings.create(
        model="text-embedding-3-small", input="same text", encoding_format="base64"
    )
    raw = b64.data[0].embedding
    assert isinstance(raw, str)
    decoded = struct.unpack("<1536f", base64.b64decode(raw))
    assert decoded == pytest.approx(floats.data[0].embedding, abs=1e-7)
    # without encoding_format the SDK asks for base64 itself and decodes it
    default = c.embeddings.create(model="text-embedding-3-small", input="same text")
    assert default.data[0].embedding == pytest.approx(floats.data[0].embedding, abs=1e-7)


def test_dimensions_shortens_to_the_unit_length_prefix_and_beyond_the_model_is_a_400(
    gw: RunningGateway,
) -> None:
    c = _client(gw)
    full = c.embeddings.create(model="text-embedding-3-small", input="shorten me").data[0]
    short = c.embeddings.create(
        model="text-embedding-3-small", input="shorten me", dimensions=256
    ).data[0]
    assert len(short.embedding) == 256
    assert _norm(short.embedding) == pytest.approx(1.0, abs=1e-5)
    prefix = full.embedding[:256]
    scaled = [x / _norm(prefix) for x in prefix]
    assert short.embedding == pytest.approx(scaled, abs=1e-5)
    with pytest.raises(openai.BadRequestError) as e:
        c.embeddings.create(model="text-embedding-3-small", input="x", dimensions=4096)
    assert "dimensions" in str(e.value)


def test_bad_requests_get_openai_errors_naming_the_field(gw: RunningGateway) -> None:
    c = _client(gw)
    with pytest.raises(openai.BadRequestError) as e:
        c.embeddings.create(model="text-embedding-3-small", input="")
    assert e.value.body["param"] == "input"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as e:
        c.embeddings.create(model="text-embedding-3-small", input=["ok", 3])  # type: ignore[arg-type]
    assert e.value.body["param"] == "input"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as e:
        c.embeddings.create(model="gpt-4.1", input="a chat model")
    assert "not an embedding model" in str(e.value)
    with pytest.raises(openai.NotFoundError):
        c.embeddings.create(model="no-such-embedder", input="x")
    with pytest.raises(openai.BadRequestError) as e:
        c.embeddings.create(
            model="text-embedding-3-small",
            input="x",
            encoding_format="int8",  # type: ignore[arg-type]
        )
    assert e.value.body["param"] == "encoding_format"  # type: ignore[index]
    bad_key = openai.OpenAI(base_url=gw.url + "/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad_key.embeddings.create(model="text-embedding-3-small", input="x")


def test_the_call_is_recorded_and_priced_per_input_token_in_the_ledger(gw: RunningGateway) -> None:
    raw = _client(gw, "ledger").embeddings.with_raw_response.create(
        model="text-embedding-3-small", input=["one record", "and its ledger entry"]
    )
    res = raw.parse()
    rec = _record(gw, raw.headers["x-request-id"])
    assert rec.requested_model == "text-embedding-3-small" and rec.status == 200
    assert rec.input_tokens == res.usage.prompt_tokens and rec.output_tokens == 0
    assert rec.flags["endpoint"] == "embeddings" and rec.feature == "ledger"
    assert rec.input_text == "one record\nand its ledger entry"
    # text-embedding-3-small: $0.02 per million input tokens, nothing for output
    assert rec.cost_usd == pytest.approx(res.usage.prompt_tokens * 0.02 / 1e6)
    deadline = time.monotonic() + 10
    while _ledger_total(gw, "ledger") == 0.0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _ledger_total(gw, "ledger") == pytest.approx(rec.cost_usd)


def test_a_spent_budget_refuses_before_the_provider_is_asked(
    gw: RunningGateway, sim_url: str
) -> None:
    sent = len(_sim_requests(sim_url))
    with pytest.raises(openai.RateLimitError) as e:
        _client(gw, "broke").embeddings.create(model="embed-up", input="anything")
    assert "spend cap" in str(e.value)
    assert len(_sim_requests(sim_url)) == sent
    # the same call on a feature with room reaches the provider
    _client(gw).embeddings.create(model="embed-up", input="anything")
    assert len(_sim_requests(sim_url)) == sent + 1


def test_the_kill_switch_stops_embeddings_before_the_provider(
    gw: RunningGateway, sim_url: str
) -> None:
    req = urllib.request.Request(
        gw.url + "/admin/kill",
        data=json.dumps({"on": True, "feature": "killed"}).encode(),
        headers={"authorization": "Bearer " + gw.key, "content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200
    sent = len(_sim_requests(sim_url))
    with pytest.raises(openai.APIStatusError) as e:
        _client(gw, "killed").embeddings.create(model="embed-up", input="anything")
    assert e.value.status_code == 503
    assert len(_sim_requests(sim_url)) == sent
    _client(gw).embeddings.create(model="embed-up", input="anything")  # other features run
    assert len(_sim_requests(sim_url)) == sent + 1


def test_failover_skips_a_deployment_of_another_dimension(gw: RunningGateway, sim_url: str) -> None:
    sent = len(_sim_requests(sim_url))
    raw = _client(gw).embeddings.with_raw_response.create(
        model="embed-failover", input="fail me over", encoding_format="float"
    )
    res = raw.parse()
    models = [r["body"]["model"] for r in _sim_requests(sim_url)[sent:]]
    assert models == ["text-embedding-3-small", "text-embedding-ada-002"]  # never sim-embed-768
    assert len(res.data[0].embedding) == 1536
    assert raw.headers["x-bastion-attempts"] == "2"
    rec = _record(gw, raw.headers["x-request-id"])
    assert rec.failover and any("sim-embed-768" in d for d in rec.flags["skipped_deployments"])


def test_an_answer_of_the_wrong_length_fails_over(gw: RunningGateway, sim_url: str) -> None:
    sent = len(_sim_requests(sim_url))
    res = _client(gw).embeddings.create(
        model="embed-liar", input="how long", encoding_format="float"
    )
    assert len(res.data[0].embedding) == 1536
    models = [r["body"]["model"] for r in _sim_requests(sim_url)[sent:]]
    assert models == ["sim-embed-512", "text-embedding-3-small"]


def test_pii_is_scrubbed_before_the_provider_sees_the_input(
    gw: RunningGateway, sim_url: str
) -> None:
    text = f"Write to {EMAIL} about the invoice"
    sent = len(_sim_requests(sim_url))
    raw = _client(gw, "scrub_in").embeddings.with_raw_response.create(
        model="embed-up", input=[text, "nothing personal"], encoding_format="float"
    )
    res = raw.parse()
    (req,) = _sim_requests(sim_url)[sent:]
    seen = req["body"]["input"]
    assert EMAIL not in json.dumps(req["body"]) and seen[1] == "nothing personal"
    assert "[EMAIL_1]" in seen[0]
    # the vector is the scrubbed text's, as the provider computed it
    assert res.data[0].embedding == pytest.approx(vector(seen[0], 1536), abs=1e-9)
    rec = _record(gw, raw.headers["x-request-id"])
    assert any(f.kind == "pii" and f.action == "redacted" for f in rec.findings)
    assert EMAIL not in rec.input_text and "invoice" in rec.input_text  # nothing raw is written
    # without the policy, the provider gets the text as sent
    _client(gw).embeddings.create(model="embed-up", input=text)
    assert _sim_requests(sim_url)[-1]["body"]["input"] == text
    # token arrays cannot be scrubbed, so that feature refuses them
    with pytest.raises(openai.BadRequestError) as e:
        _client(gw, "scrub_in").embeddings.create(model="embed-up", input=[[1, 2, 3]])
    assert "token arrays" in str(e.value)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    text=st.text(min_size=1, max_size=80).filter(lambda s: "\x00" not in s),
    dims=st.one_of(st.none(), st.integers(min_value=1, max_value=1536)),
)
def test_vectors_are_deterministic_unit_length_and_of_the_asked_dimension(
    gw: RunningGateway, text: str, dims: int | None
) -> None:
    c = _client(gw)
    kw: dict[str, Any] = {} if dims is None else {"dimensions": dims}
    a = c.embeddings.create(model="text-embedding-3-small", input=text, **kw)
    b = c.embeddings.create(
        model="text-embedding-3-small", input=[text], encoding_format="float", **kw
    )
    va, vb = a.data[0].embedding, b.data[0].embedding
    assert len(va) == (dims or 1536)
    assert va == pytest.approx(vb, abs=1e-7)  # float32 (base64) against float64 (float)
    assert _norm(vb) == pytest.approx(1.0, abs=1e-9)
    assert vb == pytest.approx(vector(text, dims or 1536), abs=1e-12)


def test_rate_limits_apply_to_embeddings(tmp_path_factory: pytest.TempPathFactory) -> None:
    tmp = tmp_path_factory.mktemp("embeddings_rl")
    models = default_config({})["models"]
    cost = {
        "caps": {"end_user_caps": True},
        "rate_limits": {"per_user": {"requests_per_minute": 2, "burst": 2}},
    }
    g = start_gateway(write_config(tmp, models=models, cost=cost))
    try:
        c = _client(g)
        for _ in range(2):
            c.embeddings.create(model="text-embedding-3-small", input="x", user="rl-user")
        with pytest.raises(openai.RateLimitError) as e:
            c.embeddings.create(model="text-embedding-3-small", input="x", user="rl-user")
        assert e.value.response.headers.get("retry-after")
        # another user has a bucket of their own
        c.embeddings.create(model="text-embedding-3-small", input="x", user="another-user")
    finally:
        stop(g.proc)

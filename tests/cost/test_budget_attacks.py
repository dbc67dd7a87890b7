"""Each known way around a daily spend cap, tried against real gateways.

a/b. Many concurrent calls carrying one client ``X-Request-Id`` (a reused reservation id would
     let them all through as one reservation): embedded state, then 3 replicas on Redis.
c.   Mismatched token-limit fields (``max_tokens: 5`` beside ``max_completion_tokens: 3000`` or
     ``max_output_tokens: 3000``) and ``n: 5``: the reservation must cover the largest, times n.
d.   Redis frozen mid-burst (SIGSTOP of a private redis-server) long enough for leases to end:
     settles journaled during the freeze land afterwards, exactly once.
e.   A JSON repair attempt is an upstream request too: reserved before it is sent, or not sent.
f.   Failover, hedge and continuation attempts are each reserved and settled at their own
     model's price.

Servers, simulators and Redis are local (127.0.0.1) and every burst is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from _attack_support import (
    LoggedSimulator,
    burst,
    check_every_send_was_reserved,
    ledger_total,
    pg_schema,
    records,
    upstream_bodies,
    worst_case,
)
from _cost_support import (
    PRINCIPAL,
    SHARED_REDIS,
    RecordingState,
    asgi_call,
    delete_prefix,
    inproc_config,
    make_key,
    private_redis,
    sim_process,
    unique_prefix,
)
from tests.conftest import RunningGateway, start_gateway, stop, write_config

from bastion.call import Usage as CallUsage
from bastion.clock import DayClock
from bastion.cost.pricing import PriceTable
from bastion.gateway import Gateway
from bastion.providers.base import Format
from bastion.state import MemoryCounterStore, open_state

MSG = [{"role": "user", "content": "hello"}]
# 200 ms upstream: the burst's calls really overlap, so a shared reservation id would be shared
PACED = {
    "paced": {
        "deployments": [
            {"provider": "sim", "model": "claude-sonnet-5", "headers": {"x-sim-ttft-ms": "200"}}
        ]
    }
}
BURST_BODY = {"model": "paced", "max_tokens": 50, "messages": MSG}
CLIENT_ID = "client-chosen-id-0001"
PRICES = PriceTable()


def feature_cap_key() -> str:
    return f"spend:{DayClock().day()}:feature:default"


def check_ids(answers: list[Any]) -> None:
    """Every answer has its own server-minted id; the client's id is only echoed."""
    served = [a for a in answers if a.status == 200]
    ids = [a.headers.get("x-request-id") for a in served]
    assert all(i and i != CLIENT_ID for i in ids), ids[:5]
    assert len(set(ids)) == len(ids), "two served calls share a request id"
    assert all(a.headers.get("x-client-request-id") == CLIENT_ID for a in served)


def check_refusals(answers: list[Any]) -> None:
    assert {a.status for a in answers} <= {200, 429}, sorted({a.status for a in answers})
    for a in answers:
        if a.status == 429:
            assert a.body["error"]["scope"] == "feature:default", a.body


# -- a. one client X-Request-Id on 300 concurrent calls, embedded state ---------------------


async def test_a_same_client_request_id_cannot_pass_the_cap_embedded(tmp_path: Path) -> None:
    cap = 0.01
    gw = start_gateway(
        write_config(
            tmp_path,
            models=PACED,
            features={"default": {"daily_budget_usd": cap}},
            state={"settle_journal": str(tmp_path / "journal")},
        )
    )
    try:
        answers = await burst(
            [gw.url],
            gw.key,
            [BURST_BODY] * 300,
            headers={"x-request-id": CLIENT_ID},
            concurrency=100,
        )
        recs = await records(f"sqlite:///{tmp_path / 'bastion.db'}", len(answers))
        spent = await ledger_total(f"sqlite:///{tmp_path / 'bastion.db'}")
    finally:
        stop(gw.proc)  # a graceful stop writes the embedded state file
    check_refusals(answers)
    ok = [a for a in answers if a.status == 200]
    assert ok, "nothing was served: the cap should afford a dozen calls or more"
    assert len(ok) < 300, "nothing was refused: the cap did not bite"
    check_ids(answers)

    served = [r for r in recs if r.status == 200]
    assert len(served) == len(ok)
    assert all(r.client_request_id == CLIENT_ID for r in recs)
    cheapest = min(r.cost_usd for r in served)
    assert cheapest > 0
    assert len(ok) * cheapest <= cap + 1e-12, f"{len(ok)} calls of >= ${cheapest} each"
    assert spent <= cap + 1e-12, f"spent ${spent:.6f} over the ${cap} cap"
    assert spent == pytest.approx(sum(r.cost_usd for r in served), abs=1e-9)

    state = MemoryCounterStore(str(tmp_path / "state.db"))
    try:
        u = await state.usage(feature_cap_key())
    finally:
        await state.close()
    assert u.settled == pytest.approx(spent, abs=1e-9), (
        "the cap counted other spend than the ledger"
    )


# -- b. the same on three replicas sharing Redis (records in PostgreSQL) --------------------


async def test_b_same_client_request_id_cannot_pass_the_cap_three_replicas(
    tmp_path: Path,
) -> None:
    cap = 0.05
    prefix = unique_prefix()
    gws: list[RunningGateway] = []
    async with pg_schema() as store_url:
        try:
            cfg = write_config(
                tmp_path,
                store={"url": store_url},
                state={
                    "url": SHARED_REDIS,
                    "prefix": prefix,
                    "settle_journal": str(tmp_path / "journal"),
                },
                models=PACED,
                features={"default": {"daily_budget_usd": cap}},
            )
            gws.append(start_gateway(cfg))  # the first one migrates the store
            gws += await asyncio.gather(*(asyncio.to_thread(start_gateway, cfg) for _ in range(2)))
            answers = await burst(
                [g.url for g in gws],
                gws[0].key,
                [BURST_BODY] * 300,
                headers={"x-request-id": CLIENT_ID},
                concurrency=100,
            )
            recs = await records(store_url, len(answers))
            spent = await ledger_total(store_url)
            st = open_state(SHARED_REDIS, prefix=prefix)
            try:
                u = await st.usage(feature_cap_key())
            finally:
                await st.close()
        finally:
            for g in gws:
                stop(g.proc)
            delete_prefix(prefix)
    check_refusals(answers)
    ok = [a for a in answers if a.status == 200]
    assert ok and len(ok) < 300, len(ok)
    check_ids(answers)
    served = [r for r in recs if r.status == 200]
    assert len(served) == len(ok)
    assert spent <= cap + 1e-12, f"three replicas spent ${spent:.6f} over the ${cap} cap"
    assert spent == pytest.approx(sum(r.cost_usd for r in served), abs=1e-9)
    assert u.settled == pytest.approx(spent, abs=1e-9)
    assert u.reserved == 0.0


# -- c. mismatched token-limit fields, and n ------------------------------------------------

LIMIT_CAP = 0.01  # gpt-4.1 bills $8 per million output tokens: 3000 tokens are $0.024


def _limit_config(tmp: Path, sim_url: str, state: dict[str, Any]) -> Path:
    tmp.mkdir()
    return write_config(
        tmp,
        providers={"up": {"kind": "openai", "base_url": sim_url + "/v1"}},
        models={
            "gpt": {
                "deployments": [
                    {
                        "provider": "up",
                        "model": "gpt-4.1",
                        # the simulator writes as many tokens as the limit it honours allows
                        "headers": {"x-sim-reply-tokens": "3000", "x-sim-chunk-ms": "0"},
                    }
                ]
            }
        },
        features={"default": {"daily_budget_usd": LIMIT_CAP}},
        state={**state, "settle_journal": str(tmp / "journal")},
    )


@pytest.fixture(scope="module")
def upstream_sim() -> Iterator[str]:
    """A `bastion sim` process: its request log shows what each gateway really sent."""
    with sim_process("--ttft-ms", "0") as sim_url:
        yield sim_url


@pytest.fixture(params=["embedded", "redis"])
def limit_gateway(
    request: pytest.FixtureRequest, tmp_path: Path, upstream_sim: str
) -> Iterator[tuple[str, RunningGateway, str | None]]:
    """A gateway on the upstream simulator: embedded state, or Redis state."""
    prefix = unique_prefix() if request.param == "redis" else None
    state = {} if prefix is None else {"url": SHARED_REDIS, "prefix": prefix}
    gw = start_gateway(_limit_config(tmp_path / request.param, upstream_sim, state))
    try:
        yield upstream_sim, gw, prefix
    finally:
        stop(gw.proc)
        if prefix is not None:
            delete_prefix(prefix)


async def test_c_largest_token_limit_times_n_is_reserved(
    limit_gateway: tuple[str, RunningGateway, str | None],
) -> None:
    sim_url, gw, prefix = limit_gateway
    client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=gw.key, max_retries=0)

    async def ask(**kw: Any) -> tuple[str, Any]:
        """(marker, completion or the 429); the marker finds the request upstream."""
        marker = f"m-{uuid.uuid4().hex[:10]}"
        msgs: Any = [{"role": "user", "content": f"hello {marker}"}]
        try:
            return marker, await client.chat.completions.create(model="gpt", messages=msgs, **kw)
        except openai.RateLimitError as err:
            body = err.response.json()
            assert body["error"]["code"] == "budget_exceeded", body
            return marker, err

    def sent(bodies: list[dict[str, Any]], marker: str) -> dict[str, Any]:
        (body,) = [b for b in bodies if marker in json.dumps(b)]
        return body

    try:
        # a 5-token worst case fits the cap
        _, small = await ask(max_tokens=5)
        assert not isinstance(small, openai.RateLimitError), "the 5-token call should fit"
        assert small.usage is not None and small.usage.completion_tokens <= 5

        # the same call with a larger limit beside it: the provider may honour either one
        mismatched = [
            await ask(max_tokens=5, max_completion_tokens=3000),
            await ask(max_tokens=5, extra_body={"max_output_tokens": 3000}),
            await ask(max_completion_tokens=5, extra_body={"max_output_tokens": 3000}),
        ]
        bodies = await upstream_bodies(sim_url)
        for marker, out in mismatched:
            if isinstance(out, openai.RateLimitError):
                continue
            # served: then what went upstream must not be able to cost more than the cap
            body = sent(bodies, marker)
            assert worst_case(PRICES, "gpt-4.1", "openai", body) <= LIMIT_CAP, (
                f"sent upstream with a limit the cap cannot cover: {body}"
            )

        # n choices are n worst cases: one fits, five do not
        _, five = await ask(max_tokens=300, n=5)
        assert isinstance(five, openai.RateLimitError), "n=5 was reserved as one choice"
        _, one = await ask(max_tokens=300, n=1)
        assert not isinstance(one, openai.RateLimitError), "one 300-token choice should fit"
    finally:
        await client.close()

    store_url = f"sqlite:///{gw.config_path.parent / 'bastion.db'}"
    recs = await records(store_url, 6)  # every call above is recorded, refused or served
    assert len(recs) == 6
    spent = await ledger_total(store_url)
    assert spent == pytest.approx(sum(r.cost_usd for r in recs), abs=1e-9)
    assert 0 < spent <= LIMIT_CAP, spent
    if prefix is not None:
        st = open_state(SHARED_REDIS, prefix=prefix)
        try:
            u = await st.usage(feature_cap_key())
        finally:
            await st.close()
        assert u.settled == pytest.approx(spent, abs=1e-9)
        assert u.settled <= LIMIT_CAP


# -- d. Redis frozen mid-burst --------------------------------------------------------------

FREEZE_CAP = 0.02


async def test_d_redis_frozen_mid_burst_loses_no_settle_and_keeps_the_cap(tmp_path: Path) -> None:
    prefix = unique_prefix()
    with private_redis() as rds:
        assert rds.proc is not None
        gw = start_gateway(
            write_config(
                tmp_path,
                models={
                    "slow": {
                        "deployments": [
                            {
                                "provider": "sim",
                                "model": "claude-sonnet-5",
                                # 0.6 s upstream: calls are in flight when Redis freezes
                                "headers": {"x-sim-ttft-ms": "600"},
                            }
                        ]
                    }
                },
                state={
                    "url": rds.url,
                    "prefix": prefix,
                    "settle_journal": str(tmp_path / "journal"),
                },
                # lease = deadline (2 s) + grace (0.5 s): shorter than the 3 s freeze
                features={"default": {"daily_budget_usd": FREEZE_CAP, "deadline": 2.0}},
                cost={"lease_grace_seconds": 0.5},
                # no breaker bookkeeping in Redis after each answer: the settle is the first
                # thing to meet the frozen store, within its 2 s timeout
                reliability={"breaker": {"enabled": False}},
            )
        )
        answers: list[Any] = []
        stop_at = time.monotonic() + 6.0
        body = {"model": "slow", "max_tokens": 50, "messages": MSG}

        async def worker(i: int) -> None:
            await asyncio.sleep(i * 0.05)  # staggered: answers arrive all through the freeze
            while time.monotonic() < stop_at:
                (a,) = await burst([gw.url], gw.key, [body], concurrency=1)
                answers.append(a)
                if a.status != 200:
                    await asyncio.sleep(0.1)

        try:
            workers = [asyncio.ensure_future(worker(i)) for i in range(12)]
            await asyncio.sleep(0.9)
            rds.proc.send_signal(signal.SIGSTOP)  # by PID: only our own redis-server
            try:
                # calls that start now meet the frozen store: refused, never sent unreserved
                probes = asyncio.ensure_future(burst([gw.url], gw.key, [body] * 2))
                await asyncio.sleep(3.0)
            finally:
                rds.proc.send_signal(signal.SIGCONT)
            refused = await probes
            answers += refused
            await asyncio.gather(*workers)

            # the journal lands its settles within a retry or two; orphaned holds expire
            store_url = f"sqlite:///{tmp_path / 'bastion.db'}"
            st = open_state(rds.url, prefix=prefix)
            try:
                for _ in range(100):
                    recs = await records(store_url, len(answers))
                    spent = sum(r.cost_usd for r in recs if r.status == 200)
                    u = await st.usage(feature_cap_key())
                    if u.reserved == 0 and u.settled == pytest.approx(spent, abs=1e-9):
                        break
                    await asyncio.sleep(0.1)
            finally:
                await st.close()
            ledger = await ledger_total(store_url)
        finally:
            with contextlib.suppress(ProcessLookupError):
                rds.proc.send_signal(signal.SIGCONT)
            stop(gw.proc)
            log = gw.log()

    statuses = sorted({a.status for a in answers})
    assert set(statuses) <= {200, 429, 503}, statuses
    ok = [a for a in answers if a.status == 200]
    assert ok, statuses
    assert [a.status for a in refused] == [503, 503], [a.body for a in refused]
    assert "journaled" in log, "no settle met the frozen store: the test did not test the journal"
    assert len(recs) == len(answers)
    assert sum(r.status == 200 for r in recs) == len(ok)
    # every served call's spend landed on the cap, once; none was lost to the freeze
    assert u.settled == pytest.approx(spent, abs=1e-9), (u, spent)
    assert ledger == pytest.approx(spent, abs=1e-9)
    assert u.reserved == 0.0
    assert u.settled <= FREEZE_CAP, f"settled ${u.settled:.6f} over the ${FREEZE_CAP} cap"


# -- e. a JSON repair attempt is reserved like any other ------------------------------------

SCHEMA = {
    "type": "object",
    "properties": {"refund": {"type": "boolean"}, "reason": {"type": "string"}},
    "required": ["refund", "reason"],
    "additionalProperties": False,
}
REPAIR_BODY = {
    "model": "gpt-4.1",
    "max_tokens": 1000,
    "response_format": {"type": "json_schema", "json_schema": {"name": "d", "schema": SCHEMA}},
    # the simulator answers prose first; the repair prompt gets schema-valid JSON
    "messages": [{"role": "user", "content": "Refund? [[sim:reply=Yes, refund it.]]"}],
}


async def _repair_call(tmp: Path, cap: float) -> tuple[int, Any, list[Any]]:
    tmp.mkdir()
    cfg = inproc_config(
        tmp,
        models={"gpt-4.1": {"deployments": [{"provider": "sim", "model": "gpt-4.1"}]}},
        features={"default": {"daily_budget_usd": cap, "safety": {"json_repair": True}}},
    )
    log: list[Any] = []
    state = RecordingState(MemoryCounterStore())
    state.log = log  # one log for budget operations and upstream requests, in order
    async with Gateway(cfg, state=state, simulator=LoggedSimulator(log)) as gw:  # type: ignore[arg-type]
        key = await make_key(gw)
        status, _, out = await asgi_call(gw, key, "/v1/chat/completions", REPAIR_BODY)
        u = await state.usage(feature_cap_key())
        assert u.reserved == 0.0
        assert u.settled <= cap
    return status, out, log


def _pairs(log: list[Any]) -> list[tuple[float, str, dict[str, Any]]]:
    """(reserved amount, model, body) of each upstream request, in order (no hedging here)."""
    held = [e[2] for e in log if e[0] == "reserve"]
    sends = [(e[1], e[2]) for e in log if e[0] == "send"]
    assert len(held) == len(sends), log
    return [(a, m, b) for a, (m, b) in zip(held, sends, strict=True)]


async def test_e_json_repair_is_reserved_and_refused_when_it_does_not_fit(tmp_path: Path) -> None:
    # room for everything: the repair is a second reserved request, at its own (longer) body
    status, out, log = await _repair_call(tmp_path / "roomy", 10.0)
    assert status == 200, out
    check_every_send_was_reserved(log)
    (w1, _, first), (w2, _, repair) = _pairs(log)
    assert "JSON schema" in repair["messages"][-1]["content"]
    assert w1 == pytest.approx(worst_case(PRICES, "gpt-4.1", "sim", first), rel=1e-12)
    assert w2 == pytest.approx(worst_case(PRICES, "gpt-4.1", "sim", repair), rel=1e-12)
    assert w2 > w1  # the repair carries the first answer and the errors

    # room for one worst case, not two: the first attempt still holds its reservation when
    # the repair asks for its own, so the repair must be refused, not sent unreserved
    cap = w1 + w2 / 2
    status, out, log = await _repair_call(tmp_path / "tight", cap)
    check_every_send_was_reserved(log)
    assert [e[0] for e in log] == ["reserve", "send", "refused", "settle"], log
    assert log[2][2] == pytest.approx(w2, rel=1e-12)  # the refused one was the repair
    # the first answer was paid for: the caller gets it as it came, not a refusal
    assert status == 200, out
    assert out["choices"][0]["message"]["content"] == "Yes, refund it."
    settled = log[3][2]
    assert 0 < settled <= cap


# -- f. failover, hedge and continuation: each attempt at its own model's price -------------

PAIR_MODELS = ("claude-sonnet-5", "claude-haiku-5-5")  # $2/$10 and $0.1/$0.5 per million


def _pair_config(tmp: Path, first_headers: dict[str, str], **sections: Any) -> Any:
    return inproc_config(
        tmp,
        models={
            "pair": {
                "deployments": [
                    {"provider": "sim", "model": PAIR_MODELS[0], "headers": first_headers},
                    {"provider": "sim", "model": PAIR_MODELS[1]},
                ]
            }
        },
        cost={"caps": {"global_daily_usd": 10.0}},
        reliability={"retry": {"attempts_per_deployment": 1}, "breaker": {"enabled": False}},
        **sections,
    )


def _check_own_prices(log: list[Any]) -> dict[str, tuple[str, float]]:
    """Each reservation matches its own request's model and body; returns id -> (model, held)."""
    check_every_send_was_reserved(log)
    reserves = [e for e in log if e[0] == "reserve"]
    sends = [e for e in log if e[0] == "send"]
    assert len(reserves) == len(sends) >= 2, log
    held: dict[str, tuple[str, float]] = {}
    for (_, rid, amount), (_, model, body) in zip(reserves, sends, strict=True):
        assert amount == pytest.approx(worst_case(PRICES, model, "sim", body), rel=1e-12), (
            f"attempt at {model} reserved {amount}, not its own worst case"
        )
        held[rid] = (model, amount)
    prices = {m: worst_case(PRICES, m, "sim", b) for _, m, b in sends}
    assert prices[PAIR_MODELS[0]] > 10 * prices[PAIR_MODELS[1]]  # distinct, so a mix-up shows
    return held


async def _finished(gw: Gateway) -> Any:
    await gw.recorder.flush()
    (rec,) = await gw.store.recent_calls(1)
    return rec


async def test_f_failover_attempt_is_reserved_and_settled_at_its_own_price(
    tmp_path: Path,
) -> None:
    cfg = _pair_config(tmp_path, {"x-sim-fault": "status:500"})
    log: list[Any] = []
    state = RecordingState(MemoryCounterStore())
    state.log = log
    async with Gateway(cfg, state=state, simulator=LoggedSimulator(log)) as gw:  # type: ignore[arg-type]
        key = await make_key(gw)
        status, headers, out = await asgi_call(
            gw, key, "/v1/messages", {"model": "pair", "max_tokens": 1000, "messages": MSG}
        )
        assert status == 200, out
        assert headers["x-bastion-attempts"] == "2"
        rec = await _finished(gw)
    held = _check_own_prices(log)
    [(failed, _), (served, _)] = [(rid, m) for rid, (m, _) in held.items()]
    assert [held[failed][0], held[served][0]] == list(PAIR_MODELS)
    ends = {e[1]: e for e in log if e[0] in ("settle", "release")}
    assert ends[failed][0] == "release"  # an error answer is not billed
    u = out["usage"]
    haiku = PRICES.for_deployment(PAIR_MODELS[1], "sim")
    assert haiku is not None
    own = haiku.cost(
        CallUsage(
            input_tokens=u["input_tokens"],
            output_tokens=u["output_tokens"],
            cache_read_tokens=u.get("cache_read_input_tokens") or 0,
            cache_write_tokens=u.get("cache_creation_input_tokens") or 0,
        )
    )
    assert ends[served] == ("settle", served, pytest.approx(own, rel=1e-12))
    assert rec.cost_usd == pytest.approx(own, rel=1e-12)


async def test_f_hedge_loser_is_reserved_and_settled_at_its_own_price(tmp_path: Path) -> None:
    # the first deployment answers after 1 s, so the hedge (after 50 ms) wins and it is cut off
    cfg = _pair_config(
        tmp_path, {"x-sim-ttft-ms": "1000"}, features={"default": {"hedge_delay": 0.05}}
    )
    log: list[Any] = []
    state = RecordingState(MemoryCounterStore())
    state.log = log
    async with Gateway(cfg, state=state, simulator=LoggedSimulator(log)) as gw:  # type: ignore[arg-type]
        key = await make_key(gw)
        status, _, out = await asgi_call(
            gw, key, "/v1/messages", {"model": "pair", "max_tokens": 1000, "messages": MSG}
        )
        assert status == 200, out
        rec = await _finished(gw)
    assert rec.flags.get("hedged") is True
    held = _check_own_prices(log)
    ends = {e[1]: e for e in log if e[0] in ("settle", "release")}
    assert set(ends) == set(held), "every hedged attempt is settled or released"
    for rid, (model, amount) in held.items():
        kind, _, actual = ends[rid]
        if model == PAIR_MODELS[0]:
            # cancelled mid-request: it may have been billed in full, so it costs its own hold
            assert (kind, actual) == ("settle", pytest.approx(amount, rel=1e-12))
        else:
            assert kind == "settle" and 0 < actual < amount
    total = sum(e[2] for e in ends.values() if e[0] == "settle")
    assert rec.cost_usd == pytest.approx(total, rel=1e-12)


async def test_f_continuation_is_reserved_at_its_own_price(tmp_path: Path) -> None:
    # the first deployment's stream is cut after 8 chunks; the fallback carries the answer on
    cfg = _pair_config(tmp_path, {"x-sim-fault": "cut_after:8", "x-sim-reply-tokens": "20"})
    log: list[Any] = []
    state = RecordingState(MemoryCounterStore())
    state.log = log
    async with Gateway(cfg, state=state, simulator=LoggedSimulator(log)) as gw:  # type: ignore[arg-type]
        raw = json.dumps(
            {"model": "pair", "max_tokens": 1000, "stream": True, "messages": MSG}
        ).encode()
        reply = await gw.handle(Format.ANTHROPIC, raw, {}, principal=PRINCIPAL)
        assert reply.status == 200 and reply.stream is not None
        got = b"".join([chunk async for chunk in reply.stream])
        assert b"message_stop" in got
        rec = await _finished(gw)
    held = _check_own_prices(log)
    sends = [e for e in log if e[0] == "send"]
    assert [s[1] for s in sends] == list(PAIR_MODELS)
    assert sends[1][2]["messages"][-1]["role"] == "assistant"  # the prefill: a continuation
    ends = {e[1]: e for e in log if e[0] in ("settle", "release")}
    assert set(ends) == set(held)
    for rid, (_, amount) in held.items():
        if ends[rid][0] == "settle":
            assert ends[rid][2] <= amount * (1 + 1e-12)
    total = sum(e[2] for e in ends.values() if e[0] == "settle")
    assert rec.cost_usd == pytest.approx(total, rel=1e-12)

"""A stream dropped before the provider's usage event never spends past a cap nor records 0 tokens.

A real `bastion serve` in front of a `bastion sim` process, the official OpenAI and Anthropic
SDKs, a per-end-user daily spend cap in Redis (read back from the counter store). A client
that closes the stream after its first chunks, or an upstream that cuts it, leaves the
attempt's usage unknown: the cap is settled at the attempt's reservation (its worst case,
never less than what the provider could bill), and the record carries a conservative
estimate flagged ``usage_estimated`` (the admission bound of the input, the relayed output's
byte count) instead of 0 input tokens; the tokens-per-minute limit is charged with it too.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import anthropic
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.conftest import BIN, RunningGateway, start_gateway, stop, write_config
from tests.cost._cost_support import SHARED_REDIS, delete_prefix, sim_process, unique_prefix

from bastion.clock import DayClock
from bastion.state import open_state
from bastion.store import open_store
from bastion.store.models import CallRecord

P_IN, P_OUT = 10.0, 1000.0  # USD per million tokens
PRICE = {"input": P_IN, "output": P_OUT, "cache_write": P_IN, "cache_read": P_IN}
CAP = 0.1  # per end user and day: a few dropped streams' worth
TPM = 2000  # tokens per minute per end user
MAX_TOKENS = 24
PACED = {"x-sim-chunk-ms": "25"}
CUT_UP = {**PACED, "x-sim-fault": "cut_after:5"}
REPLIES = (
    "alpha beta gamma delta epsilon zeta eta theta iota kappa",
    "a a a a a a a a a a a a",
    "日本 語の 文章 です ね 本当 に 長い 文 で す",
)
WIRES = ("an", "oa")


def _dep(provider: str, model: str, headers: dict[str, str]) -> dict[str, Any]:
    return {"deployments": [{"provider": provider, "model": model, "headers": headers}]}


@dataclass
class Setup:
    gw: RunningGateway
    sim_url: str
    prefix: str
    key: str
    key_id: str
    clean: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("cutspend")
    prefix = unique_prefix()
    with sim_process() as sim_url:
        cfg = write_config(
            tmp,
            providers={
                "an": {"kind": "anthropic", "base_url": sim_url},
                "oa": {"kind": "openai", "base_url": sim_url + "/v1"},
            },
            models={
                "cut-an": _dep("an", "cut-claude", PACED),
                "cut-oa": _dep("oa", "cut-gpt", PACED),
                "cut-an-up": _dep("an", "cut-claude", CUT_UP),
                "cut-oa-up": _dep("oa", "cut-gpt", CUT_UP),
            },
            state={"url": SHARED_REDIS, "prefix": prefix},
            cost={
                "prices": {"cut-claude": PRICE, "cut-gpt": PRICE},
                "caps": {"per_user_daily_usd": CAP, "end_user_caps": True},
                "rate_limits": {"per_user": {"tokens_per_minute": TPM}},
            },
            reliability={"retry": {"attempts_per_deployment": 1}, "breaker": {"enabled": False}},
        )
        gw = start_gateway(cfg)
        try:
            made = subprocess.run(
                [str(BIN / "bastion"), "keys", "create", "--name", "cutter", "--roles",
                 "end_users", "--config", str(cfg)],
                capture_output=True, text=True, timeout=60, check=True,
            )  # fmt: skip
            fields = dict(
                ln.split(":", 1)
                for ln in made.stdout.splitlines()
                if ln[:7] in ("id:    ", "secret:")
            )
            s = Setup(gw, sim_url, prefix, fields["secret"].strip(), fields["id"].strip())
            # what a clean finish of each prompt costs, learned once from whole streams
            for wire in WIRES:
                for i in range(len(REPLIES)):
                    got = _stream(s, wire, i, f"clean-{uuid.uuid4().hex[:8]}")
                    assert got.usage is not None and got.usage[1] == len(got.deltas), got
                    s.clean[wire, i] = got.usage
            yield s
        finally:
            stop(gw.proc)
            delete_prefix(prefix)


def _prompt(i: int, pad: int = 0) -> str:
    return "x" * pad + f"Say this. [[sim:reply={REPLIES[i]}]]"


@dataclass
class Outcome:
    deltas: list[str]
    usage: tuple[int, int] | None  # (input, output) the provider reported, if it came
    refused: str | None  # the 429's message, if the call was refused
    request_id: str | None
    broke: bool = False  # the stream ended with an error event (an upstream cut)


def _stream(
    s: Setup,
    wire: str,
    reply: int,
    user: str,
    *,
    k: int | None = None,
    up_cut: bool = False,
    pad: int = 0,
) -> Outcome:
    """One streamed call through the SDK; ``k``: close after that many text deltas."""
    model = f"cut-{wire}{'-up' if up_cut else ''}"
    hs = {"x-bastion-user": user}
    msgs = [{"role": "user", "content": _prompt(reply, pad)}]
    deltas: list[str] = []
    if wire == "oa":
        oc = openai.OpenAI(
            base_url=s.gw.url + "/v1", api_key=s.key, max_retries=0, default_headers=hs
        )
        try:
            ostream = oc.chat.completions.create(
                model=model, max_tokens=MAX_TOKENS, messages=msgs,  # type: ignore[arg-type]
                stream=True, stream_options={"include_usage": True},
            )  # fmt: skip
        except openai.RateLimitError as exc:
            return Outcome([], None, exc.message, None)
        out = Outcome(deltas, None, None, ostream.response.headers.get("x-request-id"))
        try:
            for chunk in ostream:
                if chunk.usage is not None:
                    out.usage = (chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                deltas += [c.delta.content for c in chunk.choices if c.delta.content]
                if k is not None and len(deltas) >= k:
                    break
        except openai.APIError:
            out.broke = True
        finally:
            ostream.close()
        return out
    ac = anthropic.Anthropic(base_url=s.gw.url, api_key=s.key, max_retries=0, default_headers=hs)
    try:
        astream = ac.messages.create(
            model=model,
            max_tokens=MAX_TOKENS,
            messages=msgs,
            stream=True,  # type: ignore[arg-type]
        )
    except anthropic.RateLimitError as exc:
        return Outcome([], None, exc.message, None)
    out = Outcome(deltas, None, None, astream.response.headers.get("x-request-id"))
    inp = None
    try:
        for ev in astream:
            if ev.type == "message_start":
                inp = ev.message.usage.input_tokens
            elif ev.type == "content_block_delta" and ev.delta.type == "text_delta":
                deltas.append(ev.delta.text)
            elif ev.type == "message_delta" and inp is not None:
                out.usage = (inp, ev.usage.output_tokens)
            if k is not None and len(deltas) >= k:
                break
    except anthropic.APIError:
        out.broke = True
    finally:
        astream.close()
    return out


def _cap_key(s: Setup, user: str) -> str:
    return f"spend:{DayClock().day()}:user:key:{s.key_id}/{user}"


def _cap(s: Setup, user: str) -> tuple[float, float]:
    """(settled, reserved) on the user's cap, read from the counter store."""

    async def read() -> tuple[float, float]:
        state = open_state(SHARED_REDIS, prefix=s.prefix)
        try:
            u = await state.usage(_cap_key(s, user))
            return u.settled, u.reserved
        finally:
            await state.close()

    return asyncio.run(read())


def _settled_after(s: Setup, user: str, before: float) -> float:
    """The cap's settled spend once the call's hold is gone (settled at the call's end)."""
    deadline = time.monotonic() + 10
    while True:
        settled, reserved = _cap(s, user)
        if reserved == 0 and settled > before:
            return settled
        assert time.monotonic() < deadline, (settled, reserved, before)
        time.sleep(0.05)


def _record(s: Setup, request_id: str) -> CallRecord:
    url = f"sqlite:///{s.gw.config_path.parent / 'bastion.db'}"

    async def find() -> CallRecord | None:
        async with open_store(url) as store:
            recs = await store.recent_calls(2000)
        return next((r for r in recs if r.request_id == request_id), None)

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rec = asyncio.run(find())
        if rec is not None:
            return rec
        time.sleep(0.1)
    raise AssertionError(f"no record for {request_id}")


def _cost(inp: int, out: int) -> float:
    return (inp * P_IN + out * P_OUT) / 1e6


def _upstream_posts(s: Setup) -> int:
    import json
    import urllib.request

    with urllib.request.urlopen(s.sim_url + "/_sim/requests", timeout=10) as r:
        return sum(1 for x in json.loads(r.read()) if x["method"] == "POST")


# -- (a) a client that closes the stream after its first chunks ----------------------------


@pytest.mark.parametrize("wire", WIRES)
def test_a_stream_dropped_after_its_first_chunks_is_settled_and_recorded_conservatively(
    setup: Setup, wire: str
) -> None:
    user = f"drop-{uuid.uuid4().hex[:8]}"
    clean_in, clean_out = setup.clean[wire, 0]
    got = _stream(setup, wire, 0, user, k=2)
    assert got.refused is None and got.request_id is not None and got.usage is None
    settled = _settled_after(setup, user, 0.0)
    rec = _record(setup, got.request_id)
    assert rec.flags.get("client_disconnected") is True
    assert rec.flags.get("usage_estimated") is True, rec.flags
    # the record's tokens: never below what the provider counts for the same request and text
    assert rec.input_tokens >= clean_in, (rec.input_tokens, clean_in)
    relayed = "".join(got.deltas)
    assert rec.output_tokens >= len(relayed.encode()) >= len(got.deltas)
    # the cap: at least the estimate, and at least the whole clean answer's cost
    assert settled == pytest.approx(rec.cost_usd, rel=1e-9)
    assert settled >= _cost(rec.input_tokens, rec.output_tokens) * (1 - 1e-9)
    assert settled >= _cost(clean_in, clean_out)


@pytest.mark.parametrize("wire", WIRES)
def test_a_stream_cut_upstream_is_settled_at_its_hold_and_recorded_as_estimated(
    setup: Setup, wire: str
) -> None:
    user = f"upcut-{uuid.uuid4().hex[:8]}"
    got = _stream(setup, wire, 0, user, up_cut=True)
    assert got.broke and got.request_id is not None and got.usage is None
    settled = _settled_after(setup, user, 0.0)
    rec = _record(setup, got.request_id)
    assert rec.flags.get("usage_estimated") is True and rec.flags.get("stream_error")
    assert rec.input_tokens >= setup.clean[wire, 0][0]
    assert settled >= _cost(rec.input_tokens, rec.output_tokens)
    assert settled >= _cost(*setup.clean[wire, 0])


def test_dropped_streams_are_charged_to_the_tokens_per_minute_limit(setup: Setup) -> None:
    """The tokens-per-minute limit is charged after the meter: a dropped OpenAI stream is
    charged its estimate (its input bound is over the 2000 limit), so the next call of that
    user is refused by the limit (the spend cap would still admit it). Charged with the
    output it relayed alone (the usage chunk never came), it would pass."""
    user = f"tpm-{uuid.uuid4().hex[:8]}"
    first = _stream(setup, "oa", 0, user, k=1, pad=2100)
    assert first.refused is None and first.request_id is not None
    _settled_after(setup, user, 0.0)
    rec = _record(setup, first.request_id)
    assert rec.flags.get("usage_estimated") is True and rec.input_tokens > TPM
    second = _stream(setup, "oa", 0, user, k=1, pad=2100)
    assert second.refused is not None and "tokens-per-minute" in second.refused, second


def test_admitted_calls_stop_at_the_cap_however_the_streams_end(setup: Setup) -> None:
    user = f"stop-{uuid.uuid4().hex[:8]}"
    admitted = 0
    refused: str | None = None
    for i in range(12):
        before = _cap(setup, user)[0]
        posts = _upstream_posts(setup)
        got = _stream(setup, WIRES[i % 2], 1, user, k=1)
        if got.refused is not None:
            refused = got.refused
            assert _upstream_posts(setup) == posts, "a refused call reached the provider"
            break
        admitted += 1
        _settled_after(setup, user, before)
    assert refused is not None and "spend cap" in refused, refused
    settled, reserved = _cap(setup, user)
    assert reserved == 0 and settled <= CAP
    assert 1 <= admitted <= 6


# -- (b) any mix of cut and whole streams under a small cap ----------------------------------

_FIG = re.compile(
    r"limit \$([0-9.]+), spent \$([0-9.]+), reserved \$([0-9.]+), this call needs up to \$([0-9.]+)"
)

op = st.tuples(
    st.sampled_from(WIRES),
    st.sampled_from(["whole", "client_cut", "upstream_cut"]),
    st.integers(1, 4),  # text deltas read before a client cut
    st.integers(0, len(REPLIES) - 1),
)


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(ops=st.lists(op, min_size=2, max_size=6))
def test_cut_and_whole_streams_never_settle_below_a_clean_finish_of_what_was_relayed(
    setup: Setup, ops: list[tuple[str, str, int, int]]
) -> None:
    user = f"mix-{uuid.uuid4().hex[:10]}"
    floor = 0.0  # what clean finishes of every admitted call's relayed text would have cost
    for wire, mode, k, reply in ops:
        before = _cap(setup, user)[0]
        posts = _upstream_posts(setup)
        got = _stream(
            setup,
            wire,
            reply,
            user,
            k=k if mode == "client_cut" else None,
            up_cut=mode == "upstream_cut",
        )
        if got.refused is not None:
            # refused only when this call's worst case no longer fits, and never sent upstream
            assert _upstream_posts(setup) == posts
            m = _FIG.search(got.refused)
            assert m is not None, got.refused
            limit, spent, held, needs = map(float, m.groups())
            assert limit == CAP and spent == pytest.approx(before, abs=1e-4) and held == 0
            assert spent + needs > limit - 1e-4
            continue
        after = _settled_after(setup, user, before)
        clean_in = setup.clean[wire, reply][0]
        relayed_cost = _cost(clean_in, len(got.deltas))
        assert after - before >= relayed_cost * (1 - 1e-9), (mode, after - before, relayed_cost)
        if got.usage is not None:  # finished: settled at exactly what the provider reported
            assert after - before == pytest.approx(_cost(*got.usage), rel=1e-6)
        floor += relayed_cost
        assert after >= floor * (1 - 1e-9)
        assert after <= CAP + 1e-9

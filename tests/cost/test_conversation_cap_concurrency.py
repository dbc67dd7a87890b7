"""The conversation token cap under concurrency and across keys, through ``Gateway.handle``.

Ten calls at once against a cap of 300 used 2,030 tokens when the cap was only read before
each call; the counter was also shared by every key that sent the same conversation id. The
cap is now reserved at each call's worst case and settled to its real usage, per key.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from _cost_support import inproc_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.call import Principal
from bastion.cost.token_caps import conversation_key
from bastion.cost.tokens import input_upper_bound
from bastion.engine import Reply
from bastion.errors import InputTooLarge
from bastion.gateway import Gateway
from bastion.providers.base import Format
from bastion.providers.sim import Simulator

CAP = 300
A = Principal(key_id="k-conv-a", name="a")
B = Principal(key_id="k-conv-b", name="b")
AV = {"anthropic-version": "2023-06-01"}


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[Gateway]:
    cfg = inproc_config(tmp_path, features={"default": {"conversation_max_tokens": CAP}})
    # a first token after 30 ms keeps every call of a batch in flight at the same time
    async with Gateway(cfg, simulator=Simulator(ttft_ms=30.0, chunk_ms=1.0)) as g:
        yield g


def _body(max_tokens: int, *, stream: bool = False, text: str = "hello") -> bytes:
    return orjson.dumps(
        {
            "model": "claude-sonnet-5",
            "max_tokens": max_tokens,
            "stream": stream,
            "messages": [{"role": "user", "content": text}],
        }
    )


async def _call(
    gw: Gateway, who: Principal, conv: str, max_tokens: int, *, stream: bool = False
) -> int | InputTooLarge:
    """One call; the tokens it used, or the refusal."""
    try:
        reply: Reply = await gw.handle(
            Format.ANTHROPIC,
            _body(max_tokens, stream=stream),
            {**AV, "x-bastion-conversation": conv},
            principal=who,
        )
    except InputTooLarge as exc:
        return exc
    if reply.stream is not None:
        async for _ in reply.stream:
            pass
    assert reply.call is not None and reply.status == 200
    u = reply.call.usage
    return u.input_tokens + u.output_tokens + u.cache_read_tokens + u.cache_write_tokens


async def test_ten_concurrent_calls_never_pass_a_cap_of_300(gw: Gateway) -> None:
    conv = "conv-" + uuid.uuid4().hex
    results = await asyncio.gather(*(_call(gw, A, conv, 10) for _ in range(10)))
    used = [r for r in results if isinstance(r, int)]
    refused = [r for r in results if isinstance(r, InputTooLarge)]
    assert used, "the cap should let at least one call through"
    assert refused, "ten worst cases cannot all fit in 300 tokens at once"
    assert sum(used) <= CAP, f"{len(used)} calls used {sum(used)} tokens, over the cap of {CAP}"
    assert gw.simulator.request_count() == len(used), "a refused call went upstream"
    # every reservation was settled to the real usage: nothing is left held
    assert await gw.state.get(conversation_key(A.key_id, conv)) == sum(used)


async def test_streamed_calls_are_reserved_and_settled_too(gw: Gateway) -> None:
    conv = "conv-" + uuid.uuid4().hex
    results = await asyncio.gather(*(_call(gw, A, conv, 10, stream=True) for _ in range(10)))
    used = [r for r in results if isinstance(r, int)]
    assert used and sum(used) <= CAP
    assert await gw.state.get(conversation_key(A.key_id, conv)) == sum(used)


async def test_another_key_reusing_the_conversation_id_is_unaffected(gw: Gateway) -> None:
    conv = "shared-ticket-42"
    spent = 0
    while not isinstance(r := await _call(gw, A, conv, 10), InputTooLarge):
        spent += r
    assert spent > 0
    # key A's conversation is full; key B's conversation of the same id is its own
    b = await _call(gw, B, conv, 10)
    assert isinstance(b, int), b
    assert await gw.state.get(conversation_key(B.key_id, conv)) == b
    assert await gw.state.get(conversation_key(A.key_id, conv)) == spent
    # and when B is refused it is told only its own usage, never A's
    while not isinstance(r := await _call(gw, B, conv, 10), InputTooLarge):
        b += r
    assert f"used or reserved {b} of its {CAP}" in r.message or "used its cap" in r.message


async def test_the_client_conversation_id_never_shapes_the_state_key(gw: Gateway) -> None:
    odd = "\x00conv:\n" + "é" * 5000
    assert isinstance(await _call(gw, A, odd, 10), int)
    key = conversation_key(A.key_id, odd)
    assert key.startswith(f"conv:{A.key_id}:") and len(key) < 80 and "\n" not in key
    assert await gw.state.get(key) > 0


# -- property: random concurrent calls, random conversation ids, two keys -------------------

call_st = st.tuples(
    st.sampled_from([A, B]),
    st.sampled_from(["c0", "c1", "c2", "", "c0\n", "ü" * 40]),
    st.integers(1, 60),
    st.booleans(),
)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(batches=st.lists(st.lists(call_st, min_size=1, max_size=6), min_size=1, max_size=4))
async def test_random_concurrent_calls_across_two_keys_never_pass_a_cap(
    gw: Gateway, batches: list[list[tuple[Principal, str, int, bool]]]
) -> None:
    run = uuid.uuid4().hex  # each example gets its own conversations on the shared gateway
    spent: defaultdict[tuple[str, str], int] = defaultdict(int)
    for batch in batches:
        results = await asyncio.gather(
            *(_call(gw, who, run + conv, mt, stream=s) for who, conv, mt, s in batch)
        )
        # the most a key's own counter could have held during this batch
        ceiling = dict(spent)
        for who, conv, mt, s in batch:
            k = (who.key_id, run + conv)
            ceiling[k] = ceiling.get(k, 0) + _need(mt, s)
        for (who, conv, _, _), r in zip(batch, results, strict=True):
            k = (who.key_id, run + conv)
            if isinstance(r, int):
                spent[k] += r
                continue
            # a refusal quotes the caller's own counter, never the other key's
            m = re.search(r"used or reserved (\d+) of", r.message)
            quoted = int(m.group(1)) if m else CAP
            assert quoted <= min(ceiling[k], CAP), (quoted, ceiling[k], r.message)
        # after each batch: every key's conversation holds exactly what it used, within the cap
        for who in (A, B):
            for conv in {c for _, c, _, _ in batch}:
                counted = await gw.state.get(conversation_key(who.key_id, run + conv))
                assert counted == spent[(who.key_id, run + conv)]
                assert counted <= CAP


def _need(max_tokens: int, stream: bool) -> int:
    raw = _body(max_tokens, stream=stream)
    return input_upper_bound(orjson.loads(raw), len(raw)) + max_tokens

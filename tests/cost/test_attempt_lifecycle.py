"""Every upstream request is an attempt: reserved before it is sent at the worst case of what
actually goes upstream, settled at its own cost; the phase order is data; a settle that cannot
land is journaled and lands later, once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from _cost_support import PRINCIPAL, RecordingState, inproc_config
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.cost.journal import SettleJournal
from bastion.cost.tokens import LIMIT_FIELDS, OUTPUT_CEILING, output_upper_bound
from bastion.errors import BudgetExceeded, InvalidRequest, StateUnavailable
from bastion.gateway import Gateway
from bastion.pipeline import Pipeline
from bastion.providers.base import Format
from bastion.state import Cap, MemoryCounterStore

MSG = [{"role": "user", "content": "hello"}]


def test_the_guard_order_is_declared_data(tmp_path: Path) -> None:
    cfg = inproc_config(
        tmp_path,
        cost={
            "caps": {"global_daily_usd": 1.0},
            "rate_limits": {"per_key": {"requests_per_minute": 1000}},
        },
    )
    gw = Gateway(cfg)
    order = gw.pipeline.order
    assert order["attempt"] == ("budget",)
    admit = order["admit"]
    # refusals that need no counter run before those that spend counters; budget fixes caps last
    assert admit.index("kill_switch") < admit.index("max_tokens") < admit.index("budget")
    assert admit.index("rate_limit") < admit.index("budget")
    # settle runs in reverse: the cost is priced before the budget settles and before the record
    settle = order["settle"]
    assert settle.index("cost") < settle.index("budget") < settle.index("record")


def test_a_guard_with_no_phase_is_a_type_error_not_a_silent_drop() -> None:
    class Misspelt:
        name = "typo"

        async def befor(self, call: object) -> None: ...

    with pytest.raises(TypeError, match="implements no phase"):
        Pipeline([Misspelt()])


@settings(max_examples=300, deadline=None)
@given(
    fields=st.dictionaries(
        st.sampled_from(LIMIT_FIELDS), st.integers(min_value=1, max_value=10**6), max_size=3
    ),
    n=st.one_of(st.none(), st.integers(min_value=-3, max_value=16)),
)
def test_the_output_bound_covers_whichever_limit_a_provider_honours(
    fields: dict[str, int], n: int | None
) -> None:
    body: dict[str, Any] = dict(fields)
    if n is not None:
        body["n"] = n
    bound = output_upper_bound(body)
    choices = n if n is not None and n > 1 else 1
    for v in fields.values():
        assert bound >= v * choices
    if not fields:
        assert bound == OUTPUT_CEILING * choices


async def test_mismatched_limit_fields_are_each_clamped_and_reserved_at_the_largest(
    tmp_path: Path,
) -> None:
    cfg = inproc_config(
        tmp_path,
        cost={"caps": {"global_daily_usd": 1.0}},
        features={"default": {"max_tokens_limit": 2000}},
    )
    state = RecordingState(MemoryCounterStore())
    async with Gateway(cfg, state=state) as gw:  # type: ignore[arg-type]
        raw = json.dumps(
            {
                "model": "claude-sonnet-5",
                "max_tokens": 5,
                "max_completion_tokens": 3000,
                "messages": MSG,
            }
        ).encode()
        reply = await gw.handle(Format.OPENAI, raw, {}, principal=PRINCIPAL)
        assert reply.status == 200
        sent = gw.simulator.requests[-1].body
        assert sent["max_completion_tokens"] == 2000 and sent["max_tokens"] == 5
        (reserve,) = [e for e in state.log if e[0] == "reserve"]
        # claude-sonnet-5 is $10 per million output tokens: 2000 of them is $0.02 at least
        assert reserve[2] >= 2000 * 10 / 1e6

        bad = json.dumps(
            {"model": "claude-sonnet-5", "max_completion_tokens": "lots", "messages": MSG}
        ).encode()
        with pytest.raises(InvalidRequest):
            await gw.handle(Format.OPENAI, bad, {}, principal=PRINCIPAL)


async def test_n_choices_are_reserved_n_times(tmp_path: Path) -> None:
    # one 1000-token gpt-4.1 choice costs ~$0.008 at worst; the cap fits one, not five
    cfg = inproc_config(
        tmp_path,
        providers={"osim": {"kind": "openai", "base_url": "sim://local/v1"}},
        models={"gpt-4.1": {"deployments": [{"provider": "osim", "model": "gpt-4.1"}]}},
        cost={"caps": {"global_daily_usd": 0.03}},
    )
    async with Gateway(cfg) as gw:
        body = {"model": "gpt-4.1", "max_tokens": 1000, "messages": MSG}
        ok = await gw.handle(Format.OPENAI, json.dumps(body).encode(), {}, principal=PRINCIPAL)
        assert ok.status == 200
        with pytest.raises(BudgetExceeded):
            await gw.handle(
                Format.OPENAI, json.dumps({**body, "n": 5}).encode(), {}, principal=PRINCIPAL
            )
        assert len(gw.simulator.requests) == 1  # the refused call never went upstream


class _Flaky:
    """A counter store whose settles fail while ``down``."""

    def __init__(self, inner: MemoryCounterStore) -> None:
        self.inner = inner
        self.down = False

    async def settle(self, rid: str, actual: float) -> bool:
        if self.down:
            raise StateUnavailable("the counter store is unreachable")
        return await self.inner.settle(rid, actual)

    async def release(self, rid: str) -> bool:
        if self.down:
            raise StateUnavailable("the counter store is unreachable")
        return await self.inner.release(rid)

    async def admit(self, ops: Any) -> Any:
        return await self.inner.admit(ops)

    async def finish(self, ops: Any) -> Any:  # a call's settle batch (state_batch.py)
        if self.down:
            raise StateUnavailable("the counter store is unreachable")
        return await self.inner.finish(ops)


async def test_a_journaled_settle_survives_a_restart_and_lands_once(tmp_path: Path) -> None:
    inner = MemoryCounterStore()
    cap = Cap("spend:test", 1.0, 3600.0)
    assert (await inner.reserve("r1", [cap], 0.5, 60.0)).ok
    flaky = _Flaky(inner)
    flaky.down = True
    base = str(tmp_path / "journal")
    first = SettleJournal(base, retry_seconds=60.0)
    first.open()
    first.add(flaky, "r1", 0.25)  # type: ignore[arg-type]
    assert len(first) == 1
    # the process dies: its file is left behind, unlocked
    assert first._fh is not None
    first._fh.close()
    first._fh = None
    if first._task is not None:
        first._task.cancel()

    second = SettleJournal(base, retry_seconds=60.0)
    second.open()  # adopts the dead process's journal
    assert len(second) == 1
    flaky.down = False
    await second.drain(flaky)  # type: ignore[arg-type]
    await second.drain(flaky)  # type: ignore[arg-type]
    u = await inner.usage("spend:test")
    assert (u.settled, u.reserved) == (0.25, 0.0)
    assert not await inner.settle("r1", 0.25)  # idempotent per id: counted once
    await second.aclose(flaky)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def _failover_cfg(tmp: Path, **sections: Any) -> Any:
    return inproc_config(
        tmp,
        models={
            "fo": {
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
        **sections,
    )


async def test_a_failover_is_reserved_at_its_own_model_and_the_failed_hold_is_given_back(
    tmp_path: Path,
) -> None:
    # sonnet's worst case (~$0.0101 at max_tokens=1000) fits the cap once, never twice
    cfg = _failover_cfg(tmp_path, cost={"caps": {"global_daily_usd": 0.015}})
    state = RecordingState(MemoryCounterStore())
    async with Gateway(cfg, state=state) as gw:  # type: ignore[arg-type]
        raw = json.dumps({"model": "fo", "max_tokens": 1000, "messages": MSG}).encode()
        reply = await gw.handle(Format.ANTHROPIC, raw, {}, principal=PRINCIPAL)
        assert reply.status == 200 and reply.call is not None
        ops = [(op, amount) for op, _, amount in state.log]
        assert [op for op, _ in ops] == ["reserve", "release", "reserve", "settle"], ops
        sonnet = gw.prices.get("claude-sonnet-5")
        haiku = gw.prices.get("claude-haiku-5-5")
        assert sonnet is not None and haiku is not None
        # each attempt held its own model's worst case
        assert ops[0][1] is not None and ops[2][1] is not None
        assert ops[0][1] > ops[2][1]
        assert ops[2][1] == pytest.approx(ops[0][1] * haiku.output / sonnet.output, rel=0.05)
        # and the call cost what the answering model charged, nothing for the 500
        (_, served) = reply.call.attempts
        assert served.usage is not None
        assert reply.call.cost_usd == pytest.approx(haiku.cost(served.usage))
        u = await state.usage(f"spend:{gw.clock.day()}:global")
        assert u.reserved == 0 and u.settled == pytest.approx(reply.call.cost_usd)


async def test_a_failover_counts_once_on_the_conversation_cap(tmp_path: Path) -> None:
    cfg = _failover_cfg(tmp_path, features={"default": {"conversation_max_tokens": 1500}})
    async with Gateway(cfg) as gw:
        raw = json.dumps({"model": "fo", "max_tokens": 1000, "messages": MSG}).encode()
        conv = {"x-bastion-conversation": "c1"}
        reply = await gw.handle(Format.ANTHROPIC, raw, conv, principal=PRINCIPAL)
        assert reply.status == 200 and reply.call is not None
        (_, served) = reply.call.attempts
        assert served.usage is not None
        used = await gw.state.get(f"conv:{PRINCIPAL.key_id}:" + _conv_hash("c1"))
        assert used == served.usage.input_tokens + served.usage.output_tokens


def _conv_hash(conversation: str) -> str:
    from bastion.cost.token_caps import conversation_key

    return conversation_key("x", conversation).split(":", 2)[2]


async def test_n_choices_are_refused_where_a_deployment_would_answer_only_one(
    tmp_path: Path,
) -> None:
    async with Gateway(inproc_config(tmp_path)) as gw:
        raw = json.dumps(
            {"model": "claude-sonnet-5", "max_tokens": 10, "n": 2, "messages": MSG}
        ).encode()
        with pytest.raises(InvalidRequest, match="n: 2 choices"):
            await gw.handle(Format.OPENAI, raw, {}, principal=PRINCIPAL)
        assert gw.simulator.requests == []

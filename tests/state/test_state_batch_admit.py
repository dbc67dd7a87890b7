"""``admit`` is the one-by-one operations, all or nothing; ``finish`` applies each; no overshoot.

A stateful property (both backends): random admission batches of reservations on shared caps,
bounded counters, token buckets and breakers (some forced open) against a plain model of the
one-by-one semantics — stop at the first refusal, and then nothing at all is taken or held.
After every step the stores' caps, counters and buckets equal the model's, and no cap is ever
over its limit. Then concurrent batches on one Redis never overshoot a cap or a counter, and
a refused batch leaves every key of it as it was.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import redis
from _state_support import REDIS_URL, StateBackend
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from bastion.state import (
    BreakerDecision,
    BreakerPolicy,
    Cap,
    CounterStore,
    IncrResult,
    MemoryCounterStore,
    RedisCounterStore,
    ReserveResult,
    TakeResult,
)
from bastion.state.plan import (
    AdmitOp,
    AllowBreaker,
    Charge,
    Incr,
    RecordBreaker,
    Reserve,
    Settle,
    Take,
)

CAPS = {"g": 10.0, "u1": 4.0, "u2": 6.0}
COUNTERS = {"c1": 5.0, "c2": 8.0}
BURST = 6.0
RATE = 1e-9  # a bucket refills by nothing measurable within a test: the model needs no clock
POLICY = BreakerPolicy(failure_threshold=2, min_calls=1000, cooldown_seconds=3600.0)
BREAKERS = ("b-open", "b-closed")


def _cap(name: str) -> Cap:
    return Cap(f"spend:day:{name}", CAPS[name], 3600.0)


def _refused(answer: Any) -> bool:
    if isinstance(answer, TakeResult | BreakerDecision):
        return not answer.allowed
    assert isinstance(answer, IncrResult | ReserveResult)
    return not answer.ok


class Model:
    """The one-by-one semantics, with nothing written when any operation refuses."""

    def __init__(self) -> None:
        self.held = dict.fromkeys(CAPS, 0.0)
        self.counters = dict.fromkeys(COUNTERS, 0.0)
        self.tokens: dict[str, float] = {}
        self.reservations: dict[str, tuple[tuple[str, ...], float]] = {}

    def admit(self, ops: list[tuple[str, Any]]) -> int | None:
        """The index of the first refusing operation (and nothing applied), or None."""
        for i, (kind, arg) in enumerate(ops):
            if kind == "take" and self.tokens.get(arg[0], BURST) < arg[1]:
                return i
            if kind == "incr" and self.counters[arg[0]] + arg[1] > COUNTERS[arg[0]]:
                return i
            if kind == "breaker" and arg == "b-open":
                return i
            if kind == "reserve":
                rid, names, amount = arg
                if any(self.held[n] + amount > CAPS[n] for n in names):
                    return i
        for kind, arg in ops:
            if kind == "take":
                self.tokens[arg[0]] = self.tokens.get(arg[0], BURST) - arg[1]
            elif kind == "incr":
                self.counters[arg[0]] += arg[1]
            elif kind == "reserve":
                rid, names, amount = arg
                self.reservations[rid] = (names, amount)
                for n in names:
                    self.held[n] += amount
        return None


class BatchMachine(RuleBasedStateMachine):
    backend = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.prefix = f"bastion-test-{uuid.uuid4().hex[:12]}"
        self.store: CounterStore = (
            MemoryCounterStore(clock=lambda: 1_000_000.0)
            if self.backend == "memory"
            else RedisCounterStore(REDIS_URL, prefix=self.prefix)
        )
        self.model = Model()
        self.n = 0
        for _ in range(POLICY.failure_threshold):
            self.run(self.store.breaker_record("b-open", False, POLICY))

    def run(self, aw: Any) -> Any:
        return self.loop.run_until_complete(aw)

    def teardown(self) -> None:
        self.run(self.store.close())
        self.loop.close()
        if self.backend == "redis":
            client = redis.Redis.from_url(REDIS_URL)
            keys = list(client.scan_iter(match=f"{self.prefix}:*", count=1000))
            if keys:
                client.delete(*keys)
            client.close()

    @rule(
        picks=st.lists(
            st.one_of(
                st.tuples(st.just("take"), st.sampled_from(["t1", "t2"]), st.integers(0, 3)),
                st.tuples(st.just("incr"), st.sampled_from(list(COUNTERS)), st.integers(0, 3)),
                st.tuples(st.just("breaker"), st.sampled_from(BREAKERS), st.just(0)),
                st.tuples(
                    st.just("reserve"),
                    st.sets(st.sampled_from(list(CAPS)), min_size=1).map(sorted),
                    st.integers(0, 3),
                ),
            ),
            min_size=1,
            max_size=5,
        )
    )
    def admit(self, picks: list[tuple[str, Any, int]]) -> None:
        ops: list[AdmitOp] = []
        modelled: list[tuple[str, Any]] = []
        seen: set[str] = set()
        for kind, what, amount in picks:
            if kind == "reserve":
                self.n += 1
                rid = f"r{self.n}"
                ops.append(Reserve(rid, tuple(_cap(n) for n in what), float(amount), 3600.0))
                modelled.append(("reserve", (rid, tuple(what), float(amount))))
                continue
            if what in seen:  # one plan touches each key once (else it is a ValueError)
                continue
            seen.add(what)
            if kind == "take":
                ops.append(Take(what, RATE, BURST, float(amount)))
                modelled.append(("take", (what, float(amount))))
            elif kind == "incr":
                ops.append(Incr(what, float(amount), 3600.0, COUNTERS[what]))
                modelled.append(("incr", (what, float(amount))))
            else:
                ops.append(AllowBreaker(what, POLICY))
                modelled.append(("breaker", what))
        if any(isinstance(o, Reserve) for o in ops[:-1]) and len(
            {c.key for o in ops if isinstance(o, Reserve) for c in o.caps}
        ) < sum(len(o.caps) for o in ops if isinstance(o, Reserve)):
            with pytest.raises(ValueError):  # two reservations on one cap in one plan
                self.run(self.store.admit(ops))
            return
        expected = self.model.admit(modelled)
        res = self.run(self.store.admit(ops))
        assert res.refused == expected, (ops, res)
        assert len(res.results) == (len(ops) if expected is None else expected + 1)
        for i, answer in enumerate(res.results):
            assert _refused(answer) == (i == expected), (i, answer)

    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        """Settle (at most what was held, so the caps stay exact) or release some reservations,
        with a charge, a counter give-back and a breaker outcome in the same batch."""
        if not self.model.reservations:
            return
        rids = data.draw(st.sets(st.sampled_from(sorted(self.model.reservations)), min_size=1))
        ops: list[Any] = []
        for rid in sorted(rids):
            names, amount = self.model.reservations.pop(rid)
            actual = data.draw(st.sampled_from([None, 0.0, amount / 2, amount]))
            ops.append(Settle(rid, tuple(_cap(n) for n in names), actual))
            for n in names:
                self.model.held[n] -= amount - (actual or 0.0)
                # the settled part stays counted: held now means settled + live holds
        ops.append(Charge("t1", RATE, BURST, 1.0))
        self.model.tokens["t1"] = min(BURST, self.model.tokens.get("t1", BURST) - 1.0)
        if self.model.counters["c1"] >= 1:
            ops.append(Incr("c1", -1.0, 3600.0))
            self.model.counters["c1"] -= 1
        ops.append(RecordBreaker("b-closed", True, POLICY))
        answers = self.run(self.store.finish(ops))
        assert answers[: len(rids)] == (True,) * len(rids)

    @invariant()
    def same_as_the_model_and_no_overshoot(self) -> None:
        for name, limit in CAPS.items():
            usage = self.run(self.store.usage(_cap(name).key))
            assert usage.total == pytest.approx(self.model.held[name], abs=1e-9)
            assert usage.total <= limit + 1e-9
        for name, limit in COUNTERS.items():
            value = self.run(self.store.get(name))
            assert value == self.model.counters[name]
            assert value <= limit
        for name, tokens in self.model.tokens.items():
            remaining = self.run(self.store.take(name, RATE, BURST, 0.0)).remaining
            assert remaining == pytest.approx(tokens, abs=1e-3)


_SETTINGS = settings(
    max_examples=40,
    stateful_step_count=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class MemoryBatch(BatchMachine):
    backend = "memory"


class RedisBatch(BatchMachine):
    backend = "redis"


TestMemoryBatch = _SETTINGS(MemoryBatch).TestCase
TestRedisBatch = _SETTINGS(RedisBatch).TestCase


async def test_concurrent_batches_never_overshoot_a_cap_or_a_counter(
    state_backend: StateBackend,
) -> None:
    """Many replicas' worth of batches at once (four clients of one Redis or Cluster; one
    memory store): exactly as many fit as the tighter limit lets, and each batch is all or
    nothing (a counter counts exactly the batches whose hold landed)."""
    first = state_backend.open()
    shared = state_backend.kind == "redis"
    stores = [first, *(state_backend.open() if shared else first for _ in range(3))]
    cap = Cap("spend:day:global", 10.0, 3600.0)

    def plan(i: int) -> list[AdmitOp]:
        return [Incr("calls", 1.0, 3600.0, 30.0), Reserve(f"r{i}", (cap,), 0.5, 3600.0)]

    results = await asyncio.gather(*(stores[i % 4].admit(plan(i)) for i in range(80)))
    admitted = sum(r.ok for r in results)
    assert admitted == 20  # the cap (10 / 0.5) binds before the counter (30)
    assert all(r.refused == 1 for r in results if not r.ok)  # the cap refused, not the counter
    assert (await stores[0].get("calls")) == admitted  # refused batches counted nothing
    assert (await stores[0].usage(cap.key)).reserved == pytest.approx(10.0)
    for opened in state_backend.opened:
        await opened.close()


async def test_a_refused_batch_changes_nothing(store: CounterStore) -> None:
    """A bucket, a counter and a probe of a half-open breaker before a refusing reservation:
    the refusal leaves the tokens, the count and the probe where they were."""
    policy = BreakerPolicy(failure_threshold=1, min_calls=1000, cooldown_seconds=0.001)
    await store.breaker_record("b", False, policy)
    await asyncio.sleep(0.01)  # its cooldown is over: the next allow would take the probe
    cap = Cap("spend:day:tiny", 1.0, 3600.0)
    ops: list[AdmitOp] = [
        Take("bucket", 1.0, 5.0, 2.0),
        Incr("count", 1.0, 3600.0, 10.0),
        AllowBreaker("b", policy),
        Reserve("big", (cap,), 2.0, 60.0),
    ]
    res = await store.admit(ops)
    assert res.refused == 3 and not res.ok
    assert isinstance(res.results[2], BreakerDecision) and res.results[2].probe
    assert (await store.take("bucket", 1.0, 5.0, 0.0)).remaining == pytest.approx(5.0)
    assert await store.get("count") == 0.0
    assert (await store.usage(cap.key)).total == 0.0
    probe = await store.breaker_allow("b", policy)  # the probe is still there to be taken
    assert probe.allowed and probe.probe


async def test_plans_that_touch_a_key_twice_are_refused_before_the_store(
    store: CounterStore,
) -> None:
    with pytest.raises(ValueError, match="same key"):
        await store.admit([Take("k", 1.0, 1.0), Take("k", 1.0, 1.0)])
    with pytest.raises(ValueError, match="no limit"):
        await store.finish([Incr("k", 1.0, 60.0, 5.0)])


async def test_a_settle_naming_other_caps_changes_nothing(redis_store: CounterStore) -> None:
    """The script is given every key it touches; a settle whose caps are not its reservation's
    is refused before any write, so the batch's other operations do not land either."""
    a, b = Cap("spend:day:a", 5.0, 3600.0), Cap("spend:day:b", 5.0, 3600.0)
    assert (await redis_store.admit([Reserve("r", (a,), 1.0, 60.0)])).ok
    with pytest.raises(redis.ResponseError, match="caps differ"):
        await redis_store.finish([Incr("n", 1.0, 60.0), Settle("r", (b,), 1.0)])
    assert await redis_store.get("n") == 0.0
    assert (await redis_store.usage(a.key)).reserved == 1.0
    assert await redis_store.finish([Settle("r", (a,), 0.5)]) == (True,)
    assert (await redis_store.usage(a.key)).total == 0.5

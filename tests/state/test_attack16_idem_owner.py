"""A claim's token: a claimer gives back only its own claim (issue #16, Redis stall attack).

A claimer whose ``idem_begin`` timed out does not know whether its claim landed (a stalled
Redis runs the script on resuming); it takes the claim back by its token once the store answers.
That must never drop another caller's claim, or a finished result: the property below runs any
sequence of begins, token-scoped and blind give-backs and completes against a model, on every
backend (memory, Redis, a private Redis Cluster).
"""

from __future__ import annotations

import asyncio
import uuid

from _state_support import StateBackend
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.state import IdemOutcome

TTL = 3600
LOCK = 600
OWNERS = ("a", "b", "c")
ops = st.lists(
    st.one_of(
        st.tuples(st.just("begin"), st.sampled_from(OWNERS)),
        st.tuples(st.just("abandon"), st.sampled_from((*OWNERS, None))),
        st.tuples(st.just("complete"), st.none()),
    ),
    max_size=12,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=ops)
def test_a_give_back_by_token_drops_only_that_claimers_unfinished_claim(
    state_backend: StateBackend, steps: list[tuple[str, str | None]]
) -> None:
    async def run() -> None:
        store = state_backend.open()
        key = "idem-owner-" + uuid.uuid4().hex
        holder: str | None = None  # the model: who holds the unfinished claim
        done = False
        try:
            for op, who in steps:
                if op == "begin":
                    assert who is not None
                    got = (await store.idem_begin(key, "fp", TTL, LOCK, who)).outcome
                    want = (
                        IdemOutcome.DONE
                        if done
                        else IdemOutcome.IN_PROGRESS
                        if holder is not None
                        else IdemOutcome.NEW
                    )
                    assert got is want, (steps, op, who)
                    if want is IdemOutcome.NEW:
                        holder = who
                elif op == "abandon":
                    dropped = await store.idem_abandon(key, who)
                    should = not done and holder is not None and who in (None, holder)
                    assert dropped is should, (steps, op, who)
                    if should:
                        holder = None
                else:
                    stored = await store.idem_complete(key, "fp", b"answer", TTL)
                    assert stored is (not done), steps
                    done, holder = True, None
        finally:
            await store.close()

    asyncio.run(run())

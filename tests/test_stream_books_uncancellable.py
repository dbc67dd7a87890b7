"""A stream's books are closed even when the client leaves while they are being closed.

A client that reads the stream's last event (an error event after an upstream cut, say) and
hangs up at once makes the server cancel the relay's task. That cancellation used to land
inside the relay's clean-up, between settling the budget and journaling the record: the spend
was settled but the call had no record and no access line. ``_uncancellable`` runs the
clean-up to its end and re-raises the cancellation afterwards.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.streams import _uncancellable


async def _books(steps: list[str], delay: float) -> None:
    steps.append("settled")
    await asyncio.sleep(delay)
    steps.append("journaled")


async def test_cancel_during_clean_up_still_journals_then_reraises() -> None:
    steps: list[str] = []
    task = asyncio.ensure_future(_uncancellable(_books(steps, 0.05)))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert steps == ["settled", "journaled"]


async def test_the_work_s_own_error_propagates() -> None:
    async def broken() -> None:
        raise RuntimeError("store down")

    with pytest.raises(RuntimeError, match="store down"):
        await _uncancellable(broken())


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=0.01), min_size=0, max_size=4))
def test_any_number_of_cancels_never_cut_the_books(cancel_at: list[float]) -> None:
    async def scenario() -> list[str]:
        steps: list[str] = []
        task = asyncio.ensure_future(_uncancellable(_books(steps, 0.015)))
        for at in sorted(cancel_at):
            await asyncio.sleep(at / 4)
            task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            assert cancel_at, "cancelled although nobody cancelled it"
        return steps

    assert asyncio.run(scenario()) == ["settled", "journaled"]

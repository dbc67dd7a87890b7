"""``eager.within``: what ``asyncio.timeout`` around ``await`` gives, with no timer armed for
work that never waits (issue 16)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.eager import within


async def _work(waits: list[float], fail: bool, log: list[str]) -> str:
    """Waits for each delay in turn (0: a bare yield to the loop), then returns or raises."""
    for w in waits:
        log.append(f"wait {w}")
        await asyncio.sleep(w)
    log.append("done")
    if fail:
        raise ValueError("the work's own error")
    return "value"


async def _outcome(run: Callable[[], Awaitable[str]]) -> tuple[str, Any]:
    try:
        return "ok", await run()
    except TimeoutError:
        return "timeout", None
    except ValueError as exc:
        return "error", str(exc)


async def _reference(work: Awaitable[str], timeout: float | None) -> str:
    async with asyncio.timeout(timeout):
        return await work


@settings(max_examples=30, deadline=None)
@given(
    waits=st.lists(st.sampled_from([0.0, 0.001, 0.08]), max_size=3),
    fail=st.booleans(),
    timeout=st.sampled_from([None, 0.0, 0.04, 5.0]),
)
def test_same_outcome_as_asyncio_timeout(
    waits: list[float], fail: bool, timeout: float | None
) -> None:
    """Value, the work's own error, or TimeoutError, and the same steps taken, as under
    ``asyncio.timeout`` (delays far from the timeout, so both clocks agree)."""

    async def main() -> None:
        ref_log: list[str] = []
        got_log: list[str] = []
        ref = await _outcome(lambda: _reference(_work(waits, fail, ref_log), timeout))
        got = await _outcome(lambda: within(_work(waits, fail, got_log), timeout))
        assert got == ref
        assert got_log == ref_log
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0  # no cancel left behind

    asyncio.run(main())


async def test_no_timer_when_the_work_never_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """The point of it: work that completes in its first step arms no timeout scope."""
    scopes: list[object] = []
    real = asyncio.timeout_at

    def counting(when: float | None) -> Any:
        scopes.append(when)
        return real(when)

    monkeypatch.setattr(asyncio, "timeout_at", counting)
    assert await within(_work([], False, []), 0.5) == "value"
    with pytest.raises(ValueError):
        await within(_work([], True, []), 0.5)
    assert scopes == []
    assert await within(_work([0.0], False, []), 0.5) == "value"
    assert len(scopes) == 1  # it waited: the rest ran under a timeout


async def test_the_clock_starts_at_the_call() -> None:
    """A due timeout still lets work that need not wait finish; work that waits past it fails."""
    assert await within(_work([], False, []), 0.0) == "value"
    assert await within(_work([], False, []), -1.0) == "value"
    with pytest.raises(TimeoutError):
        await within(_work([0.05], False, []), 0.01)


async def test_outer_cancellation_reaches_the_work() -> None:
    """A cancel of the awaiting task lands in the work (its finally runs), as with ``await``."""
    log: list[str] = []

    async def work() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            log.append("cleaned up")

    task = asyncio.ensure_future(within(work(), 5.0))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log == ["cleaned up"]


async def test_scopes_the_work_opens_bind_to_the_same_task() -> None:
    """A timeout the work enters before it first waits still expires inside the work."""

    async def work() -> str:
        try:
            async with asyncio.timeout(0.01):
                await asyncio.sleep(1)
        except TimeoutError:
            return "inner timeout"
        return "no timeout"

    assert await within(work(), 5.0) == "inner timeout"


async def test_a_future_is_awaited_under_the_timeout() -> None:
    fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    with pytest.raises(TimeoutError):
        await within(fut, 0.01)
    done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    done.set_result("x")
    assert await within(done, 0.01) == "x"

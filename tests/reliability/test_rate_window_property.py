"""The rate window of one deployment (``policy.RateWindow``) against a model provider, with an
injected clock: once any answer told it where it stands, no request it lets go is refused, it
never waits when the provider would take a request, and a Retry-After is always waited out."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from bastion.providers.base import Format
from bastion.providers.sim.ratelimit import RateLimiter
from bastion.reliability.cooling import request_limits
from bastion.reliability.policy import RateWindow


@dataclass
class Answer:
    ticket: int
    allowed: bool
    remaining: int
    window_end: float  # absolute, as Anthropic's reset header says it


class Provider:
    """Fixed windows of ``limit`` requests per ``window`` seconds from t=0; counts on arrival."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self.index, self.count = 0, 0

    def _at(self, now: float) -> None:
        index = int(now // self.window)
        if index != self.index:
            self.index, self.count = index, 0

    def has_room(self, now: float) -> bool:
        self._at(now)
        return self.count < self.limit

    def arrive(self, now: float, ticket: int) -> Answer:
        self._at(now)
        allowed = self.count < self.limit
        self.count += allowed
        end = (self.index + 1) * self.window
        return Answer(ticket, allowed, self.limit - self.count, end)


class RateWindowMachine(RuleBasedStateMachine):
    """Requests go when the window says so (or are forced), answers come back late and in any
    order, and time moves on."""

    @initialize(limit=st.integers(1, 6), window=st.sampled_from([0.5, 1.0, 2.5]))
    def start(self, limit: int, window: float) -> None:
        self.now = 0.0
        self.provider = Provider(limit, window)
        self.w = RateWindow()
        self.pending: list[Answer] = []
        self.informed = False  # an answer has said where the deployment stands

    @rule(dt=st.floats(0.0, 1.5))
    def time_passes(self, dt: float) -> None:
        self.now += dt

    @rule()
    def send_when_told(self) -> None:
        wait = self.w.wait(self.now)
        if wait != 0.0:
            if wait is not None and self.now >= self.w.until:
                # waiting on a known reset: the provider really is full
                assert not self.provider.has_room(self.now)
            return
        answer = self.provider.arrive(self.now, self.w.take(self.now))
        if self.informed:
            assert answer.allowed, "a request the window let go was refused"
        self.pending.append(answer)

    @rule()
    def send_anyway(self) -> None:
        """A hedge or a continuation is sent without waiting its turn; it is still counted."""
        self.pending.append(self.provider.arrive(self.now, self.w.take(self.now)))

    @precondition(lambda self: bool(self.pending))
    @rule(pick=st.integers(0, 1000))
    def an_answer_arrives(self, pick: int) -> None:
        a = self.pending.pop(pick % len(self.pending))
        reset_in = a.window_end - self.now
        self.w.observe(self.now, a.ticket, a.remaining, reset_in, self.provider.limit)
        if not a.allowed:
            self.w.refused(self.now, reset_in)
        self.informed = True

    @invariant()
    def never_before_the_retry_after(self) -> None:
        if not hasattr(self, "w"):
            return
        wait = self.w.wait(self.now)
        assert wait is None or wait >= 0.0
        if self.now < self.w.until:
            assert wait == pytest.approx(self.w.until - self.now)


TestRateWindow = RateWindowMachine.TestCase
TestRateWindow.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)


def test_without_headers_only_the_retry_after_rests_a_deployment() -> None:
    w = RateWindow()
    assert w.wait(0.0) == 0.0
    for _ in range(50):
        w.take(0.0)  # nothing known: nothing is held back
    w.refused(1.0, 2.0)
    assert w.wait(1.5) == pytest.approx(1.5)
    assert w.wait(3.0) == 0.0


def test_a_new_window_lets_the_limit_go_then_waits_for_an_answer() -> None:
    w = RateWindow()
    t = w.take(0.0)
    w.observe(0.1, t, remaining=0, reset_in=0.9, limit=3)
    assert w.wait(0.5) == pytest.approx(0.5)
    for _ in range(3):
        assert w.wait(1.0) == 0.0
        w.take(1.0)
    assert w.wait(1.0) is None  # the limit went; only an answer tells when this window ends
    w.observe(1.2, 2, remaining=2, reset_in=0.8, limit=3)
    assert w.wait(1.2) == pytest.approx(0.8)  # 2 left when #2 was counted, #3 and #4 since


def test_an_answer_from_before_the_window_rolled_changes_nothing() -> None:
    w = RateWindow()
    first, second = w.take(0.0), w.take(0.0)
    w.observe(0.0, second, remaining=0, reset_in=1.0, limit=2)
    assert w.wait(1.0) == 0.0  # rolled: two left
    w.observe(1.0, first, remaining=1, reset_in=0.0, limit=2)  # late, from the old window
    assert w.left == 2


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (
            {
                "x-ratelimit-remaining-requests": "3",
                "x-ratelimit-reset-requests": "6m0.5s",
                "x-ratelimit-limit-requests": "500",
            },
            (3, 360.5, 500),
        ),
        (
            {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "20ms"},
            (0, 0.02, None),
        ),
        (
            {
                "anthropic-ratelimit-requests-remaining": "7",
                "anthropic-ratelimit-requests-reset": "2026-01-01T00:00:02.500Z",
                "anthropic-ratelimit-requests-limit": "50",
            },
            (7, 2.5, 50),
        ),
        (
            {"x-ratelimit-remaining-requests": "1", "x-ratelimit-reset-requests": "soon"},
            (1, None, None),
        ),
        ({"retry-after": "3"}, (None, None, None)),
    ],
)
def test_both_providers_rate_limit_headers_are_read(
    headers: dict[str, str], expected: tuple[int | None, float | None, int | None]
) -> None:
    wall = 1767225600.0  # 2026-01-01T00:00:00Z
    left, reset, limit = request_limits(headers, wall)
    assert (left, limit) == (expected[0], expected[2])
    assert reset == (None if expected[1] is None else pytest.approx(expected[1]))


def test_a_request_sent_without_waiting_counts_in_the_window_it_went_in() -> None:
    w = RateWindow()
    w.observe(0.0, w.take(0.0), remaining=1, reset_in=1.0, limit=2)
    w.take(1.5)  # a hedge after the window turned: the new window has one left, not two
    assert w.wait(1.5) == 0.0
    w.take(1.5)
    assert w.wait(1.5) is None


@given(
    limit=st.integers(1, 50),
    window=st.floats(0.01, 7200.0),
    elapsed=st.floats(0.0, 0.99),
    fmt=st.sampled_from([Format.ANTHROPIC, Format.OPENAI]),
)
@settings(max_examples=200, deadline=None)
def test_the_simulators_limit_headers_read_back_as_what_it_will_do(
    limit: int, window: float, elapsed: float, fmt: Format
) -> None:
    lim = RateLimiter()
    for i in range(limit + 1):
        now = 0.0 if i == 0 else elapsed * window  # the window starts at the first request
        wall = time.time()  # an absolute reset (Anthropic's) is read against the time it was sent
        verdict = lim.admit("k", limit, window, now, fmt)
        assert verdict.allowed == (i < limit)
        left, reset, said_limit = request_limits(verdict.headers, wall)
        assert (left, said_limit) == (max(limit - i - 1, 0), limit)
        true_reset = window - now
        # never early (a client waiting it out is not refused), at most a little late
        assert reset is not None and true_reset <= reset <= true_reset + 0.05
        if not verdict.allowed:
            wait = float(verdict.headers["retry-after"])
            assert true_reset <= wait < true_reset + 1.0

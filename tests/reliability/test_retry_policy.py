"""The retry policy as numbers: each failure class gets its decision and its time bound."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.config import RetryConfig
from bastion.engine import UpstreamStatusError
from bastion.errors import UpstreamConnectError, UpstreamProtocolError, UpstreamTimeout
from bastion.providers.base import Format
from bastion.reliability.policy import Action, Failure, RetryPolicy, classify

CFG = RetryConfig()


def _status(code: int, body: bytes = b"{}", headers: dict[str, str] | None = None) -> Exception:
    return UpstreamStatusError(code, body, Format.ANTHROPIC, headers or {})


def _unreached() -> UpstreamConnectError:
    err = UpstreamConnectError("upstream provider connection failed")
    err.reached = False
    return err


@pytest.mark.parametrize(
    ("err", "failure"),
    [
        (_unreached(), Failure.CONNECT),
        (UpstreamConnectError("the provider closed the connection"), Failure.RESET),
        (UpstreamTimeout("no response headers from upstream within 5s"), Failure.NO_HEADERS),
        (UpstreamTimeout("upstream stream silent for 60s"), Failure.STALL),
        (UpstreamProtocolError("upstream sent a malformed stream event"), Failure.MALFORMED),
        (_status(500), Failure.SERVER),
        (_status(503), Failure.SERVER),
        (_status(503, b'{"error":{"type":"overloaded_error"}}'), Failure.OVERLOADED),
        (_status(529), Failure.OVERLOADED),
        (_status(429), Failure.RATE_LIMITED),
        (_status(401), Failure.AUTH),
        (_status(403), Failure.AUTH),
        (_status(400, b'{"error":{"message":"prompt is too long"}}'), Failure.CONTEXT_LENGTH),
        (_status(400, b'{"error":{"code":"content_policy_violation"}}'), Failure.CONTENT_POLICY),
        (_status(400, b'{"error":{"message":"bad field"}}'), Failure.CLIENT),
        (_status(404), Failure.CLIENT),
    ],
)
def test_each_upstream_error_gets_one_failure_class(err: Exception, failure: Failure) -> None:
    assert classify(err) is failure  # type: ignore[arg-type]


def _decide(failure: Failure, **kw: object) -> tuple[Action, float]:
    args: dict[str, object] = {
        "tries_here": 1,
        "retry_after": None,
        "remaining": 100.0,
        "has_next": True,
    }
    args.update(kw)
    d = RetryPolicy(CFG, random.Random(1)).decide(failure, **args)  # type: ignore[arg-type]
    return d.action, d.delay


def test_a_silent_or_stalled_deployment_is_left_at_once() -> None:
    for f in (Failure.CONNECT, Failure.NO_HEADERS, Failure.FIRST_TOKEN, Failure.STALL):
        assert _decide(f) == (Action.NEXT, 0.0)
        assert _decide(f, has_next=False)[0] is Action.RETURN


def test_5xx_and_resets_retry_the_same_deployment_then_move_on() -> None:
    for f in (Failure.SERVER, Failure.RESET, Failure.MALFORMED):
        action, delay = _decide(f)
        assert action is Action.SAME and 0 <= delay <= CFG.backoff_max
        assert _decide(f, tries_here=CFG.attempts_per_deployment)[0] is Action.NEXT


def test_retry_after_is_honoured_only_when_it_fits() -> None:
    assert _decide(Failure.RATE_LIMITED, retry_after=1.0) == (Action.SAME, 1.0)
    long = CFG.max_retry_after + 1
    assert _decide(Failure.RATE_LIMITED, retry_after=long)[0] is Action.NEXT
    assert _decide(Failure.RATE_LIMITED, retry_after=5.0, remaining=4.0)[0] is Action.NEXT
    assert _decide(Failure.RATE_LIMITED, retry_after=long, has_next=False)[0] is Action.RETURN


def test_the_only_deployment_gets_patience_when_rate_limited_not_when_broken() -> None:
    n = CFG.attempts_per_deployment
    assert _decide(Failure.RATE_LIMITED, tries_here=n, has_next=False)[0] is Action.SAME
    assert _decide(Failure.OVERLOADED, tries_here=n, has_next=False)[0] is Action.SAME
    assert _decide(Failure.SERVER, tries_here=n, has_next=False)[0] is Action.RETURN
    assert _decide(Failure.OVERLOADED)[0] is Action.NEXT  # another provider is not overloaded


def test_the_callers_own_errors_are_returned() -> None:
    for f in (Failure.CONTENT_POLICY, Failure.CLIENT):
        assert _decide(f)[0] is Action.RETURN
    assert _decide(Failure.CONTEXT_LENGTH)[0] is Action.NEXT  # a larger window may take it
    assert _decide(Failure.AUTH)[0] is Action.NEXT  # our key, not theirs


def test_rate_limits_never_count_against_a_breaker() -> None:
    assert not RetryPolicy.counts_against_breaker(Failure.RATE_LIMITED)
    assert not RetryPolicy.counts_against_breaker(Failure.OVERLOADED)
    assert RetryPolicy.counts_against_breaker(Failure.SERVER)
    assert RetryPolicy.counts_against_breaker(Failure.NO_HEADERS)


@settings(max_examples=500, deadline=None)
@given(
    failure=st.sampled_from(list(Failure)),
    tries=st.integers(min_value=1, max_value=60),
    retry_after=st.one_of(st.none(), st.floats(min_value=0, max_value=1e4)),
    remaining=st.floats(min_value=0.001, max_value=1e4),
    has_next=st.booleans(),
    seed=st.integers(0, 2**32),
)
def test_no_decision_waits_past_the_deadline_or_retries_forever(
    failure: Failure,
    tries: int,
    retry_after: float | None,
    remaining: float,
    has_next: bool,
    seed: int,
) -> None:
    d = RetryPolicy(CFG, random.Random(seed)).decide(
        failure, tries_here=tries, retry_after=retry_after, remaining=remaining, has_next=has_next
    )
    if d.action is Action.SAME:
        assert d.delay < remaining
        assert d.delay <= max(CFG.backoff_max, CFG.max_retry_after)
        assert tries < CFG.max_attempts
    else:
        assert d.delay == 0.0
    if not has_next:
        assert d.action is not Action.NEXT


@given(remaining=st.floats(min_value=0, max_value=1e4), untried=st.integers(1, 10))
def test_one_attempt_leaves_the_deployments_after_it_their_share(
    remaining: float, untried: int
) -> None:
    budget = RetryPolicy.attempt_budget(remaining, untried)
    assert budget * untried == pytest.approx(remaining)

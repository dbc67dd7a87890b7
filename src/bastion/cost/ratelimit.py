"""Per-user (and per-key, global) rate limits: token buckets, calls per day, tokens per minute.

Buckets live in the counter store, so every replica draws from the same one and
one abusive user cannot drain anyone else's capacity. They are taken in the batch that
reserves the call's first upstream request (``state_batch.py``): one round trip, and a call
refused by any guard there takes nothing from them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..call import Call
from ..clock import DayClock
from ..config import BucketConfig, Config
from ..errors import RateLimited, StateUnavailable
from ..state import CounterStore, IncrResult, TakeResult
from ..state.plan import Charge, Incr, Take
from .key_caps import key_bucket
from .state_batch import Planned, plan_of

log = logging.getLogger("bastion.ratelimit")


class RateLimitGuard:
    """Refuses with 429 and an exact Retry-After; charges real tokens after the call."""

    name = "rate_limit"
    plans_state = True  # its store operations go in the call's batches (state_batch.py)

    def __init__(self, config: Config, state: CounterStore, clock: DayClock) -> None:
        rl = config.cost.rate_limits
        self._scopes: list[tuple[str, BucketConfig]] = [
            (s, b)
            for s, b in (("user", rl.per_user), ("key", rl.per_key), ("global", rl.global_))
            if b.requests_per_minute or b.calls_per_day or b.tokens_per_minute
        ]
        self._per_key = rl.per_key
        self._state = state
        self._clock = clock
        self._fail_open = config.state.fail_open
        self.active = True  # any key may carry its own RPM/TPM (cost/key_caps.py)

    def _buckets(self, call: Call) -> list[tuple[str, BucketConfig]]:
        """The configured buckets, with the per-key one tightened by this key's own limits."""
        lim = call.principal.limits
        if lim is None or (lim.rpm is None and lim.tpm is None):
            return self._scopes
        own = ("key", key_bucket(self._per_key, call.principal))
        rest = [(s, b) for s, b in self._scopes if s != "key"]
        return [*[x for x in rest if x[0] == "user"], own, *[x for x in rest if x[0] != "user"]]

    @staticmethod
    def _ident(scope: str, call: Call) -> str:
        if scope == "user":
            return call.cap_subject or f"key:{call.principal.key_id}/anonymous"
        if scope == "key":
            return call.principal.key_id
        return "all"

    async def before(self, call: Call) -> None:
        """Plan the takes; the pipeline sends them with the first attempt's reservation, in
        one atomic batch (state_batch.py): a refusal there takes nothing from any bucket."""
        plan = plan_of(call, self._state).admit
        for scope, b in self._buckets(call):
            who = self._ident(scope, call)
            if b.tokens_per_minute:
                rate = b.tokens_per_minute / 60.0
                op: Take | Incr = Take(f"tpm:{scope}:{who}", rate, b.tokens_per_minute, 0.0)
                plan.append(Planned(op, self._tpm(call, scope, who, rate), self._down(call), call_level=True))
            if b.requests_per_minute:
                rate = b.requests_per_minute / 60.0
                burst = b.burst or max(1.0, b.requests_per_minute / 6.0)
                op = Take(f"rpm:{scope}:{who}", rate, burst)
                plan.append(Planned(op, self._rpm(call, scope, who, b), self._down(call), call_level=True))
            if b.calls_per_day:
                day = self._clock.day(call.wall_started)
                op = Incr(f"calls:{day}:{scope}:{who}", 1.0, 2 * 86400.0, b.calls_per_day)
                plan.append(Planned(op, self._daily(call, scope, who, b), self._down(call), call_level=True))

    def _refuse(self, call: Call, exc: RateLimited) -> RateLimited:
        exc.guard = self.name  # refused when the batch ran, after the admit phase
        call.flags["refused_by"] = self.name
        return exc

    def _tpm(self, call: Call, scope: str, who: str, rate: float) -> Callable[[Any], None]:
        def answer(t: TakeResult) -> None:
            if t.remaining < 0 or not t.allowed:
                raise self._refuse(
                    call,
                    RateLimited(
                        f"tokens-per-minute limit reached for {scope} {who}",
                        retry_after=t.retry_after_seconds or (-t.remaining / rate),
                        scope=f"{scope}_tokens_per_minute",
                    ),
                )

        return answer

    def _rpm(self, call: Call, scope: str, who: str, b: BucketConfig) -> Callable[[Any], None]:
        def answer(t: TakeResult) -> None:
            if not t.allowed:
                raise self._refuse(
                    call,
                    RateLimited(
                        f"rate limit reached for {scope} {who}: {b.requests_per_minute:g} requests/minute",
                        retry_after=t.retry_after_seconds,
                        scope=f"{scope}_requests_per_minute",
                    ),
                )

        return answer

    def _daily(self, call: Call, scope: str, who: str, b: BucketConfig) -> Callable[[Any], None]:
        def answer(r: IncrResult) -> None:
            if not r.ok:
                raise self._refuse(
                    call,
                    RateLimited(
                        f"daily call limit reached for {scope} {who}: {b.calls_per_day} calls/day",
                        retry_after=self._clock.seconds_to_next_day(),
                        scope=f"{scope}_calls_per_day",
                    ),
                )

        return answer

    def _down(self, call: Call) -> Callable[[StateUnavailable], None]:
        def down(exc: StateUnavailable) -> None:
            if not self._fail_open:
                raise exc
            call.flags["rate_limit_unchecked"] = True

        return down

    async def after(self, call: Call, error: BaseException | None) -> None:
        """Plan the tokens-per-minute charge for the call's settle batch."""
        tokens = call.usage.input_tokens + call.usage.output_tokens + call.usage.cache_write_tokens
        if not tokens:
            return
        for scope, b in self._buckets(call):
            if b.tokens_per_minute:
                op = Charge(
                    f"tpm:{scope}:{self._ident(scope, call)}",
                    b.tokens_per_minute / 60.0,
                    b.tokens_per_minute,
                    float(tokens),
                )
                plan_of(call, self._state).finish.append(
                    Planned(op, _charged, _not_charged(scope))
                )


def _charged(answer: object) -> None:
    """The bucket's level after the charge needs nothing more."""


def _not_charged(scope: str) -> Callable[[StateUnavailable], None]:
    def down(exc: StateUnavailable) -> None:
        log.warning("could not charge tokens-per-minute for %s", scope)

    return down

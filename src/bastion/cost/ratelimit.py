"""Per-user (and per-key, global) rate limits: token buckets, calls per day, tokens per minute.

Buckets live in the counter store, so every replica draws from the same one and
one abusive user cannot drain anyone else's capacity.
"""

from __future__ import annotations

import logging

from ..call import Call
from ..clock import DayClock
from ..config import BucketConfig, Config
from ..errors import RateLimited, StateUnavailable
from ..state import CounterStore
from .key_caps import key_bucket

log = logging.getLogger("bastion.ratelimit")


class RateLimitGuard:
    """Refuses with 429 and an exact Retry-After; charges real tokens after the call."""

    name = "rate_limit"

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
        try:
            await self._check(call)
        except StateUnavailable:
            if self._fail_open:
                call.flags["rate_limit_unchecked"] = True
                return
            raise

    async def _check(self, call: Call) -> None:
        st = self._state
        for scope, b in self._buckets(call):
            who = self._ident(scope, call)
            if b.tokens_per_minute:
                rate = b.tokens_per_minute / 60.0
                t = await st.take(f"tpm:{scope}:{who}", rate, b.tokens_per_minute, 0.0)
                if t.remaining < 0 or not t.allowed:
                    raise RateLimited(
                        f"tokens-per-minute limit reached for {scope} {who}",
                        retry_after=t.retry_after_seconds or (-t.remaining / rate),
                        scope=f"{scope}_tokens_per_minute",
                    )
            if b.requests_per_minute:
                rate = b.requests_per_minute / 60.0
                burst = b.burst or max(1.0, b.requests_per_minute / 6.0)
                t = await st.take(f"rpm:{scope}:{who}", rate, burst)
                if not t.allowed:
                    raise RateLimited(
                        f"rate limit reached for {scope} {who}: {b.requests_per_minute:g} requests/minute",
                        retry_after=t.retry_after_seconds,
                        scope=f"{scope}_requests_per_minute",
                    )
            if b.calls_per_day:
                day = self._clock.day(call.wall_started)
                r = await st.incr_if_below(
                    f"calls:{day}:{scope}:{who}", 1.0, b.calls_per_day, 2 * 86400.0
                )
                if not r.ok:
                    raise RateLimited(
                        f"daily call limit reached for {scope} {who}: {b.calls_per_day} calls/day",
                        retry_after=self._clock.seconds_to_next_day(),
                        scope=f"{scope}_calls_per_day",
                    )

    async def after(self, call: Call, error: BaseException | None) -> None:
        tokens = call.usage.input_tokens + call.usage.output_tokens + call.usage.cache_write_tokens
        if not tokens:
            return
        for scope, b in self._buckets(call):
            if b.tokens_per_minute:
                try:
                    await self._state.charge(
                        f"tpm:{scope}:{self._ident(scope, call)}",
                        b.tokens_per_minute / 60.0,
                        b.tokens_per_minute,
                        float(tokens),
                    )
                except StateUnavailable:
                    log.warning("could not charge tokens-per-minute for %s", scope)

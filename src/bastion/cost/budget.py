"""Daily spend caps that cannot be overshot: reserve each upstream request's worst case, settle after.

The caps that apply (global, feature, user, key) are fixed when the call is admitted. Every
upstream request — first try, retry, failover, hedge, continuation, repair — is then reserved
before it is sent, at the worst case of the body that actually goes upstream (input bytes, the
largest token limit present, times ``n``) and its own model's price, in one atomic step over
every cap, so concurrent calls on one process or many cannot together pass a cap. Each attempt
is settled with its own cost under its own server-minted id. The invariant, at every moment:
settled + held ≥ spend that happened. A settle the store cannot take goes to the journal and is
retried until it lands; a lease that expires frees a hold, never spend already settled. A store
outage refuses calls unless config opts into failing open.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..call import Attempt, Call
from ..clock import DayClock
from ..config import Config
from ..errors import BudgetExceeded, ConfigError, StateUnavailable
from ..observability.tracecontext import new_id
from ..state import Cap, CounterStore, ReserveResult
from ..state.plan import Reserve, Settle
from .journal import SettleJournal
from .key_caps import key_caps, seconds_to_next_month
from .pricing import PriceTable
from .state_batch import Planned, flush_admit, plan_of
from .tokens import input_upper_bound, output_upper_bound

log = logging.getLogger("bastion.cost")

DAY_TTL = 2 * 86400.0


class BudgetGuard:
    """Reserve-then-settle against every applicable daily cap."""

    name = "budget"
    plans_state = True  # its store operations go in the call's batches (state_batch.py)

    def __init__(
        self,
        config: Config,
        state: CounterStore,
        prices: PriceTable,
        clock: DayClock,
        journal: SettleJournal | None = None,
    ) -> None:
        self._journal = journal if journal is not None else SettleJournal(None)
        self._caps = config.cost.caps
        self._features = config.features
        self._state = state
        self._prices = prices
        self._clock = clock
        self._fail_open = config.state.fail_open
        self._grace = config.cost.lease_grace_seconds
        self._tz = config.cost.timezone
        # a cap in the config: every model must be priceable at start-up
        self.configured = bool(
            self._caps.global_daily_usd is not None
            or self._caps.per_user_daily_usd is not None
            or self._caps.per_key_daily_usd is not None
            or any(f.daily_budget_usd is not None for f in config.features.values())
        )
        # always in the chain: any key may carry its own budget (cost/key_caps.py); an
        # attempt of a capped call to an unpriced model is then refused, never let through
        self.active = True
        if self.configured:
            self._check_prices(config)

    def _check_prices(self, config: Config) -> None:
        """A cap is meaningless for a model we cannot price: refuse to start."""
        for alias, m in config.models.items():
            for d in m.deployments:
                if "{model}" in d.model:
                    continue
                if self._prices.for_deployment(d.model, config.providers[d.provider].kind) is None:
                    raise ConfigError(
                        f"models.{alias}: a spend cap is configured but model {d.model!r} has no "
                        "known price; add it under cost.prices"
                    )

    def _applicable(self, call: Call, day: str) -> list[Cap]:
        caps: list[Cap] = []
        c = self._caps
        if c.global_daily_usd is not None:
            caps.append(Cap(f"spend:{day}:global", c.global_daily_usd, DAY_TTL))
        # an unconfigured feature name is the default feature: naming one must not escape its cap
        name = call.feature if call.feature in self._features else "default"
        limit = self._features[name].daily_budget_usd
        if limit is not None:
            caps.append(Cap(f"spend:{day}:feature:{name}", limit, DAY_TTL))
        if c.per_user_daily_usd is not None:
            subject = call.cap_subject or f"key:{call.principal.key_id}/anonymous"
            caps.append(Cap(f"spend:{day}:user:{subject}", c.per_user_daily_usd, DAY_TTL))
        caps.extend(key_caps(call.principal, day, c.per_key_daily_usd))
        return caps

    def attempt_worst_case(self, attempt: Attempt, body: dict[str, Any], body_bytes: int) -> float:
        """The most one upstream request can cost: its own body, its own limit, its own model."""
        price = self._prices.for_deployment(attempt.model, attempt.provider_kind)
        if price is None:
            raise BudgetExceeded(
                f"model {attempt.model!r} has no known price, so its spend cannot be capped",
                scope="unpriced_model",
            )
        return price.worst_case(input_upper_bound(body, body_bytes), output_upper_bound(body))

    async def before(self, call: Call) -> None:
        """Admit: fix the caps every attempt of this call reserves against."""
        call.budget_caps = tuple(self._applicable(call, self._clock.day(call.wall_started)))

    async def reserve_attempt(
        self, call: Call, attempt: Attempt, body: dict[str, Any], body_bytes: int
    ) -> None:
        """Hold this attempt's worst case on every cap before it is sent, atomically."""
        if not call.budget_caps:
            return
        await self.reserve(call, attempt, self.attempt_worst_case(attempt, body, body_bytes))

    async def reserve(self, call: Call, attempt: Attempt, amount: float) -> None:
        """Hold ``amount`` (an attempt's worst case, priced by its caller) on every cap."""
        caps: tuple[Cap, ...] = call.budget_caps
        if not caps:
            return
        rid = f"{call.request_id}.{new_id(6)}"
        lease = max(call.remaining(), 1.0) + self._grace
        try:
            if len(self._journal):
                await self._journal.drain(self._state)  # our own spend lands before we reserve
        except StateUnavailable as exc:
            self._unreachable(call, exc)
            return

        def held(res: ReserveResult) -> None:
            if not res.ok:
                raise self._refusal(call, res, amount)
            attempt.reservation_id = rid
            attempt.reserved_usd = amount

        def down(exc: StateUnavailable) -> None:
            # a timed-out script may still run when the store answers (a stalled Redis runs
            # what it was sent): give its hold back then, or it stays on the caps for the lease
            self._journal.add(self._state, rid, None)
            self._unreachable(call, exc)

        # with whatever else the call planned (rate limits, token caps): one atomic batch
        op = Reserve(rid, caps, amount, lease)
        plan_of(call, self._state).admit.append(Planned(op, held, down))
        await flush_admit(call)

    def _unreachable(self, call: Call, exc: StateUnavailable) -> None:
        """Fail closed (raise), or note the call as unchecked when config opts into fail_open."""
        if not self._fail_open:
            raise exc
        call.flags["budget_unchecked"] = True
        log.warning("counter store unreachable; budget not enforced (fail_open)")

    def _refusal(self, call: Call, res: ReserveResult, amount: float) -> BudgetExceeded:
        """Name the cap; show figures only for the caller's own key or user cap."""
        parts = (res.refused_cap or "").split(":", 2)
        period, scope = (parts[1], parts[2]) if len(parts) == 3 else ("", parts[-1])
        own = scope in (f"key:{call.principal.key_id}", f"user:{call.cap_subject}")
        figures = (
            f" (limit ${res.limit:.2f}, spent ${res.settled:.4f}, reserved ${res.reserved:.4f},"
            f" this call needs up to ${amount:.4f})"
            if own
            else ""
        )
        if len(period) == 7:  # 2026-12: a key's calendar-month budget
            return BudgetExceeded(
                f"monthly spend cap reached for {scope}{figures}",
                retry_after=seconds_to_next_month(call.wall_started, self._tz),
                scope=f"{scope}:month",
            )
        return BudgetExceeded(
            f"daily spend cap reached for {scope}{figures}",
            retry_after=self._clock.seconds_to_next_day(),
            scope=scope,
        )

    async def release_attempt(self, call: Call, attempt: Attempt) -> None:
        """An attempt that cost nothing gives its hold back now (a failover may need the room)."""
        rid = attempt.reservation_id
        if rid is None:
            return
        attempt.reservation_id = None
        try:
            await self._state.release(rid)
        except StateUnavailable:
            self._journal.add(self._state, rid, None)

    async def after(self, call: Call, error: BaseException | None) -> None:
        """Settle every attempt at its own cost (in the call's settle batch, sent by the
        pipeline with the other guards' operations); a settle that cannot land is journaled."""
        for attempt in call.attempts:
            rid = attempt.reservation_id
            if rid is None:
                continue
            attempt.reservation_id = None
            actual = attempt.cost_usd if attempt.cost_usd > 0 else None
            op = Settle(rid, call.budget_caps, actual)
            plan_of(call, self._state).finish.append(
                Planned(op, _landed, self._journaled(rid, actual))
            )

    def _journaled(self, rid: str, actual: float | None) -> Callable[[StateUnavailable], None]:
        def down(exc: StateUnavailable) -> None:
            log.warning("could not settle reservation %s now; journaled", rid)
            self._journal.add(self._state, rid, actual)

        return down


def _landed(answer: object) -> None:
    """A settle's answer needs nothing more (False: already settled, or its lease ended)."""

"""Daily spend caps that cannot be overshot: reserve the worst case before the call, settle after.

Every cap that applies (global, feature, user, key) is reserved in one atomic
step in the counter store, so concurrent calls — on one process or many —
cannot together pass a cap. A call that dies leaves a reservation whose lease
expires; a store outage refuses calls unless config opts into failing open.
"""

from __future__ import annotations

import logging

from ..call import Call
from ..clock import DayClock
from ..config import Config
from ..errors import BudgetExceeded, ConfigError, StateUnavailable
from ..reliability.router import Router
from ..state import Cap, CounterStore
from .pricing import PriceTable
from .tokens import input_upper_bound

log = logging.getLogger("bastion.cost")

DAY_TTL = 2 * 86400.0


class BudgetGuard:
    """Reserve-then-settle against every applicable daily cap."""

    name = "budget"

    def __init__(
        self,
        config: Config,
        state: CounterStore,
        prices: PriceTable,
        router: Router,
        clock: DayClock,
    ) -> None:
        self._caps = config.cost.caps
        self._features = config.features
        self._state = state
        self._prices = prices
        self._router = router
        self._clock = clock
        self._fail_open = config.state.fail_open
        self._grace = config.cost.lease_grace_seconds
        self.active = bool(
            self._caps.global_daily_usd is not None
            or self._caps.per_user_daily_usd is not None
            or self._caps.per_key_daily_usd is not None
            or any(f.daily_budget_usd is not None for f in config.features.values())
        )
        if self.active:
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
        if c.per_user_daily_usd is not None and call.user_id:
            caps.append(Cap(f"spend:{day}:user:{call.user_id}", c.per_user_daily_usd, DAY_TTL))
        if c.per_key_daily_usd is not None:
            caps.append(
                Cap(f"spend:{day}:key:{call.principal.key_id}", c.per_key_daily_usd, DAY_TTL)
            )
        return caps

    def worst_case(self, call: Call) -> float:
        """The most this call can cost on any deployment it may be routed to."""
        bound = input_upper_bound(call.body, call.body_bytes)
        mt = call.body.get("max_tokens") or call.body.get("max_completion_tokens") or 0
        costs = []
        for dep in self._router.resolve(call.requested_model):
            price = self._prices.for_deployment(dep.model, dep.endpoint.kind)
            if price is None:
                raise BudgetExceeded(
                    f"model {dep.model!r} has no known price, so its spend cannot be capped",
                    scope="unpriced_model",
                )
            costs.append(price.worst_case(bound, int(mt)))
        costs.sort(reverse=True)
        # a hedged call may run two deployments at once, and pays for both
        return sum(costs[:2]) if call.hedge_delay is not None else costs[0]

    async def before(self, call: Call) -> None:
        if not self.active:
            return
        day = self._clock.day(call.wall_started)
        caps = self._applicable(call, day)
        if not caps:
            return
        amount = self.worst_case(call)
        lease = max(call.remaining(), 1.0) + self._grace
        try:
            res = await self._state.reserve(call.request_id, caps, amount, lease)
        except StateUnavailable:
            if self._fail_open:
                call.flags["budget_unchecked"] = True
                log.warning("counter store unreachable; budget not enforced (fail_open)")
                return
            raise
        if not res.ok:
            scope = (res.refused_cap or "").split(":", 2)[-1]
            raise BudgetExceeded(
                f"daily spend cap reached for {scope} (limit ${res.limit:.2f}, spent "
                f"${res.settled:.4f}, reserved ${res.reserved:.4f}, this call needs up to ${amount:.4f})",
                retry_after=self._clock.seconds_to_next_day(),
                scope=scope,
            )
        call.reservation_id = call.request_id
        call.flags["reserved_usd"] = round(amount, 6)

    async def after(self, call: Call, error: BaseException | None) -> None:
        rid = call.reservation_id
        if rid is None:
            return
        call.reservation_id = None
        try:
            if call.cost_usd > 0:
                await self._state.settle(rid, call.cost_usd)
            else:
                await self._state.release(rid)
        except StateUnavailable:
            # the lease will expire; the ledger still records what was spent
            log.warning("could not settle reservation %s; it expires with its lease", rid)

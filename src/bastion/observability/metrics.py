"""Prometheus metrics for every call, in a registry owned by the gateway (never the global one).

Labels are low-cardinality by construction: feature, model, provider, deployment and a status
class; never a user id, request id, key id or trace id. Each label dimension keeps at most
``max_label_values`` distinct values; later newcomers are counted under ``"other"`` so a client
inventing feature names cannot blow up the time-series count.

State that lives outside a call (budget left, breaker states, kill switch) is set through
setters, either directly or from refresh callbacks that ``Metrics.refresh()`` awaits before a
scrape. Recorder counters are read from its stats at scrape time by a custom collector.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from enum import Enum
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from ..call import Call
from ..errors import AIUnavailable, BastionError, UpstreamError
from ..state import CounterStore
from .recorder import Recorder

__all__ = [
    "LATENCY_BUCKETS",
    "TTFT_BUCKETS",
    "Metrics",
    "MetricsGuard",
    "Refresher",
    "attempt_summary",
    "budget_refresher",
    "kill_switch_refresher",
    "render_metrics",
    "status_class",
]

log = logging.getLogger("bastion.metrics")

# Seconds. LLM calls span two orders of magnitude: a cached short answer in 300 ms, a long
# generation in two minutes; the buckets are dense where latency budgets live (0.5-8 s).
LATENCY_BUCKETS: Final = (
    0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0,
)  # fmt: skip
TTFT_BUCKETS: Final = (
    0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0, 120.0,
)  # fmt: skip

BREAKER_VALUES: Final[Mapping[str, float]] = {"closed": 0.0, "half_open": 1.0, "open": 2.0}
TOKEN_TYPES: Final = ("input", "output", "cache_read", "cache_write")
OTHER: Final = "other"

Refresher = Callable[["Metrics"], Awaitable[None]]

# Error types that mean "a guard said no" when no attempt went upstream, by guard name; a guard
# can name itself instead by setting ``guard`` on its error or ``call.flags["refused_by"]``.
_GUARD_BY_ERROR: Final[Mapping[str, str]] = {
    "BudgetExceeded": "budget",
    "RateLimited": "rate_limit",
    "InputTooLarge": "token_caps",
    "BodyTooLarge": "body_limit",
    "InvalidRequest": "request",
    "UnprocessableRequest": "request",
    "PermissionDenied": "authorization",
    "StateUnavailable": "state",
    "NotFound": "routing",
    "AuthenticationFailed": "auth",
    "HeadersTooLarge": "request",
    "RequestTimeout": "request",
    "TooManyStreams": "stream_limit",
}


def refusal_guard(error: BaseException) -> str:
    """Which guard (or check) refused: the error's own ``guard``, else by its type."""
    guard = getattr(error, "guard", None)
    if isinstance(guard, str) and guard:
        return guard
    return _GUARD_BY_ERROR.get(type(error).__name__, "unknown")


class _Capped:
    """One label dimension: the first ``limit`` distinct values pass, the rest become "other"."""

    __slots__ = ("_limit", "_seen")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: object, default: str = "none") -> str:
        v = default if value is None or value == "" else str(value)[:80]
        if v in self._seen:
            return v
        if len(self._seen) >= self._limit:
            return OTHER
        self._seen.add(v)
        return v


def status_class(status: int) -> str:
    """2xx/4xx/5xx; 0 (never answered) counts as 5xx."""
    return f"{status // 100}xx" if 100 <= status <= 599 else "5xx"


def attempt_summary(call: Call) -> tuple[bool, bool]:
    """(retried, failover): more attempts than deployments, and more than one deployment."""
    deployments = {a.deployment for a in call.attempts}
    return len(call.attempts) > len(deployments), len(deployments) > 1


class _RecorderCollector(Collector):
    """Reads the recorder's cumulative stats at scrape time, so the hot path pays nothing."""

    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder

    def collect(self) -> Iterator[Metric]:
        s = self._recorder.stats
        for name, value, doc in (
            ("queued", s.queued, "Call records queued for writing."),
            ("written", s.written, "Records written to the record store."),
            ("spilled", s.spilled, "Records spilled to disk (store down or queue full)."),
            ("replayed", s.replayed, "Spilled records replayed into the store."),
            ("dropped", s.dropped, "Records lost because the spill file could not be written."),
            ("store_errors", s.store_errors, "Failed record-store writes."),
        ):
            c = CounterMetricFamily(f"bastion_recorder_{name}", doc)
            c.add_metric([], float(value))
            yield c
        g = GaugeMetricFamily("bastion_recorder_queue_depth", "Records waiting in memory.")
        g.add_metric([], float(self._recorder.pending))
        yield g


class Metrics:
    """Every Bastion metric, registered in this object's own registry."""

    def __init__(
        self,
        *,
        max_label_values: int = 200,
        latency_buckets: Iterable[float] = LATENCY_BUCKETS,
        ttft_buckets: Iterable[float] = TTFT_BUCKETS,
        registry: CollectorRegistry | None = None,
    ) -> None:
        if max_label_values < 1:
            raise ValueError("max_label_values must be >= 1")
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._feature = _Capped(max_label_values)
        self._model = _Capped(max_label_values)
        self._provider = _Capped(max_label_values)
        self._deployment = _Capped(max_label_values)
        self._guard = _Capped(max_label_values)
        self._error = _Capped(max_label_values)
        self._reason = _Capped(max_label_values)
        self._scope = _Capped(max_label_values)
        self._refreshers: list[Refresher] = []
        r = self.registry
        self.requests = Counter(
            "bastion_requests_total",
            "Calls finished, by feature, model, provider and status class.",
            ["feature", "model", "provider", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "bastion_request_duration_seconds",
            "Total call latency as the client saw it.",
            ["feature", "model"],
            buckets=tuple(latency_buckets),
            registry=r,
        )
        self.ttft = Histogram(
            "bastion_time_to_first_token_seconds",
            "Time from the request to the first byte of the answer.",
            ["feature", "model"],
            buckets=tuple(ttft_buckets),
            registry=r,
        )
        self.stages = Histogram(
            "bastion_stage_duration_seconds",
            "Time per stage of a call (auth_routing, guards, retrieval, first_token, total).",
            ["feature", "stage"],
            buckets=tuple(ttft_buckets),
            registry=r,
        )
        self.quality = Counter(
            "bastion_quality_checks_total",
            "Reference-free scorers on sampled production answers, by result.",
            ["feature", "scorer", "result"],
            registry=r,
        )
        self.over_budget = Counter(
            "bastion_stage_over_budget_total",
            "Calls whose stage took longer than the feature's latency budget.",
            ["feature", "stage"],
            registry=r,
        )
        self.tokens = Counter(
            "bastion_tokens_total",
            "Tokens by type (input excludes cache reads and writes).",
            ["feature", "model", "type"],
            registry=r,
        )
        self.cost = Counter(
            "bastion_cost_usd_total",
            "Spend in USD, priced locally.",
            ["feature", "model"],
            registry=r,
        )
        self.retried = Counter(
            "bastion_retried_requests_total",
            "Calls that retried a deployment at least once.",
            ["feature", "model"],
            registry=r,
        )
        self.failovers = Counter(
            "bastion_failover_requests_total",
            "Calls that moved to another deployment.",
            ["feature", "model"],
            registry=r,
        )
        self.attempts = Counter(
            "bastion_upstream_attempts_total",
            "Upstream attempts by deployment and outcome.",
            ["deployment", "provider", "status"],
            registry=r,
        )
        self.degraded = Counter(
            "bastion_degraded_total",
            "Calls answered with the degraded response (or its error).",
            ["feature", "reason"],
            registry=r,
        )
        self.stream_errors = Counter(
            "bastion_stream_errors_total",
            "Streams that ended with an explicit error event after the first byte.",
            ["feature", "model"],
            registry=r,
        )
        self.findings = Counter(
            "bastion_safety_findings_total",
            "Safety detector findings (call.findings) by feature, detector and action taken.",
            ["feature", "detector", "action"],
            registry=r,
        )
        self.refusals = Counter(
            "bastion_guard_refusals_total",
            "Calls a guard refused before any upstream attempt.",
            ["guard", "error_type"],
            registry=r,
        )
        self.budget_remaining = Gauge(
            "bastion_budget_remaining_usd",
            "USD left under a daily cap (settled plus reserved spend deducted).",
            ["scope"],
            registry=r,
        )
        self.breaker_state = Gauge(
            "bastion_breaker_state",
            "Circuit breaker per deployment: 0 closed, 1 half-open, 2 open.",
            ["deployment"],
            registry=r,
        )
        self.kill_switch = Gauge(
            "bastion_kill_switch", "1 while a kill switch is on, by scope.", ["scope"], registry=r
        )
        self.refresh_errors = Counter(
            "bastion_metrics_refresh_errors_total",
            "Refresh callbacks that failed or timed out before a scrape.",
            registry=r,
        )
        self._kill_scopes: set[str] = set()

    # -- per call ---------------------------------------------------------------------------

    def observe_quality(self, feature: str, scorer: str, ok: bool) -> None:
        self._child(
            self.quality, self._feature(feature, "default"), scorer, "pass" if ok else "fail"
        ).inc()

    def _child(self, metric: Any, *labels: str) -> Any:
        """A labelled child, cached: ``labels()`` costs a lock and a tuple build on every call."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe_call(self, call: Call, error: BaseException | None) -> None:
        """Count one finished call; reads only the Call, never the request body."""
        feature = self._feature(call.feature, "default")
        model = self._model(call.served_model or call.requested_model, "unknown")
        provider = self._provider(call.provider)
        status = call.status or (200 if error is None else 500)
        self._child(self.requests, feature, model, provider, status_class(status)).inc()
        end = call.ended if call.ended is not None else time.monotonic()
        self._child(self.latency, feature, model).observe(max(0.0, end - call.started))
        ttft = call.ttft_ms
        if ttft is not None:
            self._child(self.ttft, feature, model).observe(max(0.0, ttft / 1000.0))
        for stage, ms in call.stages.items():
            self._child(self.stages, feature, stage).observe(max(0.0, ms / 1000.0))
        for stage in call.flags.get("over_budget", ()):
            self._child(self.over_budget, feature, str(stage)).inc()
        u = call.usage
        for kind, n in zip(
            TOKEN_TYPES,
            (u.input_tokens, u.output_tokens, u.cache_read_tokens, u.cache_write_tokens),
            strict=True,
        ):
            if n > 0:
                self._child(self.tokens, feature, model, kind).inc(n)
        if call.cost_usd > 0:
            self._child(self.cost, feature, model).inc(call.cost_usd)
        retried, failover = attempt_summary(call)
        if retried:
            self._child(self.retried, feature, model).inc()
        if failover:
            self._child(self.failovers, feature, model).inc()
        for a in call.attempts:
            outcome = status_class(a.status) if a.status else "error"
            self._child(
                self.attempts, self._deployment(a.deployment), self._provider(a.provider), outcome
            ).inc()
        degraded = call.flags.get("degraded")
        if degraded:
            reason = degraded if isinstance(degraded, str) else "unavailable"
            self._child(self.degraded, feature, self._reason(reason)).inc()
        if call.flags.get("stream_error"):
            self._child(self.stream_errors, feature, model).inc()
        for f in call.findings:  # detector names and actions are a fixed set in the code
            self._child(self.findings, feature, f.detector, f.action).inc()
        if error is not None and not call.attempts:
            self._refusal(call, error)

    def _refusal(self, call: Call, error: BaseException) -> None:
        """A Bastion error before any attempt went upstream is a guard's refusal."""
        if not isinstance(error, BastionError) or isinstance(error, UpstreamError | AIUnavailable):
            return
        etype = type(error).__name__
        guard = getattr(error, "guard", None) or call.flags.get("refused_by")
        if not isinstance(guard, str):
            guard = _GUARD_BY_ERROR.get(etype, "unknown")
        self.refusals.labels(self._guard(guard), self._error(etype)).inc()

    def observe_refusal(self, error: BaseException) -> None:
        """A request refused before it became a call (no valid key, no such route)."""
        etype = type(error).__name__
        self.refusals.labels(self._guard(refusal_guard(error)), self._error(etype)).inc()

    # -- state outside calls ----------------------------------------------------------------

    def set_budget_remaining(self, scope: str, usd: float) -> None:
        """USD left under one cap scope ("global", "feature:chat"); never per-user scopes."""
        self.budget_remaining.labels(self._scope(scope)).set(max(0.0, usd))

    def set_breaker_state(self, deployment: str, state: str | Enum) -> None:
        """Record a deployment's breaker state ("closed" / "half_open" / "open" or BreakerState)."""
        name = str(state.value if isinstance(state, Enum) else state).replace("-", "_")
        value = BREAKER_VALUES.get(name)
        if value is None:
            raise ValueError(f"unknown breaker state {state!r}")
        self.breaker_state.labels(self._deployment(deployment)).set(value)

    def set_kill_switches(self, on: Iterable[str]) -> None:
        """Every kill-switch scope now on ("global", "feature:x", "key:k"); the rest read 0."""
        active = {self._scope(s) for s in on}
        self._kill_scopes |= active | {"global"}
        for s in self._kill_scopes:
            self.kill_switch.labels(s).set(1.0 if s in active else 0.0)

    def watch_recorder(self, recorder: Recorder) -> None:
        """Expose the recorder's queue, spill and drop counters at every scrape."""
        self.registry.register(_RecorderCollector(recorder))

    def add_refresher(self, fn: Refresher) -> None:
        """Register an async callback that sets gauges (budgets, breakers) before each scrape."""
        self._refreshers.append(fn)

    async def refresh(self, timeout: float = 2.0) -> None:
        """Run every refresher concurrently; one failing or slow never blocks the scrape."""
        if not self._refreshers:
            return

        async def one(fn: Refresher) -> None:
            try:
                async with asyncio.timeout(timeout):
                    await fn(self)
            except Exception as exc:
                self.refresh_errors.inc()
                log.warning("metrics refresher failed: %s", type(exc).__name__)

        await asyncio.gather(*(one(fn) for fn in self._refreshers))


class MetricsGuard:
    """Counts each finished call; a bug here is logged, never allowed to fail the call."""

    name = "metrics"
    after_send = True  # only reads the finished call: may run once the response is out

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    async def after(self, call: Call, error: BaseException | None) -> None:
        try:
            self._metrics.observe_call(call, error)
        except Exception:
            log.exception("metrics: could not record call %s", call.request_id)


def render_metrics(metrics: Metrics, accept: str | None = None) -> tuple[bytes, str]:
    """The exposition body and its content type (OpenMetrics if the scraper asks for it)."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(metrics.registry), content_type


def budget_refresher(
    state: CounterStore, day: Callable[[], str], caps: Mapping[str, float]
) -> Refresher:
    """A refresher reading ``spend:{day}:{scope}`` usage for each capped scope from the state store.

    ``caps`` maps scope ("global", "feature:chat") to its daily limit in USD; per-user and
    per-key caps do not belong here (one series per user is exactly the cardinality to avoid).
    """

    async def refresh(metrics: Metrics) -> None:
        d = day()
        for scope, limit in caps.items():
            usage = await state.usage(f"spend:{d}:{scope}")
            metrics.set_budget_remaining(scope, limit - float(usage.total))

    return refresh


def breaker_refresher(state: CounterStore, names: Sequence[str]) -> Refresher:
    """``bastion_breaker_state`` per deployment, read from the counter store at scrape time
    (what every replica's router consults), without taking a half-open probe."""

    async def refresh(metrics: Metrics) -> None:
        for name in names:
            peek = await state.breaker_peek("breaker:" + name)
            metrics.set_breaker_state(name, peek.state)

    return refresh


def kill_switch_refresher(flags: Callable[[], Awaitable[Mapping[str, str]]]) -> Refresher:
    """A refresher over ``KillSwitchGuard.flags`` (keys ``kill:global``, ``kill:feature:x``...)."""

    async def refresh(metrics: Metrics) -> None:
        current = await flags()
        metrics.set_kill_switches(k.removeprefix("kill:") for k in current)

    return refresh

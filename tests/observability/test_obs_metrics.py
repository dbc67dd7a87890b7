"""Prometheus metrics: names and labels after simulated calls, histograms, cardinality, gauges."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from bastion.call import Attempt, Call, Principal
from bastion.errors import AIUnavailable, BudgetExceeded, InputTooLarge, UpstreamError
from bastion.observability.metrics import (
    Metrics,
    MetricsGuard,
    budget_refresher,
    kill_switch_refresher,
    render_metrics,
)
from bastion.observability.recorder import Recorder
from bastion.providers.base import Format
from bastion.state import BreakerState, open_state
from bastion.state.base import Cap

USER = "user-secret-4242"
TRACE = "0af7651916cd43dd8448eb211c80319c"


def make_call(
    *,
    request_id: str = "req_m1",
    feature: str | None = "chat",
    latency: float = 1.2,
    ttft: float | None = 0.4,
    attempts: tuple[tuple[str, int | None], ...] = (("anthropic-primary", 200),),
    **fields: Any,
) -> Call:
    call = Call(
        request_id=request_id,
        trace_id=TRACE,
        span_id="b7ad6b7169203331",
        client_format=Format.ANTHROPIC,
        principal=Principal(key_id="key_abc", name="app"),
        body={"model": "claude-fast", "max_tokens": 100, "messages": []},
        requested_model="claude-fast",
        stream=True,
        user_id=USER,
        feature=feature,
        started=1000.0,
        wall_started=1_700_000_000.0,
    )
    call.ended = 1000.0 + latency
    call.first_byte = None if ttft is None else 1000.0 + ttft
    call.served_model = "claude-haiku"
    call.provider = "anthropic"
    call.deployment = attempts[-1][0] if attempts else None
    call.status = 200
    for i, (dep, status) in enumerate(attempts):
        call.attempts.append(
            Attempt(dep, "anthropic", "claude-haiku", status=status, started=1000.0 + i * 0.1)
        )
    for k, v in fields.items():
        setattr(call, k, v)
    return call


def sample(m: Metrics, name: str, **labels: str) -> float:
    v = m.registry.get_sample_value(name, labels)
    return 0.0 if v is None else v


async def test_requests_are_counted_by_feature_model_provider_and_status_class() -> None:
    m = Metrics()
    guard = MetricsGuard(m)
    await guard.after(make_call(request_id="a"), None)
    await guard.after(make_call(request_id="b"), None)
    failed = make_call(request_id="c", status=502, attempts=(("anthropic-primary", 502),))
    await guard.after(failed, UpstreamError("boom"))
    labels = {"feature": "chat", "model": "claude-haiku", "provider": "anthropic"}
    assert sample(m, "bastion_requests_total", **labels, status="2xx") == 2
    assert sample(m, "bastion_requests_total", **labels, status="5xx") == 1
    assert (
        sample(
            m, "bastion_upstream_attempts_total", deployment="anthropic-primary",
            provider="anthropic", status="5xx",
        )
        == 1
    )  # fmt: skip


async def test_latency_and_ttft_histograms_put_each_call_in_the_right_bucket() -> None:
    m = Metrics()
    m.observe_call(make_call(latency=1.2, ttft=0.4), None)
    m.observe_call(make_call(latency=25.0, ttft=None), None)
    lab = {"feature": "chat", "model": "claude-haiku"}
    name = "bastion_request_duration_seconds"
    assert sample(m, f"{name}_count", **lab) == 2
    assert sample(m, f"{name}_bucket", **lab, le="1.0") == 0
    assert sample(m, f"{name}_bucket", **lab, le="1.5") == 1
    assert sample(m, f"{name}_bucket", **lab, le="30.0") == 2
    assert sample(m, f"{name}_bucket", **lab, le="120.0") == 2
    assert sample(m, f"{name}_sum", **lab) == pytest.approx(26.2)
    # TTFT only for the call that had a first byte
    assert sample(m, "bastion_time_to_first_token_seconds_count", **lab) == 1
    assert sample(m, "bastion_time_to_first_token_seconds_bucket", **lab, le="0.3") == 0
    assert sample(m, "bastion_time_to_first_token_seconds_bucket", **lab, le="0.5") == 1


async def test_tokens_by_type_and_cost_by_feature_and_model_accumulate() -> None:
    m = Metrics()
    for rid in ("a", "b"):
        call = make_call(request_id=rid, cost_usd=0.25)
        call.usage.input_tokens = 100
        call.usage.output_tokens = 40
        call.usage.cache_read_tokens = 500
        call.usage.cache_write_tokens = 7
        m.observe_call(call, None)
    lab = {"feature": "chat", "model": "claude-haiku"}
    assert sample(m, "bastion_tokens_total", **lab, type="input") == 200
    assert sample(m, "bastion_tokens_total", **lab, type="output") == 80
    assert sample(m, "bastion_tokens_total", **lab, type="cache_read") == 1000
    assert sample(m, "bastion_tokens_total", **lab, type="cache_write") == 14
    assert sample(m, "bastion_cost_usd_total", **lab) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("deployments", "retried", "failover"),
    [
        (("d1",), 0, 0),
        (("d1", "d1"), 1, 0),
        (("d1", "d2"), 0, 1),
        (("d1", "d1", "d2"), 1, 1),
    ],
)
async def test_retries_and_failovers_are_derived_from_attempts(
    deployments: tuple[str, ...], retried: int, failover: int
) -> None:
    m = Metrics()
    m.observe_call(make_call(attempts=tuple((d, 200) for d in deployments)), None)
    lab = {"feature": "chat", "model": "claude-haiku"}
    assert sample(m, "bastion_retried_requests_total", **lab) == retried
    assert sample(m, "bastion_failover_requests_total", **lab) == failover


async def test_no_user_request_key_or_trace_id_appears_in_any_label() -> None:
    m = Metrics()
    call = make_call(request_id="req_unique_9f8e7d")
    call.conversation_id = "conv-private-1"
    m.observe_call(call, None)
    m.observe_call(make_call(request_id="req_refused_1", attempts=()), BudgetExceeded("cap"))
    body, _ = render_metrics(m)
    text = body.decode()
    for secret in (USER, "req_unique_9f8e7d", "req_refused_1", TRACE, "key_abc", "conv-private"):
        assert secret not in text
    labels = set(re.findall(r"(\w+)=\"", text))
    assert labels <= {
        "feature", "model", "provider", "status", "type", "deployment", "reason",
        "guard", "error_type", "scope", "le",
    }  # fmt: skip


async def test_label_values_beyond_the_cap_are_counted_as_other() -> None:
    m = Metrics(max_label_values=3)
    for i in range(6):
        m.observe_call(make_call(request_id=f"r{i}", feature=f"feature-{i}"), None)
    m.observe_call(make_call(request_id="again", feature="feature-0"), None)
    lab = {"model": "claude-haiku", "provider": "anthropic", "status": "2xx"}
    assert sample(m, "bastion_requests_total", feature="feature-0", **lab) == 2
    assert sample(m, "bastion_requests_total", feature="feature-2", **lab) == 1
    assert sample(m, "bastion_requests_total", feature="feature-3", **lab) == 0
    assert sample(m, "bastion_requests_total", feature="other", **lab) == 3


async def test_guard_refusals_are_counted_by_guard_and_error_type_only_before_upstream() -> None:
    m = Metrics()
    m.observe_call(make_call(attempts=(), status=429), BudgetExceeded("cap"))
    refused = make_call(attempts=(), status=400, flags={"refused_by": "token_caps"})
    m.observe_call(refused, InputTooLarge("too long"))
    # an upstream failure is not a refusal
    m.observe_call(make_call(status=502), UpstreamError("boom"))
    assert (
        sample(m, "bastion_guard_refusals_total", guard="budget", error_type="BudgetExceeded") == 1
    )
    assert (
        sample(m, "bastion_guard_refusals_total", guard="token_caps", error_type="InputTooLarge")
        == 1
    )
    assert "UpstreamError" not in render_metrics(m)[0].decode()


async def test_degraded_answers_and_stream_errors_are_counted() -> None:
    m = Metrics()
    killed = make_call(attempts=(), status=503, flags={"degraded": "kill_switch"})
    m.observe_call(killed, AIUnavailable("off", reason="kill_switch"))
    m.observe_call(make_call(request_id="d2", flags={"degraded": True}), None)
    m.observe_call(make_call(flags={"stream_error": "upstream stalled"}), None)
    assert sample(m, "bastion_degraded_total", feature="chat", reason="kill_switch") == 1
    assert sample(m, "bastion_degraded_total", feature="chat", reason="unavailable") == 1
    assert sample(m, "bastion_stream_errors_total", feature="chat", model="claude-haiku") == 1
    # a kill-switch degrade is counted as degraded, not double-counted as a refusal
    assert "bastion_guard_refusals_total{" not in render_metrics(m)[0].decode()


async def test_breaker_kill_switch_and_budget_gauges_follow_their_setters() -> None:
    m = Metrics()
    m.set_breaker_state("anthropic-primary", BreakerState.OPEN)
    m.set_breaker_state("openai-backup", "half_open")
    m.set_breaker_state("sim", "closed")
    assert sample(m, "bastion_breaker_state", deployment="anthropic-primary") == 2
    assert sample(m, "bastion_breaker_state", deployment="openai-backup") == 1
    assert sample(m, "bastion_breaker_state", deployment="sim") == 0
    with pytest.raises(ValueError):
        m.set_breaker_state("sim", "ajar")

    m.set_kill_switches(["global", "feature:chat"])
    assert sample(m, "bastion_kill_switch", scope="global") == 1
    assert sample(m, "bastion_kill_switch", scope="feature:chat") == 1
    m.set_kill_switches([])
    assert sample(m, "bastion_kill_switch", scope="global") == 0
    assert sample(m, "bastion_kill_switch", scope="feature:chat") == 0


async def test_budget_and_kill_switch_refreshers_read_the_counter_store() -> None:
    state = open_state("memory://")
    try:
        cap = Cap("spend:2024-05-01:global", 10.0, 3600.0)
        res = await state.reserve("r1", [cap], 2.5, 60.0)
        assert res.ok
        await state.settle("r1", 1.5)
        m = Metrics()
        m.add_refresher(budget_refresher(state, lambda: "2024-05-01", {"global": 10.0}))

        async def flags() -> dict[str, str]:
            return {"kill:feature:chat": "on"}

        m.add_refresher(kill_switch_refresher(flags))
        await m.refresh()
        assert sample(m, "bastion_budget_remaining_usd", scope="global") == pytest.approx(8.5)
        assert sample(m, "bastion_kill_switch", scope="feature:chat") == 1
        assert sample(m, "bastion_kill_switch", scope="global") == 0
    finally:
        await state.close()


async def test_a_failing_or_slow_refresher_is_counted_and_does_not_block_the_scrape() -> None:
    m = Metrics()

    async def broken(_: Metrics) -> None:
        raise RuntimeError("state down")

    async def slow(_: Metrics) -> None:
        await asyncio.sleep(10)

    async def good(metrics: Metrics) -> None:
        metrics.set_budget_remaining("global", 3.0)

    for fn in (broken, slow, good):
        m.add_refresher(fn)
    await asyncio.wait_for(m.refresh(timeout=0.05), timeout=2)
    assert sample(m, "bastion_metrics_refresh_errors_total") == 2
    assert sample(m, "bastion_budget_remaining_usd", scope="global") == 3


async def test_recorder_queue_spill_and_drop_counters_are_exposed(tmp_path: Path) -> None:
    rec = Recorder(store=None, spill_path=tmp_path / "spill.jsonl")  # type: ignore[arg-type]
    rec.stats.queued, rec.stats.spilled, rec.stats.dropped = 7, 3, 1
    m = Metrics()
    m.watch_recorder(rec)
    assert sample(m, "bastion_recorder_queued_total") == 7
    assert sample(m, "bastion_recorder_spilled_total") == 3
    assert sample(m, "bastion_recorder_dropped_total") == 1
    assert sample(m, "bastion_recorder_queue_depth") == 0


async def test_each_metrics_object_has_its_own_registry() -> None:
    a, b = Metrics(), Metrics()  # would raise "Duplicated timeseries" on a shared registry
    a.observe_call(make_call(), None)
    lab = {"feature": "chat", "model": "claude-haiku", "provider": "anthropic", "status": "2xx"}
    assert sample(a, "bastion_requests_total", **lab) == 1
    assert sample(b, "bastion_requests_total", **lab) == 0


async def test_render_metrics_returns_text_format_or_openmetrics_on_request() -> None:
    m = Metrics()
    m.observe_call(make_call(), None)
    body, ctype = render_metrics(m)
    assert ctype.startswith("text/plain")
    assert b"bastion_requests_total{" in body
    body, ctype = render_metrics(m, "application/openmetrics-text; version=1.0.0")
    assert ctype.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")


async def test_metrics_guard_never_fails_the_call() -> None:
    m = Metrics()
    call = make_call()
    call.usage = None  # type: ignore[assignment]  # a broken call object
    await MetricsGuard(m).after(call, None)

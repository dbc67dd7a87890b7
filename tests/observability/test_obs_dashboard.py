"""The shipped Grafana dashboard queries only metrics (and labels) that Bastion really exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from bastion.call import Attempt, Call, Principal
from bastion.observability.metrics import Metrics
from bastion.observability.recorder import Recorder
from bastion.providers.base import Format

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "bastion.json"


def exported_samples(tmp_path: Path) -> dict[str, set[str]]:
    """Every sample name the registry yields after one of everything, with its label names."""
    m = Metrics()
    call = Call(
        request_id="r",
        trace_id="0af7651916cd43dd8448eb211c80319c",
        span_id="b7ad6b7169203331",
        client_format=Format.ANTHROPIC,
        principal=Principal(key_id="k", name="k"),
        body={},
        requested_model="m",
        stream=True,
        feature="chat",
        started=1.0,
    )
    call.ended, call.first_byte, call.cost_usd, call.status = 2.0, 1.2, 0.1, 200
    call.usage.input_tokens = 1
    call.flags.update({"degraded": "all_failed", "stream_error": "cut"})
    call.attempts += [Attempt("d1", "p", "m", 500), Attempt("d1", "p", "m", 500)]
    call.attempts.append(Attempt("d2", "p", "m", 200))
    m.observe_call(call, None)
    m.refusals.labels("budget", "BudgetExceeded").inc()
    m.set_breaker_state("d1", "open")
    m.set_kill_switches(["global"])
    m.set_budget_remaining("global", 1.0)
    m.watch_recorder(Recorder(store=None, spill_path=tmp_path / "s.jsonl"))  # type: ignore[arg-type]
    out: dict[str, set[str]] = {}
    for family in m.registry.collect():
        for s in family.samples:
            out.setdefault(s.name, set()).update(s.labels)
    return out


def test_every_metric_in_the_dashboard_is_exported(tmp_path: Path) -> None:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [
        t["expr"]
        for p in dash["panels"]
        for t in p.get("targets", [])
        if isinstance(t.get("expr"), str)
    ]
    exprs += [
        v["definition"] for v in dash["templating"]["list"] if isinstance(v.get("definition"), str)
    ]
    assert len(exprs) >= 15
    samples = exported_samples(tmp_path)
    used = {name for e in exprs for name in re.findall(r"\bbastion_[a-z_]+", e)}
    missing = sorted(used - set(samples))
    assert not missing, f"dashboard queries metrics Bastion does not export: {missing}"
    # label matchers and groupings name only labels that exist on that metric
    for e in exprs:
        for metric, matchers in re.findall(r"(bastion_[a-z_]+)\{([^}]*)\}", e):
            for label in re.findall(r"(\w+)\s*=~?", matchers):
                assert label in samples[metric], f"{metric} has no label {label!r}: {e}"


def test_the_dashboard_covers_the_observability_checklist() -> None:
    dash = json.loads(DASHBOARD.read_text())
    text = "\n".join(t["expr"] for p in dash["panels"] for t in p.get("targets", []))
    for needle in (
        "bastion_requests_total",
        'status="5xx"',
        "histogram_quantile(0.95, sum by (le) (rate(bastion_request_duration_seconds_bucket",
        "histogram_quantile(0.5, sum by (le) (rate(bastion_time_to_first_token_seconds_bucket",
        "bastion_tokens_total",
        "sum by (feature) (increase(bastion_cost_usd_total",
        "bastion_retried_requests_total",
        "bastion_failover_requests_total",
        "bastion_breaker_state",
        "bastion_kill_switch",
    ):
        assert needle in text, needle

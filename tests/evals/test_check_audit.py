"""`bastion check`: a well-configured gateway passes every drill it can run; a missing cap FAILs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import typer
import yaml
from tests.conftest import write_config
from typer.testing import CliRunner

from bastion.check import ItemResult, run_check
from bastion.check.cli import check_command
from bastion.evals import parse_suite, select_model
from bastion.evals.select import apply_choice

ROOT = Path(__file__).resolve().parents[2]
# these depend on wiring outside the check package (the safety track's modules and their
# integration into the gateway); they may WARN or FAIL in a build where that is unfinished
OTHER_TRACKS = {"PII filtered before logging", "Prompt-injection-aware prompt structure"}

GOOD: dict[str, Any] = {
    "providers": {
        "anthropic": {"kind": "anthropic", "api_key_env": "ANTHROPIC_API_KEY"},
        "openai": {"kind": "openai", "api_key_env": "OPENAI_API_KEY"},
    },
    "models": {
        "claude-sonnet-5": {
            "deployments": [
                {
                    "provider": "anthropic",
                    "model": "claude-sonnet-5",
                    "timeouts": {"first_token": 10},
                },
                {"provider": "openai", "model": "gpt-4.1", "timeouts": {"first_token": 10}},
            ]
        },
        "claude-haiku-5-5": {
            "deployments": [
                {
                    "provider": "anthropic",
                    "model": "claude-haiku-5-5",
                    "timeouts": {"first_token": 10},
                },
                {"provider": "openai", "model": "gpt-4.1-mini", "timeouts": {"first_token": 10}},
            ]
        },
    },
    "cost": {
        "caps": {"global_daily_usd": 20},
        "provider_caps_usd": {"anthropic": 25, "openai": 25},
        "rate_limits": {"per_user": {"calls_per_day": 200, "requests_per_minute": 20}},
        "alerts": {"webhooks": ["https://hooks.example.com/bastion"], "forecast_usd": 10},
    },
    "features": {
        "default": {"degraded": {"mode": "message"}},
        "drafts": {"degraded": {"mode": "message"}},
    },
}


def _by_item(results: list[ItemResult]) -> dict[str, ItemResult]:
    return {r.item: r for r in results}


async def _pin_cheapest(cfg: Path, sim_cfg: Path) -> None:
    """Select on the simulator (the real providers have no keys here), pin in the real config."""
    suite = parse_suite(
        {
            "name": "drafts",
            "cases": [
                {
                    "id": "a",
                    "messages": [{"role": "user", "content": "x"}],
                    "sim_reply": "30 days",
                    "assert": [{"contains": "30 days"}],
                }
            ],
        }
    )
    sel = await select_model(suite, sim_cfg, "drafts", ["claude-sonnet-5", "claude-haiku-5-5"])
    apply_choice(sel, cfg)


async def test_a_well_configured_gateway_passes_every_drill_it_can_run(tmp_path: Path) -> None:
    cfg = tmp_path / "good.yaml"
    cfg.write_text(yaml.safe_dump(GOOD))
    await _pin_cheapest(cfg, write_config(tmp_path))
    results = await run_check(cfg, project_dir=ROOT)
    assert len(results) == 23
    for r in results:
        assert not any("check crashed" in e for e in r.evidence), (r.item, r.evidence)
        if r.item not in OTHER_TRACKS:
            assert r.status == "PASS", (r.item, r.evidence)
    items = _by_item(results)
    assert any("drill:" in e for e in items["Hard daily $ cap (app code + provider)"].evidence)
    assert any(
        "served by openai/" in e for e in items["Secondary provider failover (tested)"].evidence
    )
    assert any("degraded message" in e for e in items["Kill switch toggle exists"].evidence)
    assert any("TTFT" in e for e in items["TTFT measured"].evidence)
    assert any(
        "claude-haiku-5-5 chosen" in e for e in items["Cheapest model that passes evals"].evidence
    )


async def test_a_config_without_caps_fails_the_cap_item(tmp_path: Path) -> None:
    bare = {
        "providers": {"sim": {"kind": "sim"}},
        "models": {"sim-*": {"deployments": [{"provider": "sim", "model": "{model}"}]}},
    }
    cfg = tmp_path / "bare.yaml"
    cfg.write_text(yaml.safe_dump(bare))
    results = _by_item(await run_check(cfg, project_dir=tmp_path))
    cap = results["Hard daily $ cap (app code + provider)"]
    assert cap.status == "FAIL" and "no daily $ cap" in cap.evidence[0]
    # the mechanism itself still works when a cap is set: the drill proves it
    assert any(e.startswith("drill:") for e in cap.evidence)
    assert results["Per-user rate limit"].status == "FAIL"
    assert results["Secondary provider failover (tested)"].status == "FAIL"
    assert results["Eval suite in CI, blocking on regression"].status == "FAIL"


def test_the_command_exits_non_zero_on_a_fail_and_speaks_json(tmp_path: Path) -> None:
    cfg = tmp_path / "bare.yaml"
    cfg.write_text(yaml.safe_dump({"providers": {"sim": {"kind": "sim"}}, "models": {}}))
    app = typer.Typer()
    app.command()(check_command)
    res = CliRunner().invoke(app, ["--config", str(cfg), "--json", "--only", "cost", "--no-drills"])
    assert res.exit_code == 1, res.output
    data = orjson.loads(res.stdout)
    assert data["ok"] is False and {i["track"] for i in data["items"]} == {"Cost"}
    table = CliRunner().invoke(app, ["--config", str(cfg), "--only", "kill switch"])
    assert table.exit_code == 0 and "PASS" in table.output

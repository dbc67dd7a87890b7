"""The cheapest model that passes is chosen on measured cost, and pinned in the config with evidence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from tests.conftest import sim_models, write_config

from bastion.config import load_config
from bastion.evals import parse_suite, select_model, set_feature_model
from bastion.evals.select import SimulatedEvidence, apply_choice, evidence_path

SUITE: dict[str, Any] = {
    "name": "drafts",
    "prompt_version": "v1",
    "defaults": {"max_tokens": 64},
    "cases": [
        {
            "id": f"answer-{i}",
            "messages": [{"role": "user", "content": f"Question {i}: what is the refund window?"}],
            "sim_reply": "Refunds are accepted within 30 days of purchase.",
            "assert": [{"contains": "30 days"}, {"max_cost_usd": 0.01}],
        }
        for i in range(3)
    ],
}


def _config(tmp: Path) -> Path:
    models = sim_models(
        {
            # the cheapest price of all, but its provider refuses every call
            "nano-broken": {
                "deployments": [
                    {
                        "provider": "sim",
                        "model": "gpt-4.1-nano",
                        "headers": {"x-sim-fault": "content_policy"},
                    }
                ]
            }
        }
    )
    return write_config(
        tmp, models=models, features={"default": {}, "drafts": {"max_tokens_default": 300}}
    )


async def test_the_cheapest_passing_candidate_wins_on_measured_cost(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    sel = await select_model(
        parse_suite(SUITE),
        cfg,
        "drafts",
        ["claude-sonnet-5", "nano-broken", "claude-haiku-5-5", "gpt-4.1"],
        epochs=2,
    )
    by = {c.model: c for c in sel.candidates}
    assert not by["nano-broken"].qualifies and "must-pass" in by["nano-broken"].reason
    assert by["claude-haiku-5-5"].cost_per_case < by["gpt-4.1"].cost_per_case
    assert by["gpt-4.1"].cost_per_case < by["claude-sonnet-5"].cost_per_case
    assert all(c.cost_per_case > 0 for c in sel.candidates if c.qualifies)
    assert sel.choice == "claude-haiku-5-5"
    served = {e.served_model for c in by["claude-haiku-5-5"].run.cases for e in c.epochs}
    assert served == {"claude-haiku-5-5"}


async def test_a_candidate_far_below_the_best_score_does_not_qualify(tmp_path: Path) -> None:
    suite = dict(SUITE)
    suite["cases"] = [
        {
            **c,
            "assert": [*c["assert"], {"contains": "purchase", "name": "soft"}],
            "must_pass": False,
        }
        for c in SUITE["cases"]
    ]
    cfg = _config(tmp_path)
    sel = await select_model(parse_suite(suite), cfg, "drafts", ["nano-broken", "claude-haiku-5-5"])
    by = {c.model: c for c in sel.candidates}
    assert not by["nano-broken"].qualifies and "best" in by["nano-broken"].reason
    assert sel.choice == "claude-haiku-5-5"


async def test_apply_pins_the_feature_model_and_writes_evidence(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    text = cfg.read_text()
    cfg.write_text("# production gateway\n" + text)
    sel = await select_model(
        parse_suite(SUITE), cfg, "drafts", ["claude-sonnet-5", "claude-haiku-5-5"]
    )
    with pytest.raises(SimulatedEvidence, match="evidence is simulated"):
        apply_choice(sel, cfg)
    assert sel.simulated and orjson.loads(orjson.dumps(sel.to_dict()))["simulated"] is True
    applied = apply_choice(sel, cfg, allow_simulated=True)
    path, ev = applied.config, applied.evidence
    new = path.read_text()
    assert new.startswith("# production gateway\n")
    loaded = load_config(path)
    assert loaded.features["drafts"].model == "claude-haiku-5-5"
    assert loaded.features["drafts"].max_tokens_default == 300
    assert ev == evidence_path(cfg, "drafts") and ev.exists()
    data = orjson.loads(ev.read_bytes())
    assert data["choice"] == "claude-haiku-5-5" and len(data["candidates"]) == 2


def test_the_yaml_edit_touches_only_the_model_line() -> None:
    text = (
        "# top comment\n"
        "providers:\n  sim: {kind: sim}   # inline\n"
        "features:\n"
        "  default:\n    deadline: 30\n"
        "  drafts:\n    model: claude-sonnet-5  # was flagship\n    deadline: 20\n"
        "store:\n  url: sqlite:///x.db\n"
    )
    out = set_feature_model(text, "drafts", "claude-haiku-5-5")
    assert out.splitlines()[7] == "    model: claude-haiku-5-5  # was flagship"
    assert [ln for ln in out.splitlines() if "model" not in ln] == [
        ln for ln in text.splitlines() if "model" not in ln
    ]
    added = set_feature_model(text, "support", "m2")
    assert yaml.safe_load(added)["features"]["support"] == {"model": "m2"}
    assert "# top comment" in added and "# inline" in added
    fresh = set_feature_model("providers:\n  sim: {kind: sim}\n", "x", "m3")
    assert yaml.safe_load(fresh)["features"] == {"x": {"model": "m3"}}
    inline = set_feature_model("features: {drafts: {deadline: 5}}\n", "drafts", "m4")
    assert yaml.safe_load(inline)["features"]["drafts"] == {"deadline": 5, "model": "m4"}


async def test_on_the_quality_simulator_a_cheaper_model_that_drops_facts_is_not_chosen(
    tmp_path: Path,
) -> None:
    """Simulated answers now differ by model, so selection is no longer on price alone."""
    suite = parse_suite(
        {
            "name": "kb",
            "judge": "sim-judge",
            "templates": {"kb": {"instructions": "Answer from the documents. Cite them by id."}},
            "defaults": {"max_tokens": 200, "must_pass": False},
            "cases": [
                {
                    "id": f"q{i}",
                    "template": "kb",
                    "user_content": f"Question {i}?",
                    "docs": [{"id": f"d{i}", "text": f"Refunds within {10 + i} days."}],
                    "facts": [f"refunds within {10 + i} days", f"policy {i} covers gifts"],
                    "assert": [{"rubric": {"rubric": "facts, cited", "citations": True}}],
                }
                for i in range(6)
            ],
        }
    )
    sel = await select_model(
        suite, _config(tmp_path), "drafts", ["claude-sonnet-5", "claude-haiku-5-5"], epochs=5
    )
    by = {c.model: c for c in sel.candidates}
    assert by["claude-haiku-5-5"].cost_per_case < by["claude-sonnet-5"].cost_per_case
    assert not by["claude-haiku-5-5"].qualifies and "best" in by["claude-haiku-5-5"].reason
    assert sel.choice == "claude-sonnet-5" and sel.simulated

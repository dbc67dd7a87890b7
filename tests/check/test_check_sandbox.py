"""Drills run on a sandbox built from the user's config: a defence switched off (or only flagging)
there fails (or warns) its drill, whatever the library could do."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.check import run_check
from bastion.config import Config

MODELS = {"claude-sonnet-5": {"deployments": [{"provider": "sim", "model": "claude-sonnet-5"}]}}


def _item(safety: dict[str, Any], item: str) -> Any:
    cfg = Config.model_validate(
        {
            "providers": {"sim": {"kind": "sim"}},
            "models": MODELS,
            "features": {"default": {"safety": safety}, "drafts": {"safety": safety}},
        }
    )
    (res,) = asyncio.run(run_check(cfg, project_dir=Path("/nonexistent"), only=item))
    return res


@settings(max_examples=25, deadline=None)
@given(
    user=st.sampled_from(["off", "flag", "block"]),
    doc=st.sampled_from(["flag", "block", "drop"]),
)
def test_the_injection_drill_follows_the_features_own_settings(user: str, doc: str) -> None:
    res = _item({"injection_action": user, "injection_doc_action": doc}, "safety.injection")
    drafts = [e for e in res.evidence if "drill [drafts]" in e]
    assert len(drafts) == 2, res.evidence
    if user == "off":
        expected = "FAIL"  # nothing scans: the simulated model follows the injected tool result
    elif doc == "flag":
        expected = "WARN"  # scanned and flagged, yet it reached the model
    else:
        expected = "PASS"
    assert res.status == expected, res.evidence
    assert ("drafts" in res.failing_features) == (expected != "PASS")
    assert [e for e in res.evidence if "drill [default]" in e] == [
        e.replace("[drafts]", "[default]") for e in drafts
    ]


def test_a_feature_switched_off_under_a_guarded_default_fails_since_off_means_off() -> None:
    cfg = Config.model_validate(
        {
            "providers": {"sim": {"kind": "sim"}},
            "models": MODELS,
            "features": {"default": {}, "drafts": {"safety": {"injection_action": "off"}}},
        }
    )
    (res,) = asyncio.run(run_check(cfg, project_dir=Path("/nonexistent"), only="safety.injection"))
    assert res.status == "FAIL" and res.failing_features == ["drafts"], res.evidence
    assert any("injection scanning off" in e and "drafts" in e for e in res.evidence)
    # the drill shows what runs: drafts is not scanned, the default feature still is
    assert not any(e.startswith("drill [drafts]") and "withheld" in e for e in res.evidence), (
        res.evidence
    )


@settings(max_examples=12, deadline=None)
@given(
    leak=st.sampled_from(["off", "flag", "redact", "block"]),
    sql_action=st.sampled_from([None, "flag", "block"]),
)
def test_the_output_drills_follow_the_features_own_settings(
    leak: str, sql_action: str | None
) -> None:
    safety: dict[str, Any] = {"leak_action": leak}
    if sql_action is not None:
        safety |= {"sql_tools": {"run_sql": "query"}, "sql_action": sql_action}
    res = _item(safety, "safety.output_validation")
    leak_line = next(e for e in res.evidence if "drill [drafts]: an answer repeating" in e)
    assert leak_line.startswith({"off": "fail", "flag": "warn"}.get(leak, "drill")), leak_line
    sql_lines = [e for e in res.evidence if "drill [drafts]: a model-written DELETE" in e]
    if sql_action is None:
        assert not sql_lines and any("no feature declares SQL tools" in e for e in res.evidence)
    else:
        (line,) = sql_lines
        assert ("withheld" in line) == (sql_action == "block"), line
    expected = (
        "FAIL" if leak == "off" else "WARN" if leak == "flag" or sql_action != "block" else "PASS"
    )
    assert res.status == expected, res.evidence

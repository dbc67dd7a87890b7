"""`bastion check` on the command line: piped output never wraps, --no-drills runs and prints no
drill, failing features are named, and what Bastion merely offers is INFO, never PASS."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import yaml
from hypothesis import given
from hypothesis import strategies as st
from tests.check._check_fixtures import good_config, mutate, write_config, write_project
from tests.conftest import free_port

from bastion.check import ItemResult

BIN = Path(sys.executable).parent
CLOSED = f"http://127.0.0.1:{free_port()}/hook"  # bound and released: nothing listens
NO_GATE = "nothing in CI runs `bastion eval run SUITE --gate` so that a regression fails the build"


def _check(*args: str, env_keys: bool = True) -> subprocess.CompletedProcess[str]:
    env = {"PATH": str(BIN), "HOME": "/tmp", "COLUMNS": "80"}
    if env_keys:
        env |= {"CHECK_TEST_ANTHROPIC_KEY": "sk-ant", "CHECK_TEST_OPENAI_KEY": "sk"}
    return subprocess.run(
        [str(BIN / "bastion"), "check", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def test_piped_output_keeps_every_evidence_line_whole(tmp_path: Path) -> None:
    project = write_project(tmp_path, ci=None)
    cfg = write_config(tmp_path, good_config(tmp_path, CLOSED))
    res = _check("--config", str(cfg), "--project", str(project), "--no-drills")
    assert res.returncode == 1, res.stderr
    lines = res.stdout.splitlines()
    # a pipe is not a terminal: even at COLUMNS=80 the long FAIL sentence stays on one line
    assert any(NO_GATE in line for line in lines), res.stdout[-3000:]
    assert any("CHECK_TEST_ANTHROPIC_KEY is set" in line for line in lines)


def test_no_drills_runs_and_prints_no_drill(tmp_path: Path) -> None:
    project = write_project(tmp_path, app_code="x = 1\n")
    cfg = write_config(tmp_path, good_config(tmp_path, CLOSED))
    res = _check("--config", str(cfg), "--project", str(project), "--no-drills", "--json")
    items = orjson.loads(res.stdout)["items"]
    assert len(items) == 24
    for item in items:
        assert not any(d in e for d in ("drill:", "drill [", "drill (") for e in item["evidence"])
    # without drills nothing is posted to the webhook, so it stays unverified
    alerts = next(i for i in items if i["id"] == "cost.spend_alerts")
    assert alerts["status"] == "WARN" and "unverified" in alerts["evidence"][-1]
    # library helpers the app is not seen using are offers (INFO), and the item is not PASS
    for item_id in ("safety.rag_authorization", "safety.tool_sandbox", "latency.parallel_tools"):
        item = next(i for i in items if i["id"] == item_id)
        assert item["status"] == "WARN", item
        assert any(e.startswith("info: Bastion offers:") for e in item["evidence"]), item


def test_json_names_the_feature_pinned_to_a_single_deployment(tmp_path: Path) -> None:
    project = write_project(tmp_path)
    data = good_config(tmp_path, CLOSED)
    data = mutate(data, "models.solo", {"deployments": [{"provider": "anthropic", "model": "x"}]})
    data = mutate(data, "features.drafts.model", "solo")
    cfg = write_config(tmp_path, data)
    res = _check("--config", str(cfg), "--project", str(project), "--json", "--only", "failover")
    assert res.returncode == 1, res.stderr
    (item,) = orjson.loads(res.stdout)["items"]
    assert item["status"] == "FAIL" and item["failing_features"] == ["drafts"]
    assert any("feature drafts: no secondary deployment for solo" in e for e in item["evidence"])
    # the same in the table, the feature under the status
    table = _check("--config", str(cfg), "--project", str(project), "--only", "failover")
    assert "drafts" in table.stdout and "FAIL" in table.stdout
    # evidence is text: a feature name in brackets is printed, not read as a style
    hang = _check("--config", str(cfg), "--project", str(project), "--only", "timeout_fallback")
    assert "drill [default]: primary of claude-haiku-5-5 hung" in hang.stdout, hang.stdout


def test_a_config_error_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump({"cost": {"provider_caps_period": {"openai": "week"}}}))
    res = _check("--config", str(cfg), "--no-drills")
    assert res.returncode == 2 and "provider_caps_period" in res.stderr


@given(st.lists(st.sampled_from(["INFO", "WARN", "FAIL"]), min_size=1, max_size=8))
def test_info_lines_never_make_an_item_pass(statuses: list[str]) -> None:
    r = ItemResult("x.y", "T", "item")
    for s in statuses:
        r.add(s, "line")  # type: ignore[arg-type]
    assert r.status != "PASS"
    assert r.status == max(statuses, key=["INFO", "WARN", "FAIL"].index)

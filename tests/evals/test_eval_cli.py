"""`bastion eval run|bless|select` on the command line: files written, exit codes that gate CI."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import orjson
import yaml
from tests.conftest import write_config
from typer.testing import CliRunner

from bastion.evals.cli import eval_app

SUITE: dict[str, Any] = {
    "name": "cli",
    "prompt_version": "v1",
    "defaults": {"model": "claude-sonnet-5", "max_tokens": 64},
    "cases": [
        {
            "id": "greets",
            "messages": [{"role": "user", "content": "greet"}],
            "sim_reply": "Hello there!",
            "assert": [{"contains": "hello"}],
        },
        {
            "id": "soft-check",
            "must_pass": False,
            "messages": [{"role": "user", "content": "json please"}],
            "sim_reply": '{"ok": true}',
            "assert": [{"json_schema": {"type": "object", "required": ["ok"]}}],
        },
    ],
}


def _write_suite(tmp: Path, reply: str = "Hello there!") -> Path:
    data = {**SUITE, "cases": [{**SUITE["cases"][0], "sim_reply": reply}, SUITE["cases"][1]]}
    p = tmp / "cli.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_run_writes_json_and_junit_and_the_gate_blocks_a_regression(tmp_path: Path) -> None:
    runner = CliRunner()
    cfg = write_config(tmp_path)
    suite = _write_suite(tmp_path)
    base = tmp_path / "baselines"
    blessed = runner.invoke(
        eval_app, ["bless", str(suite), "--config", str(cfg), "--baselines", str(base)]
    )
    assert blessed.exit_code == 0, blessed.output
    assert (base / "cli__claude-sonnet-5__v1.json").exists()

    out, junit = tmp_path / "r.json", tmp_path / "r.xml"
    args = ["run", str(suite), "-c", str(cfg), "--gate", "--baselines", str(base)]
    ok = runner.invoke(eval_app, [*args, "--out", str(out), "--junit", str(junit), "--epochs", "2"])
    assert ok.exit_code == 0, ok.output
    data = orjson.loads(out.read_bytes())
    assert data["summary"]["passed"] == 2 and data["gate"]["ok"] is True
    # --epochs 2 is below the suite's gate minimum (5 by default): the gate raises it
    assert data["epochs"] == 5 and len(data["cases"][0]["epochs"]) == 5
    assert "raised from 2 to the suite's minimum 5" in ok.output
    assert data["design"]["seeds"] == [f"0-{n}" for n in range(5)]
    tree = ET.parse(junit).getroot()
    suite_el = tree.find("testsuite")
    assert suite_el is not None
    assert suite_el.get("tests") == "3" and suite_el.get("failures") == "0"  # 2 cases + gate

    _write_suite(tmp_path, reply="Goodbye.")
    bad = runner.invoke(eval_app, [*args, "--junit", str(junit)])
    assert bad.exit_code == 1
    assert "REGRESSION" in bad.output and "greets" in bad.output
    failure = ET.parse(junit).getroot().find("testsuite/testcase/failure")
    assert failure is not None and "contains:hello" in (failure.get("message") or "")
    # the gate's verdict is a failing test case of its own, so JUnit-only CI sees the block
    suite_el = ET.parse(junit).getroot().find("testsuite")
    assert suite_el is not None and suite_el.get("failures") == "2"
    gate_case = suite_el.find("testcase[@name='gate']")
    assert gate_case is not None
    gate_fail = gate_case.find("failure")
    assert gate_fail is not None and "greets (pass_to_fail)" in (gate_fail.text or "")


def test_bless_refuses_a_run_with_failing_must_pass_cases(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    suite = _write_suite(tmp_path, reply="nope")
    res = CliRunner().invoke(
        eval_app, ["bless", str(suite), "-c", str(cfg), "--baselines", str(tmp_path / "b")]
    )
    assert res.exit_code == 1 and "not blessed" in res.output
    assert not (tmp_path / "b").exists()


def _select(tmp_path: Path, cfg: Path, *extra: str) -> Any:
    suite = _write_suite(tmp_path)
    return CliRunner().invoke(
        eval_app,
        [
            "select",
            str(suite),
            "--feature",
            "cli",
            "--candidates",
            "claude-sonnet-5,claude-haiku-5-5",
            "--apply",
            str(cfg),
            *extra,
        ],
    )


def test_select_refuses_to_apply_simulated_evidence_without_consent(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, features={"default": {}, "cli": {}})
    before = cfg.read_text()
    res = _select(tmp_path, cfg)
    assert res.exit_code == 2, res.output
    assert "evidence is simulated" in res.output and "--allow-simulated" in res.output
    assert cfg.read_text() == before
    assert not list(tmp_path.glob("*.bak")) and not list(tmp_path.glob("*.diff"))


def test_select_applies_with_consent_and_writes_a_diff_and_a_backup(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, features={"default": {}, "cli": {}})
    before = cfg.read_text()
    res = _select(tmp_path, cfg, "--allow-simulated")
    assert res.exit_code == 0, res.output
    assert "choice: claude-haiku-5-5" in res.output
    assert yaml.safe_load(cfg.read_text())["features"]["cli"]["model"] == "claude-haiku-5-5"
    (backup,) = tmp_path.glob("bastion.yaml.*.bak")
    assert backup.read_text() == before
    diff = (tmp_path / "bastion.select.cli.diff").read_text()
    assert "+    model: claude-haiku-5-5" in diff and diff.startswith("--- a/bastion.yaml")
    evidence = orjson.loads((tmp_path / "bastion.select.cli.json").read_bytes())
    assert evidence["simulated"] is True and evidence["backup"] == str(backup)
    assert all(c["simulated"] for c in evidence["candidates"])


def test_a_bad_suite_is_a_clear_usage_error(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("cases:\n  - id: x\n    user_content: hi\n    assert: [{contains: a, regex: b}]\n")
    res = CliRunner().invoke(eval_app, ["run", str(p)])
    assert res.exit_code == 2 and "exactly one" in res.output


def test_run_writes_an_html_report_and_reuses_the_response_cache(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    suite = _write_suite(tmp_path)
    base, cache, page = tmp_path / "b", tmp_path / "cache", tmp_path / "r.html"
    assert (
        CliRunner()
        .invoke(eval_app, ["bless", str(suite), "-c", str(cfg), "--baselines", str(base)])
        .exit_code
        == 0
    )
    _write_suite(tmp_path, reply="Goodbye.")
    args = ["run", str(suite), "-c", str(cfg), "--baselines", str(base), "--seed", "4"]
    first = CliRunner().invoke(
        eval_app, [*args, "--gate", "--html", str(page), "--cache", str(cache)]
    )
    assert first.exit_code == 1
    html = page.read_text()
    assert "gate: FAIL" in html and "Goodbye." in html and 'class="del"' in html
    out = tmp_path / "again.json"
    again = CliRunner().invoke(eval_app, [*args, "--cache", str(cache), "--out", str(out)])
    assert again.exit_code == 1  # the must-pass case still fails, now from the cache
    notes = orjson.loads(out.read_bytes())["notes"]
    assert "response cache: 2 hit(s), 0 miss(es)" in notes

"""`bastion eval run|bless|select` on the command line: files written, exit codes that gate CI."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import orjson
import yaml
from tests.conftest import write_config
from typer.testing import CliRunner

from bastion.evals.cli import eval_app

SUITE = {
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
    assert data["epochs"] == 2 and len(data["cases"][0]["epochs"]) == 2
    tree = ET.parse(junit).getroot()
    assert tree.find("testsuite").get("tests") == "2"  # type: ignore[union-attr]

    _write_suite(tmp_path, reply="Goodbye.")
    bad = runner.invoke(eval_app, [*args, "--junit", str(junit)])
    assert bad.exit_code == 1
    assert "REGRESSION" in bad.output and "greets" in bad.output
    failure = ET.parse(junit).getroot().find("testsuite/testcase/failure")
    assert failure is not None and "contains:hello" in (failure.get("message") or "")


def test_bless_refuses_a_run_with_failing_must_pass_cases(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    suite = _write_suite(tmp_path, reply="nope")
    res = CliRunner().invoke(
        eval_app, ["bless", str(suite), "-c", str(cfg), "--baselines", str(tmp_path / "b")]
    )
    assert res.exit_code == 1 and "not blessed" in res.output
    assert not (tmp_path / "b").exists()


def test_select_prints_the_choice_and_applies_it(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, features={"default": {}, "cli": {}})
    suite = _write_suite(tmp_path)
    res = CliRunner().invoke(
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
        ],
    )
    assert res.exit_code == 0, res.output
    assert "choice: claude-haiku-5-5" in res.output
    assert yaml.safe_load(cfg.read_text())["features"]["cli"]["model"] == "claude-haiku-5-5"


def test_a_bad_suite_is_a_clear_usage_error(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("cases:\n  - id: x\n    user_content: hi\n    assert: [{contains: a, regex: b}]\n")
    res = CliRunner().invoke(eval_app, ["run", str(p)])
    assert res.exit_code == 2 and "exactly one" in res.output

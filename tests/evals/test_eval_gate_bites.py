"""Issue #17, done when: on the simulator at CI settings the gate catches a weaker model and a
dropped "cite documents" instruction, and raises no false alarm on a no-op change over 20 seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import yaml
from tests.conftest import sim_models, write_config
from typer.testing import CliRunner

from bastion.evals import (
    RunResult,
    bless,
    gate,
    open_gateway,
    parse_suite,
    read_result,
    run_suite,
)
from bastion.evals.cli import eval_app

CITE = "Answer the question from the documents. Cite documents by id in square brackets."
NO_CITE = "Answer the question from the documents."


def _suite_data(instructions: str = CITE) -> dict[str, Any]:
    cases = [
        {
            "id": f"policy-{i}",
            "template": "kb",
            "user_content": f"Question {i}: what does the policy say?",
            "docs": [{"id": f"doc-{i}", "text": f"Policy {i}: refunds within {10 + i} days."}],
            "facts": [f"refunds within {10 + i} days", f"policy {i} covers every order"],
            "assert": [
                {
                    "rubric": {
                        "rubric": "States the policy's facts and cites the document.",
                        "citations": True,
                        "threshold": 0.7,
                    }
                }
            ],
        }
        for i in range(6)
    ]
    # no gate settings: the CI settings are the suite defaults (min_epochs 5, margin 0.05, alpha 0.05)
    return {
        "name": "kb",
        "judge": "sim-judge",
        "templates": {"kb": {"instructions": instructions}},
        "sim": {"judge_noise": 0.05},
        "defaults": {"model": "assistant", "max_tokens": 200, "must_pass": False},
        "cases": cases,
    }


def _config(tmp: Path, model: str) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    alias = {"assistant": {"deployments": [{"provider": "sim", "model": model}]}}
    return write_config(tmp, models=sim_models(alias))


def _cli(*args: str) -> Any:
    return CliRunner().invoke(eval_app, list(args), env={"COLUMNS": "240"})


def _write(tmp: Path, name: str, data: dict[str, Any]) -> Path:
    p = tmp / name
    p.write_text(yaml.safe_dump(data))
    return p


def test_the_gate_catches_a_weaker_model_behind_the_same_alias(tmp_path: Path) -> None:
    suite = _write(tmp_path, "kb.yaml", _suite_data())
    base = tmp_path / "baselines"
    strong = _config(tmp_path / "strong", "claude-sonnet-5")
    weak = _config(tmp_path / "weak", "claude-haiku-5-5")
    blessed = _cli("bless", str(suite), "-c", str(strong), "--baselines", str(base), "--seed", "1")
    assert blessed.exit_code == 0, blessed.output
    args = ["run", str(suite), "--gate", "--baselines", str(base), "--seed", "2"]
    same = _cli(*args, "-c", str(strong))
    assert same.exit_code == 0, same.output
    out = tmp_path / "weak.json"
    cheaper = _cli(*args, "-c", str(weak), "--out", str(out))
    assert cheaper.exit_code == 1, cheaper.output
    kinds = {r["kind"] for r in orjson.loads(out.read_bytes())["gate"]["regressions"]}
    assert kinds & {"score_drop", "suite_score_drop"}, kinds


def test_the_gate_catches_a_prompt_that_drops_the_cite_instruction(tmp_path: Path) -> None:
    base = tmp_path / "baselines"
    cfg = _config(tmp_path, "claude-sonnet-5")
    suite = _write(tmp_path, "kb.yaml", _suite_data(CITE))
    assert _cli("bless", str(suite), "-c", str(cfg), "--baselines", str(base)).exit_code == 0
    dropped = _write(tmp_path, "kb.yaml", _suite_data(NO_CITE))
    out = tmp_path / "dropped.json"
    res = _cli(
        "run", str(dropped), "-c", str(cfg), "--gate", "--baselines", str(base), "--out", str(out)
    )
    assert res.exit_code == 1, res.output
    verdict = orjson.loads(out.read_bytes())["gate"]
    assert "compared with the newest" in verdict["notes"][0]  # new prompt version, old baseline
    failed = [r for r in verdict["regressions"] if r["kind"] == "pass_to_fail"]
    assert len(failed) == 6 and all(r["p_value"] < 0.05 for r in failed)
    assert "no citation" in res.output  # the table says why, without --out


async def _run(cfg: Path, data: dict[str, Any], seed: int) -> RunResult:
    suite = parse_suite(data)
    async with open_gateway(cfg, suite) as gw:
        return await run_suite(suite, gw, epochs=suite.gate.min_epochs, seed=seed)


async def test_a_no_op_change_raises_no_false_alarm_over_20_seeds(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "claude-sonnet-5")
    data = _suite_data()
    spec = parse_suite(data).gate
    drops = 0
    for seed in range(20):
        root = tmp_path / f"b{seed}"
        bless(await _run(cfg, data, seed), root)
        current = await _run(cfg, data, 1000 + seed)  # same model and prompt, fresh samples
        report = gate(
            current,
            root=root,
            margin=spec.margin,
            alpha=spec.alpha,
            min_epochs=spec.min_epochs,
        )
        assert report.ok, (seed, report.to_dict())
        assert not any("same seeds" in n for n in report.notes)
        assert report.baseline is not None
        drops += current.mean_score < read_result(report.baseline).mean_score
    assert 0 < drops < 20  # the samples really differed: the gate passed noise, not copies

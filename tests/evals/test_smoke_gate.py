"""CI runs the shipped smoke suite against the simulator through the gate, on every change.

A change that breaks a smoke case (or drags its score down) fails this test exactly as
`bastion eval run evals/smoke.yaml --gate` fails a CI job; after an intended change,
re-bless with `bastion eval bless evals/smoke.yaml` and commit the baseline.
"""

from __future__ import annotations

from pathlib import Path

from tests.conftest import write_config

from bastion.evals import gate, load_suite, open_gateway, run_suite

ROOT = Path(__file__).resolve().parents[2]


async def test_the_smoke_suite_passes_the_gate_against_its_blessed_baseline(tmp_path: Path) -> None:
    suite = load_suite(ROOT / "evals" / "smoke.yaml")
    async with open_gateway(write_config(tmp_path), suite) as gw:
        result = await run_suite(suite, gw, epochs=1)
    assert not result.must_pass_failures, [c.failed_assertions for c in result.failed]
    report = gate(result, root=ROOT / "evals" / "baselines", require_baseline=True)
    assert report.baseline is not None and report.baseline.name.startswith("smoke__")
    assert report.ok, [r.detail for r in report.regressions]

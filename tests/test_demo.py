"""``bastion demo``: every incident plays and proves itself, and the demo fails when one does not."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console
from typer.testing import CliRunner

from bastion import demo_eval
from bastion.cli import app
from bastion.demo import Played, exit_code, run_demo, select, summary
from bastion.demo_incidents import INCIDENTS, Outcome

TITLES = [i.title for i in INCIDENTS]


def test_bastion_demo_plays_every_incident_with_its_evidence(tmp_path: Path) -> None:
    t0 = time.monotonic()
    proc = _bastion("demo", cwd=tmp_path)
    took = time.monotonic() - t0
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    n = len(INCIDENTS)
    for i, title in enumerate(TITLES, 1):
        assert f"[{i}/{n}] {title} ..." in out  # the line as it starts
        assert f"[{i}/{n}] ok     {title} (" in out  # and as it finishes
    table = out[out.index("What Bastion did") :]
    for header in ("incident", "what Bastion did", "evidence"):
        assert header in table
    for title in TITLES:
        assert title in table
    rows = [line for line in table.splitlines() if line.startswith("│")]
    evidence = "\n".join(rows)
    # call-level incidents show a record, a trace and a metric line each; the eval its gate
    assert evidence.count(" record req_") >= n - 1
    assert evidence.count(" trace ") >= n - 1
    for series in (
        "bastion_budget_remaining_usd",
        "bastion_failover_requests_total",
        "bastion_stream_errors_total",
        "bastion_safety_findings_total",
        "bastion_kill_switch",
    ):
        assert f"metric {series}{{" in evidence
    assert "regression suite_score_drop" in evidence or "regression score_drop" in evidence
    assert "4111 1111 1111 1111" not in out  # the card number is in no output either
    assert f"{n}/{n} incidents behaved as claimed" in out
    assert list(tmp_path.iterdir()) == []  # everything lived in a temporary folder
    assert took < 60, f"the demo took {took:.1f} s"  # sanity bound (the demo takes a few)


def _bastion(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION")}
    env["COLUMNS"] = "400"  # typer's error box stays on one line
    return subprocess.run(
        [sys.executable, "-m", "bastion.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_kept_evidence_can_be_looked_up_with_bastion_trace(tmp_path: Path) -> None:
    kept = tmp_path / "kept"
    demo = _bastion("demo", "--only", "pii", "--keep", str(kept), cwd=tmp_path)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    trace = re.search(r"trace ([0-9a-f]{32})", demo.stdout)
    record = re.search(r"record (req_[0-9a-f]{32})", demo.stdout)
    assert trace and record, demo.stdout
    found = _bastion("trace", trace[1], "--config", str(kept / "bastion.yaml"), cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    assert record[1] in found.stdout and "findings=pii:redacted" in found.stdout
    again = _bastion("demo", "--only", "pii", "--keep", str(kept), cwd=tmp_path)
    assert again.returncode == 2 and "already holds a demo" in again.stderr


def _no_fallback(alias: str) -> Any:
    def edit(data: dict[str, Any]) -> None:
        data["models"][alias]["deployments"] = data["models"][alias]["deployments"][:1]

    return edit


def _feature(name: str, **settings: Any) -> Any:
    def edit(data: dict[str, Any]) -> None:
        data["features"][name].update(settings)

    return edit


def _uncapped(data: dict[str, Any]) -> None:
    data["features"]["agent-loop"].pop("daily_budget_usd")


# each incident against a config without the protection it shows: the demo must say so
SABOTAGE = {
    "loop": (_uncapped, "the loop was refused with 429"),
    "outage": (_no_fallback("claude-sonnet"), "every checkout call answered"),
    "stream": (_no_fallback("claude-chat"), "the client got a complete stream"),
    "injection": (
        _feature("support-drafter", safety={"injection_doc_action": "flag"}),
        "the model did not follow the injected instruction",
    ),
    "pii": (_feature("billing", pii_provider=False), "the provider got no card number either"),
    "kill": (
        _feature("support-drafter", degraded={"mode": "error"}),
        "it answered with the canned fallback",
    ),
}


@pytest.mark.parametrize("key", sorted(SABOTAGE))
async def test_an_incident_without_its_protection_fails_the_demo(key: str) -> None:
    edit, claim = SABOTAGE[key]
    lines: list[str] = []
    played = await run_demo(select(key), edit=edit, say=lines.append)
    assert exit_code(played) == 1
    (p,) = played
    assert any(claim in f for f in p.outcome.failures), p.outcome.failures
    assert any(f"FAILED {p.incident.title}" in line for line in lines)
    assert any(claim in line for line in lines)


async def test_the_same_incidents_pass_with_their_protection() -> None:
    played = await run_demo(select(",".join(SABOTAGE)), say=lambda _: None)
    assert [p.outcome.failures for p in played] == [[]] * len(SABOTAGE)
    assert exit_code(played) == 0


async def test_the_eval_gate_incident_fails_when_the_model_did_not_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(demo_eval, "WEAK", demo_eval.STRONG)  # no regression to catch
    played = await run_demo(select("eval"), say=lambda _: None)
    assert exit_code(played) == 1
    assert "the gate fails the weaker model" in played[0].outcome.failures


def test_an_unknown_incident_is_refused_with_the_choices() -> None:
    res = CliRunner().invoke(app, ["demo", "--only", "loop,meteor"], env={"COLUMNS": "200"})
    assert res.exit_code == 2
    assert "meteor" in res.output and "loop" in res.output


_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=30)
_outcomes = st.builds(
    Outcome,
    did=_text,
    evidence=st.lists(_text.filter(str.strip), max_size=3),
    failures=st.lists(_text, max_size=2),
)


@given(st.lists(st.tuples(st.sampled_from(INCIDENTS), _outcomes), max_size=7))
def test_exit_code_is_zero_only_when_every_incident_behaved(pairs: list[Any]) -> None:
    played = [Played(i, o, 0.1) for i, o in pairs]
    assert (exit_code(played) == 0) == (bool(played) and all(not o.failures for _, o in pairs))
    console = Console(width=100_000, record=True, soft_wrap=True)
    console.print(summary(played))
    shown = console.export_text()
    for i, o in pairs:  # evidence and titles are shown as written, never read as markup
        assert i.title in shown
        for line in o.evidence:
            assert line.strip() in shown


@given(st.lists(st.sampled_from([i.key for i in INCIDENTS]), min_size=1, unique=True))
def test_only_picks_the_named_incidents_in_the_demos_order(keys: list[str]) -> None:
    chosen = select(" , ".join(keys))
    assert {i.key for i in chosen} == set(keys)
    assert chosen == [i for i in INCIDENTS if i.key in keys]

"""CI gate detection reads CI files as their runners do: continuations joined, comments dropped,
swallowed failures (`|| true`, `; true`, `set +e`, `-` in Make, `continue-on-error`, `if: false`,
`allow_failure`) not counted; a gate verdict written by `bastion eval run --gate --out` is read."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from bastion.check import run_check
from bastion.check._ci import find_gate_artifacts, find_gate_commands, gate_uses_in_script
from bastion.cli import app
from bastion.config import Config

GATE = "bastion eval run evals/support.yaml --gate"
ARG = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_./=", min_size=1, max_size=12)


def _blocking(script: str, *, errexit: bool = True, per_line: bool = False) -> list[bool]:
    return [
        u.blocking for u in gate_uses_in_script(script, "ci", errexit=errexit, per_line=per_line)
    ]


@pytest.mark.parametrize(
    ("script", "errexit", "expected"),
    [
        (GATE, True, [True]),
        (f"{GATE} || true   # never blocks", True, [False]),
        (f"# {GATE}", True, []),
        (f"echo building  # then {GATE}", True, []),
        ("bastion eval run \\\n  evals/support.yaml \\\n  --gate", True, [True]),
        (f"{GATE}; true", True, [False]),
        (f"{GATE} || echo 'regression, ignored'", True, [False]),
        (f"{GATE} || exit 1", True, [True]),
        (f"set +e\n{GATE}\necho done", True, [False]),
        (f"set +e\n{GATE}", True, [True]),  # the last command decides the script's status
        (f"{GATE}\necho done", False, [False]),
        (f"set -e\n{GATE}\necho done", False, [True]),
        (f"{GATE} | tee gate.log", True, [False]),
        (f"set -o pipefail\n{GATE} | tee gate.log", True, [True]),
        (f"{GATE} &", True, [False]),
        (f"! {GATE}", True, [False]),
        (f"make build || {GATE}", True, [False]),
        (f"cd app && {GATE} && echo ok", True, [True]),
        (f"scripts/dev {GATE} --require-baseline", True, [True]),
        ("bastion eval run evals/support.yaml", True, []),  # no --gate: not a gate
    ],
)
def test_shell_commands_are_judged_as_the_shell_runs_them(
    script: str, errexit: bool, expected: list[bool]
) -> None:
    assert _blocking(script, errexit=errexit) == expected


def test_make_lines_that_ignore_errors_do_not_block(tmp_path: Path) -> None:
    (tmp_path / "Makefile").write_text(f"gate:\n\t-{GATE}\n\ngate2:\n\t@{GATE}\n")
    assert [u.blocking for u in find_gate_commands(tmp_path)] == [False, True]


@pytest.mark.parametrize(
    ("job", "expected"),
    [
        ("    steps:\n      - run: GATE\n", True),
        ("    continue-on-error: true\n    steps:\n      - run: GATE\n", False),
        ("    steps:\n      - run: GATE\n        continue-on-error: true\n", False),
        ("    if: false\n    steps:\n      - run: GATE\n", False),
        ("    steps:\n      - run: GATE\n        if: ${{ false }}\n", False),
        ("    steps:\n      - run: GATE | tee log\n        shell: bash\n", True),  # -eo pipefail
        ("    steps:\n      - run: GATE | tee log\n", False),  # default bash -e only
    ],
)
def test_github_actions_jobs_and_steps(tmp_path: Path, job: str, expected: bool) -> None:
    wf = tmp_path / ".github" / "workflows"
    wf.mkdir(parents=True)
    (wf / "ci.yml").write_text(
        "on: [push]\njobs:\n  evals:\n    runs-on: ubuntu-latest\n" + job.replace("GATE", GATE)
    )
    (use,) = find_gate_commands(tmp_path)
    assert use.blocking is expected, use.why
    assert "ci.yml" in use.where and "evals" in use.where


@pytest.mark.parametrize(
    ("extra", "expected"),
    [("", True), ("  allow_failure: true\n", False), ("  when: manual\n", False)],
)
def test_gitlab_jobs(tmp_path: Path, extra: str, expected: bool) -> None:
    (tmp_path / ".gitlab-ci.yml").write_text(
        f"evals:\n  script:\n    - {GATE}\n    - echo done\n{extra}"
    )
    assert [u.blocking for u in find_gate_commands(tmp_path)] == [expected]


@settings(max_examples=60, deadline=None)
@given(args=st.lists(ARG, max_size=5), cuts=st.lists(st.booleans(), max_size=8))
def test_a_gate_split_over_continuation_lines_is_one_blocking_command(
    args: list[str], cuts: list[bool]
) -> None:
    words = ["bastion", "eval", "run", *args, "--gate"]
    script = words[0]
    for i, w in enumerate(words[1:]):
        script += " \\\n    " + w if i < len(cuts) and cuts[i] else " " + w
    assert _blocking(script) == [True]
    # and the same text commented out is no gate at all
    commented = "\n".join("# " + line for line in script.splitlines())
    assert _blocking(commented) == []


@settings(max_examples=60, deadline=None)
@given(
    args=st.lists(ARG, max_size=4),
    swallow=st.sampled_from(
        ["|| true", "|| :", "|| echo failed", "; true", "; exit 0", "&", "| cat"]
    ),
    errexit=st.booleans(),
)
def test_a_swallowed_gate_never_blocks(args: list[str], swallow: str, errexit: bool) -> None:
    script = " ".join(["bastion", "eval", "run", *args, "--gate", swallow, "\necho after"])
    assert _blocking(script, errexit=errexit) == [False]


def test_a_gate_verdict_from_eval_run_is_found(tmp_path: Path) -> None:
    suite = tmp_path / "evals" / "s.yaml"
    suite.parent.mkdir()
    suite.write_text(
        "name: s\ndefaults: {model: claude-sonnet-5}\ncases:\n"
        "  - id: a\n    messages: [{role: user, content: hi}]\n    sim_reply: hello\n"
        "    assert: [{contains: hello}]\n"
    )
    out = tmp_path / "evals" / "results" / "s.json"
    res = CliRunner().invoke(
        app,
        [
            "eval",
            "run",
            str(suite),
            "--gate",
            "--out",
            str(out),
            "--baselines",
            str(tmp_path / "b"),
        ],
    )
    assert res.exit_code == 0, res.output
    (art,) = find_gate_artifacts(tmp_path)
    assert art.ok and art.suite == "s" and art.path == "evals/results/s.json"
    data = orjson.loads(out.read_bytes())
    data["gate"]["ok"] = False
    out.write_bytes(orjson.dumps(data))
    assert [a.ok for a in find_gate_artifacts(tmp_path)] == [False]


@pytest.mark.parametrize(
    ("run", "expected"), [("pytest -q tests", "PASS"), ("pytest -q || true", "FAIL")]
)
async def test_a_pytest_gate_counts_when_ci_runs_pytest_blocking(
    tmp_path: Path, run: str, expected: str
) -> None:
    (tmp_path / "evals" / "baselines").mkdir(parents=True)
    (tmp_path / "evals" / "baselines" / "smoke__m__v.json").write_text("{}")
    (tmp_path / "evals" / "smoke.yaml").write_text("name: smoke\ncases: []\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_gate.py").write_text(
        "from bastion.evals import gate\n\ndef test_gate(result):\n    assert gate(result).ok\n"
    )
    wf = tmp_path / ".github" / "workflows"
    wf.mkdir(parents=True)
    (wf / "ci.yml").write_text(f"jobs:\n  t:\n    steps:\n      - run: {run}\n")
    (res,) = await run_check(
        Config.model_validate({}), project_dir=tmp_path, drills=False, only="eval_ci"
    )
    assert res.status == expected, res.evidence

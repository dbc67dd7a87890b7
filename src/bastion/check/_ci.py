"""Does CI run the eval gate so that a regression fails the build? Parsed, not grepped.

Shell is read the way a shell runs it: ``\\`` continuations are joined, comments dropped,
and the gate counts only when its exit status decides the step: not negated, not in the
background, not swallowed (``|| true``, ``; true``, ``set +e`` with a later command deciding),
not hidden in a pipe without ``pipefail``. A ``true``/``:``/``exit 0`` right after the gate
counts as swallowing it even where ``-e`` would still stop (the line says it must not block).
GitHub Actions jobs and steps with ``if: false`` or ``continue-on-error: true`` and GitLab jobs
with ``allow_failure: true`` or ``when: manual`` do not block; Make and tox lines starting
with ``-`` ignore their errors.

Without a gate in CI, a gate-verdict artifact is accepted: the results JSON written by
``bastion eval run SUITE --gate --out evals/results/NAME.json`` (its ``gate`` object holds
the verdict; ``started_at`` says when it ran).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml

__all__ = [
    "ARTIFACT_GLOB",
    "GateArtifact",
    "GateUse",
    "find_gate_artifacts",
    "find_gate_commands",
    "gate_uses_in_script",
    "is_gate",
    "is_pytest",
]

ARTIFACT_GLOB = "evals/results/*.json"
_OPS = frozenset({";", "&&", "||", "|", "&", "|&", ";;", "(", ")", "\n"})
_SWALLOW = (["true"], [":"], ["exit", "0"])
_MAX_BYTES = 1_000_000


Matcher = Callable[[list[str]], bool]


def is_pytest(cmd: list[str]) -> bool:
    """A pytest run (``pytest``, ``python -m pytest``, ``scripts/dev test`` is not guessed)."""
    return any(t == "pytest" or t.endswith("/pytest") for t in cmd)


@dataclass(frozen=True, slots=True)
class GateUse:
    """One ``bastion eval run … --gate`` found in CI, and whether its failure fails the build."""

    where: str
    command: str
    blocking: bool
    why: str = ""


@dataclass(frozen=True, slots=True)
class GateArtifact:
    path: str
    ok: bool
    suite: str
    started_at: float


def _logical_lines(script: str) -> Iterator[str]:
    """Lines with backslash-newline continuations joined (as the shell reads them)."""
    buf = ""
    for raw in script.splitlines():
        stripped = raw.rstrip()
        trailing = len(stripped) - len(stripped.rstrip("\\"))
        if trailing % 2 == 1:
            buf += stripped[:-1] + " "
            continue
        yield buf + raw
        buf = ""
    if buf:
        yield buf


def _tokens(line: str) -> list[str]:
    lex = shlex.shlex(line, posix=True, punctuation_chars=";&|()")
    lex.whitespace_split = True
    lex.commenters = "#"
    try:
        return list(lex)
    except ValueError:  # unbalanced quotes: the shell would refuse the line too
        return []


def is_gate(cmd: list[str]) -> bool:
    """``bastion eval run … --gate`` (however bastion is reached: path, ``scripts/dev``, ``-m``)."""
    for i, tok in enumerate(cmd):
        if (tok == "bastion" or tok.endswith("/bastion")) and cmd[i + 1 : i + 3] == ["eval", "run"]:
            return "--gate" in cmd[i + 3 :]
    return False


def _split(tokens: list[str]) -> list[tuple[str, list[str], str]]:
    """(operator before, simple command, operator after) for each command of a list."""
    out: list[tuple[str, list[str], str]] = []
    before, cur = "", list[str]()
    for t in tokens:
        if t in _OPS:
            if cur:
                out.append((before, cur, t))
            before, cur = t, []
        else:
            cur.append(t)
    if cur:
        out.append((before, cur, ""))
    return out


def gate_uses_in_script(
    script: str,
    where: str,
    *,
    errexit: bool,
    pipefail: bool = False,
    per_line: bool = False,
    match: Matcher = is_gate,
) -> list[GateUse]:
    """Each gate command in a shell script and whether it decides the script's exit status.

    ``per_line``: every line is its own shell whose status is checked (Make, tox, GitLab).
    """
    uses: list[GateUse] = []
    commands: list[tuple[str, list[str], str, bool, bool, int]] = []
    e, pf = errexit, pipefail
    lines = list(_logical_lines(script))
    for n, line in enumerate(lines):
        body = line.lstrip()
        ignore = False
        if per_line:
            while body[:1] in ("-", "@", "+") and body[:1]:
                ignore = ignore or body[0] == "-"
                body = body[1:]
        for before, cmd, after in _split(_tokens(body)):
            if cmd[:1] == ["set"]:
                for flag in cmd[1:]:
                    if flag.startswith(("-", "+")) and "e" in flag.lstrip("+-"):
                        e = flag.startswith("-")
                    if flag == "pipefail" and cmd[cmd.index(flag) - 1] in ("-o", "+o"):
                        pf = cmd[cmd.index(flag) - 1] == "-o"
            commands.append((before, cmd, after, e or per_line, pf, n if not ignore else -1))
    for k, (before, cmd, after, e_on, pf_on, n) in enumerate(commands):
        if not match(cmd):
            continue
        text = " ".join(cmd)
        why = ""
        nxt = commands[k + 1][1] if k + 1 < len(commands) else []
        last = k + 1 == len(commands) or (per_line and commands[k + 1][5] != n)
        if n < 0:
            why = "the line starts with '-': its errors are ignored"
        elif cmd[0] == "!":
            why = "negated with '!'"
        elif after == "&":
            why = "runs in the background"
        elif before == "||":
            why = "runs only when the command before it fails"
        elif after == "||" and nxt != ["false"] and not _exits_nonzero(nxt):
            why = f"its failure is swallowed by '|| {' '.join(nxt)}'"
        elif after in ("|", "|&") and not pf_on:
            why = "piped into another command without pipefail (the pipe's status is the last command's)"
        elif after in (";", "\n", "") and not last and nxt in _SWALLOW:
            why = f"its status is overridden by '; {' '.join(nxt)}'"
        elif not e_on and not last and after != "&&":
            why = "errexit is off (set +e or no set -e) and later commands decide the status"
        uses.append(GateUse(where, text, blocking=not why, why=why))
    return uses


def _exits_nonzero(cmd: list[str]) -> bool:
    return len(cmd) == 2 and cmd[0] == "exit" and cmd[1] not in ("0",)


def _truthy(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower().removeprefix("${{").removesuffix("}}").strip()
    return s in ("true", "1", "yes", "on")


def _falsy_if(v: Any) -> bool:
    if v is None:
        return False
    if isinstance(v, bool):
        return not v
    s = str(v).strip().lower().removeprefix("${{").removesuffix("}}").strip()
    return s in ("false", "0", "no", "off")


def _github(rel: str, doc: Any, match: Matcher) -> list[GateUse]:
    uses: list[GateUse] = []
    jobs = doc.get("jobs") if isinstance(doc, dict) else None
    for job_id, job in (jobs or {}).items():
        if not isinstance(job, dict):
            continue
        defaults = (job.get("defaults") or {}).get("run") or {}
        for i, step in enumerate(job.get("steps") or []):
            if not isinstance(step, dict) or not isinstance(step.get("run"), str):
                continue
            # an explicit `shell: bash` runs `bash -eo pipefail`; the default is `bash -e`
            shell = str(step.get("shell") or defaults.get("shell") or "").strip()
            where = f"{rel} (job {job_id}, step {step.get('name') or i + 1})"
            found = gate_uses_in_script(
                step["run"], where, errexit=True, pipefail=shell == "bash", match=match
            )
            for u in found:
                why = u.why
                if _falsy_if(job.get("if")) or _falsy_if(step.get("if")):
                    why = why or "disabled with 'if: false'"
                elif _truthy(job.get("continue-on-error", False)) or _truthy(
                    step.get("continue-on-error", False)
                ):
                    why = why or "marked 'continue-on-error: true'"
                uses.append(GateUse(u.where, u.command, blocking=not why, why=why))
    return uses


def _gitlab(rel: str, doc: Any, match: Matcher) -> list[GateUse]:
    uses: list[GateUse] = []
    if not isinstance(doc, dict):
        return uses
    for name, job in doc.items():
        if not isinstance(job, dict) or "script" not in job:
            continue
        script = job["script"]
        text = "\n".join(map(str, script)) if isinstance(script, list) else str(script)
        where = f"{rel} (job {name})"
        for u in gate_uses_in_script(text, where, errexit=True, per_line=True, match=match):
            why = u.why
            if _truthy(job.get("allow_failure", False)):
                why = why or "marked 'allow_failure: true'"
            elif str(job.get("when", "")).strip() == "manual":
                why = why or "a manual job ('when: manual')"
            uses.append(GateUse(u.where, u.command, blocking=not why, why=why))
    return uses


def _yaml_scripts(node: Any) -> Iterator[str]:
    """Every string under a run/script/command key of a generic CI YAML (CircleCI, Azure)."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("run", "script", "command", "bash") and isinstance(v, str):
                yield v
            else:
                yield from _yaml_scripts(v)
    elif isinstance(node, list):
        for v in node:
            yield from _yaml_scripts(v)


def _makefile(text: str) -> str:
    return "\n".join(line[1:] for line in text.splitlines() if line.startswith("\t"))


def _tox(text: str) -> str:
    out, on = [], False
    for line in text.splitlines():
        if re.match(r"^\s*commands\s*=", line):
            on = True
            out.append(line.split("=", 1)[1])
        elif on and line[:1] in (" ", "\t") and line.strip():
            out.append(line.strip())
        else:
            on = False
    return "\n".join(out)


def _read(p: Path) -> str | None:
    try:
        if p.stat().st_size > _MAX_BYTES:
            return None
        return p.read_text(errors="replace")
    except OSError:
        return None


def _load_yaml(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return None


def find_gate_commands(root: Path, match: Matcher = is_gate) -> list[GateUse]:
    """Every eval-gate command (or other ``match``) in the project's CI files, judged blocking or not."""
    uses: list[GateUse] = []

    def each(pattern: str) -> Iterator[tuple[Path, str, str]]:
        for p in sorted(root.glob(pattern)):
            text = _read(p) if p.is_file() else None
            if text is not None:
                yield p, str(p.relative_to(root)), text

    for wf in (".github/workflows/*.yml", ".github/workflows/*.yaml"):
        for _, rel, text in each(wf):
            uses += _github(rel, _load_yaml(text), match)
    for _, rel, text in each(".gitlab-ci.yml"):
        uses += _gitlab(rel, _load_yaml(text), match)
    for pat in (".circleci/config.yml", "azure-pipelines.yml", "bitbucket-pipelines.yml"):
        for _, rel, text in each(pat):
            for s in _yaml_scripts(_load_yaml(text)):
                uses += gate_uses_in_script(s, rel, errexit=True, match=match)
    for _, rel, text in each("Makefile"):
        uses += gate_uses_in_script(_makefile(text), rel, errexit=True, per_line=True, match=match)
    for _, rel, text in each("tox.ini"):
        uses += gate_uses_in_script(_tox(text), rel, errexit=True, per_line=True, match=match)
    for _, rel, text in each("Jenkinsfile"):
        for m in re.finditer(r"\bsh\s*\(?\s*(\"\"\"|'''|\"|')(.*?)\1", text, re.DOTALL):
            uses += gate_uses_in_script(m.group(2), rel, errexit=True, match=match)
    for pat in ("scripts/*", ".ci/*", "ci/*"):
        for _, rel, text in each(pat):
            e = bool(re.search(r"^#!.*\s-\w*e", text)) or bool(re.match(r"#!.*\bbash -e", text))
            uses += gate_uses_in_script(text, rel, errexit=e, match=match)
    return uses


def find_gate_artifacts(root: Path) -> list[GateArtifact]:
    """Gate verdicts left by ``bastion eval run … --gate --out evals/results/NAME.json``."""
    out = []
    for p in sorted(root.glob(ARTIFACT_GLOB)):
        try:
            data = orjson.loads(p.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            continue
        gate = data.get("gate") if isinstance(data, dict) else None
        if not isinstance(gate, dict) or not isinstance(gate.get("ok"), bool):
            continue
        out.append(
            GateArtifact(
                str(p.relative_to(root)),
                gate["ok"],
                str(data.get("suite", "?")),
                float(data.get("started_at") or 0.0),
            )
        )
    return out

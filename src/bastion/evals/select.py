"""The cheapest model that passes: run a suite per candidate, price it from real usage, pick, pin.

A candidate qualifies when every must-pass case passes and its mean score is within
``margin`` of the best candidate's; the cheapest qualifier (mean cost per case,
measured from each call's usage at the served model's price) wins. ``apply_choice``
pins it as ``features.<F>.model`` in the YAML file, editing only that line so comments
and layout survive, and writes the evidence beside the config for ``bastion check``,
with a unified diff of the change and a backup of the file it replaced. Evidence
records whether any candidate was answered by the simulator: simulated scores say
nothing about real models, so applying them needs ``allow_simulated``.
"""

from __future__ import annotations

import difflib
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from ..errors import ConfigError
from .judge import Judge
from .results import RunResult
from .runner import Progress, open_gateway, run_suite
from .suite import Suite

__all__ = [
    "Applied",
    "Candidate",
    "Selection",
    "SimulatedEvidence",
    "apply_choice",
    "evidence_path",
    "select_model",
    "set_feature_model",
]


@dataclass(slots=True)
class Candidate:
    model: str
    run: RunResult
    qualifies: bool = False
    reason: str = ""

    @property
    def cost_per_case(self) -> float:
        return self.run.cost_per_case_usd

    @property
    def mean_score(self) -> float:
        return self.run.mean_score

    @property
    def simulated(self) -> bool:
        return self.run.simulated


class SimulatedEvidence(ConfigError):
    """``--apply`` on a selection whose evidence came from the simulator, without consent."""


@dataclass(frozen=True, slots=True)
class Applied:
    """What ``apply_choice`` wrote: the config, the evidence, the diff and the backup (if any)."""

    config: Path
    evidence: Path
    diff: Path
    backup: Path | None


@dataclass(slots=True)
class Selection:
    feature: str
    suite: str
    prompt_version: str
    epochs: int
    margin: float
    candidates: list[Candidate] = field(default_factory=list)
    choice: str | None = None

    @property
    def simulated(self) -> bool:
        """Whether any candidate's calls were answered by the built-in simulator."""
        return any(c.simulated for c in self.candidates)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "bastion.eval.select",
            "feature": self.feature,
            "suite": self.suite,
            "prompt_version": self.prompt_version,
            "epochs": self.epochs,
            "margin": self.margin,
            "choice": self.choice,
            "simulated": self.simulated,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "candidates": [
                {
                    "model": c.model,
                    "qualifies": c.qualifies,
                    "reason": c.reason,
                    "simulated": c.simulated,
                    "mean_score": round(c.mean_score, 6),
                    "cost_per_case_usd": round(c.cost_per_case, 10),
                    "cost_usd": round(c.run.cost_usd, 10),
                    "passed": c.run.passed,
                    "cases": len(c.run.cases),
                    "must_pass_failures": c.run.must_pass_failures,
                }
                for c in self.candidates
            ],
        }


def _decide(sel: Selection) -> None:
    best = max((c.mean_score for c in sel.candidates), default=0.0)
    for c in sel.candidates:
        fails = c.run.must_pass_failures
        if fails:
            c.reason = f"must-pass failures: {', '.join(fails)}"
        elif c.mean_score < best - sel.margin:
            c.reason = f"mean score {c.mean_score:.3f} < best {best:.3f} - margin {sel.margin:g}"
        else:
            c.qualifies = True
            c.reason = "passes"
    ok = [c for c in sel.candidates if c.qualifies]
    if ok:
        sel.choice = min(ok, key=lambda c: (c.cost_per_case, -c.mean_score)).model


async def select_model(
    suite: Suite,
    config: str | Path | None,
    feature: str,
    candidates: Sequence[str],
    *,
    epochs: int = 1,
    concurrency: int = 8,
    margin: float | None = None,
    judge: Judge | None = None,
    progress: Progress | None = None,
    isolated: bool = True,
) -> Selection:
    """Run ``suite`` with ``feature`` pinned to each candidate in turn and choose."""
    if not candidates:
        raise ValueError("no candidate models")
    sel = Selection(
        feature=feature,
        suite=suite.name,
        prompt_version=suite.version(),
        epochs=epochs,
        margin=suite.gate.margin if margin is None else margin,
    )
    for model in candidates:
        overrides = {"features": {feature: {"model": model}}}
        async with open_gateway(config, suite, overrides=overrides, isolated=isolated) as gw:
            run = await run_suite(
                suite,
                gw,
                epochs=epochs,
                concurrency=concurrency,
                feature=feature,
                judge=judge,
                progress=progress,
                config_label=str(config) if config else None,
            )
        run.model = model
        sel.candidates.append(Candidate(model, run))
    _decide(sel)
    return sel


def evidence_path(config: str | Path, feature: str) -> Path:
    """``<config stem>.select.<feature>.json`` beside the config (what ``bastion check`` reads)."""
    p = Path(config)
    return p.with_name(f"{p.stem}.select.{feature}.json")


_KEY = re.compile(r"^(?P<indent>[ ]*)(?P<key>[^\s#:][^:#]*?|\"[^\"]*\"|'[^']*')\s*:(?P<rest>.*)$")


def _block(lines: list[str], start: int, end: int, indent: int) -> list[tuple[int, int, str, str]]:
    """Direct children of a block mapping: ``(line, indent, key, rest)`` within ``[start, end)``."""
    out = []
    child: int | None = None
    for i in range(start, end):
        raw = lines[i]
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        m = _KEY.match(raw)
        ind = len(raw) - len(raw.lstrip(" "))
        if ind <= indent:
            break
        if child is None:
            child = ind
        if m and ind == child:
            out.append((i, ind, m.group("key").strip("\"'"), m.group("rest")))
    return out


def _end_of(lines: list[str], start: int, indent: int) -> int:
    for i in range(start + 1, len(lines)):
        raw = lines[i]
        if (
            raw.strip()
            and not raw.lstrip().startswith("#")
            and len(raw) - len(raw.lstrip(" ")) <= indent
        ):
            return i
    return len(lines)


def set_feature_model(text: str, feature: str, model: str) -> str:
    """``text`` with ``features.<feature>.model`` set, changing as few lines as possible.

    Handles block-style YAML; if the result does not parse to exactly the intended
    change (flow style, anchors...), the document is re-dumped instead (comments lost).
    """
    want = yaml.safe_load(text) or {}
    if not isinstance(want, dict):
        raise ValueError("the config's top level must be a mapping")
    feats = want.setdefault("features", {})
    if feats is None:
        feats = want["features"] = {}
    entry = feats.get(feature)
    feats[feature] = {**(entry or {}), "model": model}
    value = model if re.fullmatch(r"[A-Za-z0-9_.\-/]+", model) else orjson.dumps(model).decode()
    lines = text.splitlines()
    try:
        edited = _edit(lines, feature, value)
        if yaml.safe_load("\n".join(edited)) == want:
            return "\n".join(edited) + "\n"
    except (ValueError, yaml.YAMLError):
        pass
    return yaml.safe_dump(want, sort_keys=False)


def _edit(lines: list[str], feature: str, value: str) -> list[str]:
    lines = list(lines)
    top = {k: (i, rest) for i, _, k, rest in _block(lines, 0, len(lines), -1)}
    if "features" not in top:
        return [*lines, "features:", f"  {feature}:", f"    model: {value}"]
    fi, rest = top["features"]
    if rest.strip() and not rest.strip().startswith("#"):
        raise ValueError("features is not a block mapping")
    fend = _end_of(lines, fi, 0)
    feats = {k: (i, ind, r) for i, ind, k, r in _block(lines, fi + 1, fend, 0)}
    if feature not in feats:
        ind = next(iter(feats.values()))[1] if feats else 2
        lines[fend:fend] = [f"{' ' * ind}{feature}:", f"{' ' * (ind * 2)}model: {value}"]
        return lines
    ei, eind, erest = feats[feature]
    if erest.strip() and not erest.strip().startswith("#"):
        raise ValueError("the feature is not a block mapping")
    eend = _end_of(lines, ei, eind)
    keys = _block(lines, ei + 1, eend, eind)
    for i, ind, k, r in keys:
        if k == "model":
            comment = r[r.index("#") :] if "#" in r else ""
            lines[i] = f"{' ' * ind}model: {value}" + (f"  {comment}" if comment else "")
            return lines
    ind = keys[0][1] if keys else eind + 2
    lines.insert(ei + 1, f"{' ' * ind}model: {value}")
    return lines


def apply_choice(sel: Selection, config: str | Path, *, allow_simulated: bool = False) -> Applied:
    """Pin the chosen model in the config; write evidence, a diff and a backup beside it.

    Raises ``SimulatedEvidence`` when the selection ran on the simulator and
    ``allow_simulated`` is not given: nothing is written then.
    """
    if sel.choice is None:
        raise ValueError("no candidate qualified; nothing to apply")
    if sel.simulated and not allow_simulated:
        sims = ", ".join(c.model for c in sel.candidates if c.simulated)
        raise SimulatedEvidence(
            f"refusing to pin features.{sel.feature}.model: the evidence is simulated "
            f"({sims} answered by the built-in simulator). Run against the real providers, "
            "or pass --allow-simulated to apply it anyway"
        )
    p = Path(config)
    text = p.read_text() if p.exists() else ""
    new = set_feature_model(text, sel.feature, sel.choice)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    backup: Path | None = None
    if p.exists():
        backup = p.with_name(f"{p.name}.{stamp}.bak")
        shutil.copy2(p, backup)
    diff = p.with_name(f"{p.stem}.select.{sel.feature}.diff")
    diff.write_text(
        "".join(
            difflib.unified_diff(
                text.splitlines(keepends=True),
                new.splitlines(keepends=True),
                fromfile=f"a/{p.name}",
                tofile=f"b/{p.name}",
            )
        )
    )
    p.write_text(new)
    ev = evidence_path(p, sel.feature)
    data = {**sel.to_dict(), "diff": str(diff), "backup": str(backup) if backup else None}
    ev.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
    return Applied(p, ev, diff, backup)

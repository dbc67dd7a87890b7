"""The shipped labeled sets hold the scanner to its targets: at most 2% of benign texts — written to be
full of trigger words — are flagged, on the development set and on the never-tuned holdout set."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from bastion.safety.prompting import InjectionScanner

DATA = Path(__file__).resolve().parents[2] / "bench" / "data" / "injection"
SCANNER = InjectionScanner()
RULES = InjectionScanner(classifier=None)


def load(name: str) -> list[dict[str, Any]]:
    with (DATA / name).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.mark.parametrize("name", ["benign.jsonl", "benign_holdout.jsonl"])
def test_false_positives_stay_at_or_under_two_percent(name: str) -> None:
    rows = load(name)
    assert len(rows) >= 40 and all(r["label"] == "benign" for r in rows)
    flagged = [r["id"] for r in rows if RULES.scan(r["text"], r["source"]).flagged]
    assert len(flagged) / len(rows) <= 0.02, flagged


@pytest.mark.parametrize("name", ["benign.jsonl", "benign_holdout.jsonl"])
def test_the_shipped_model_adds_a_bounded_share_of_false_positives(name: str) -> None:
    """A known cost, not a target: these sets were written to be dense with trigger words, and the
    model (operating point chosen on the project dev split, 1.5 % FPR there) flags 15 of 323 and
    1 of 40 of them (4.6 % / 2.5 %). The bound keeps that from growing unnoticed."""
    rows = load(name)
    flagged = [r["id"] for r in rows if SCANNER.scan(r["text"], r["source"]).flagged]
    assert len(flagged) / len(rows) <= 0.05, flagged


def test_development_set_detection_does_not_regress() -> None:
    rows = load("attacks.jsonl")
    assert len(rows) >= 300 and all(r["label"] == "attack" for r in rows)
    missed = [r["id"] for r in rows if not SCANNER.scan(r["text"], r["source"]).flagged]
    assert len(missed) / len(rows) <= 0.02, missed


def test_shipped_sets_are_well_formed() -> None:
    seen: set[str] = set()
    for name in ("attacks.jsonl", "benign.jsonl", "attacks_holdout.jsonl", "benign_holdout.jsonl"):
        for r in load(name):
            assert set(r) == {"id", "label", "source", "category", "lang", "text"}, r
            assert r["source"] in ("user", "doc") and r["text"].strip()
            assert r["id"] not in seen
            seen.add(r["id"])
    langs = {r["lang"] for r in load("attacks.jsonl")}
    assert {"en", "es", "fr", "de", "pt", "it"} <= langs


def test_scan_work_grows_linearly_with_the_text() -> None:
    """A guard against accidental quadratic rules, as a ratio in one process (a wall-clock bound
    failed on a loaded box whatever the code); the real figures come from bench/detect_speed.py."""
    base = (DATA / "typical_5kb.txt").read_text(encoding="utf-8")[:5000]
    big = "\n\n".join([base] * 8)

    def best(text: str) -> float:
        samples = []
        for _ in range(7):
            t0 = time.thread_time()
            SCANNER.scan(text)
            samples.append(time.thread_time() - t0)
        return min(samples)

    best(base)
    ratio = best(big) / max(best(base), 1e-6)
    assert ratio < 24, (
        f"8x the text cost {ratio:.1f}x the time: something grows faster than linearly"
    )

"""CI gate: the shipped labeled corpus meets the precision/recall targets and no ticket is redacted."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.safety.pii import Scrubber
from bastion.safety.pii.corpus import Report, evaluate, generate, load

CORPUS = Path(__file__).resolve().parents[2] / "bench" / "data" / "pii" / "corpus.jsonl"
TARGET = 0.98
TYPES = ("EMAIL", "PHONE", "CARD", "IBAN", "SSN", "IP", "SECRET")


@pytest.fixture(scope="module")
def report() -> Report:
    return evaluate(Scrubber(), load(CORPUS))


@pytest.mark.parametrize("kind", TYPES)
def test_shipped_corpus_meets_precision_and_recall_targets(report: Report, kind: str) -> None:
    score = report.by_type[kind]
    assert score.gold >= 100, f"too few {kind} samples to measure"
    assert score.recall >= TARGET, f"{kind} recall {score.recall:.4f}"
    assert score.precision >= TARGET, f"{kind} precision {score.precision:.4f}"


def test_no_ticket_or_order_number_is_redacted(report: Report) -> None:
    assert report.negatives["ticket"][1] > 100 and report.negatives["order"][1] > 100
    assert report.tickets_redacted == 0


def test_hard_negatives_survive(report: Report) -> None:
    redacted = {k: v for k, v in report.negatives.items() if v[0]}
    total = sum(n for _, n in report.negatives.values())
    assert sum(h for h, _ in redacted.values()) <= 0.005 * total, redacted


def test_almost_no_gold_character_is_left_visible(report: Report) -> None:
    assert report.leaked_chars <= 0.005 * report.gold_chars


def test_generator_is_deterministic_and_labels_real_spans() -> None:
    a, b = generate(seed=3, n=50), generate(seed=3, n=50)
    assert a == b
    assert generate(seed=4, n=50) != a
    for sample in a:
        for span in sample.pii + sample.negatives:
            assert 0 <= span.start < span.end <= len(sample.text)
            assert sample.text[span.start : span.end].strip() == sample.text[span.start : span.end]


def test_a_fresh_seed_also_meets_the_targets() -> None:
    report = evaluate(Scrubber(), generate(seed=20240601, n=400))
    for kind in TYPES:
        s = report.by_type[kind]
        assert s.precision >= TARGET and s.recall >= TARGET, (kind, s)
    assert report.tickets_redacted == 0

"""The detectors give the same verdicts with their C loops as without them.

Whole-detector property beside the per-function ones (``test_native_token_loop.py``,
``test_native_name_scores.py``): ``InjectionScanner.scan`` (score, reasons, model score) and
``Scrubber.scrub`` (text and findings) with the C modules in use and with the Python loops
forced, over the bench corpora and over generated text mixing prose, names, attacks and
odd characters.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.safety.pii import Scrubber, ScrubberConfig, _names
from bastion.safety.prompting import InjectionScanner, classifier

ROOT = Path(__file__).resolve().parents[2]
SCANNER = InjectionScanner()
SCRUBBER = Scrubber(ScrubberConfig())


@contextmanager
def python_loops() -> Iterator[None]:
    saved = (classifier._native_sums, classifier._native_windows, _names._native_scores)
    classifier._native_sums = classifier._native_windows = None
    _names._native_scores = None
    try:
        yield
    finally:
        classifier._native_sums, classifier._native_windows, _names._native_scores = saved


def verdicts(text: str) -> tuple[object, ...]:
    scan = SCANNER.scan(text)
    scrub = SCRUBBER.scrub(text)
    return scan.score, tuple(scan.reasons), scan.model_score, scrub.text, repr(scrub.findings)


def same(text: str) -> None:
    assert classifier._native_sums is not None and _names._native_scores is not None
    fast = verdicts(text)
    with python_loops():
        slow = verdicts(text)
    assert fast == slow


def test_the_corpora() -> None:
    data = ROOT / "bench" / "data"
    same((data / "injection" / "typical_5kb.txt").read_text())
    for name in ("attacks", "benign"):
        for line in (data / "injection" / f"{name}.jsonl").read_text().splitlines()[:150]:
            same(json.loads(line)["text"])
    for line in (data / "pii" / "corpus.jsonl").read_text().splitlines()[:150]:
        same(json.loads(line)["text"])


WORDS = st.sampled_from(
    [
        "Ignore", "all", "previous", "instructions", "and", "reveal", "the", "system", "prompt",
        "Mary", "O'Neil", "from", "Paris", "wrote:", "Dear", "John", "Smith,", "Thanks,",
        "221B", "Baker", "Street", "\n", "\n\n", ".", "!", "?", "|", "<td>", "—", "’", "\u2022",
        "\x00", "\x01", "ß", "İstanbul", "漢字", "4111 1111 1111 1111", "bob@example.com",
    ]
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(WORDS, st.text(max_size=6)), max_size=120).map(" ".join))
def test_any_mix(text: str) -> None:
    same(text)

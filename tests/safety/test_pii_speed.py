"""The scrubber runs on every call: a regression guard with generous bounds (the bench has real figures)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from bastion.safety.pii import Scrubber

TYPICAL = Path(__file__).resolve().parents[2] / "bench" / "data" / "injection" / "typical_5kb.txt"
FALLBACK = (
    "Hi Maria, thanks for getting back to me. The charge of $129.99 appears twice, once on "
    "June 3rd and again on June 4th (ticket 77120). Tracking still says label created. "
)


def _text() -> str:
    text = TYPICAL.read_text(encoding="utf-8") if TYPICAL.exists() else FALLBACK * 40
    return (text * 2)[:5000] + " reach me at ann@example.com or +1 415-555-2671"


def test_scrubbing_5kb_of_chat_text_takes_well_under_a_millisecond() -> None:
    scrubber, text = Scrubber(), _text()
    for _ in range(20):
        scrubber.scrub(text)
    runs = []
    for _ in range(101):
        t0 = time.perf_counter()
        scrubber.scrub(text)
        runs.append(time.perf_counter() - t0)
    assert statistics.median(runs) < 0.0015  # ~0.1 ms measured; shared CI boxes are noisy


def test_streaming_costs_a_few_microseconds_per_delta() -> None:
    scrubber, text = Scrubber(), _text()
    t0 = time.perf_counter()
    s = scrubber.stream()
    for i in range(0, len(text), 4):
        s.feed(text[i : i + 4])
    s.flush()
    per_delta = (time.perf_counter() - t0) / (len(text) / 4)
    assert per_delta < 50e-6  # ~3 µs measured

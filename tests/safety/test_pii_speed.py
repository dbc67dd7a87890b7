"""The scrubber runs on every call: regression guards against work that grows faster than the
text, as ratios of thread CPU in one process (wall-clock bounds failed on a slow or loaded box
whatever the code; the real figures come from bench/detect_speed.py and bench/stream_filter.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
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


def _best(work: Callable[[], object], repeat: int = 7) -> float:
    samples = []
    for _ in range(repeat):
        t0 = time.thread_time()
        work()
        samples.append(time.thread_time() - t0)
    return max(min(samples), 1e-6)


def _stream(scrubber: Scrubber, text: str) -> None:
    s = scrubber.stream()
    for i in range(0, len(text), 4):
        s.feed(text[i : i + 4])
    s.flush()


def test_scrubbing_grows_linearly_with_the_text() -> None:
    scrubber, text = Scrubber(), _text()
    big = "\n\n".join([text] * 8)
    scrubber.scrub(big)
    ratio = _best(lambda: scrubber.scrub(big)) / _best(lambda: scrubber.scrub(text))
    assert ratio < 24, f"8x the text cost {ratio:.1f}x the time"


def test_streaming_work_per_delta_does_not_grow_with_the_stream() -> None:
    scrubber, text = Scrubber(), _text()
    big = "\n\n".join([text] * 8)
    ratio = _best(lambda: _stream(scrubber, big), 3) / _best(lambda: _stream(scrubber, text), 3)
    assert ratio < 24, f"a stream 8x as long cost {ratio:.1f}x the time: per-delta work grows"

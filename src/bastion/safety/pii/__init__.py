"""PII scrubbing: typed, call-stable placeholders for emails, phones, cards, IBANs, SSNs, IPs,
secrets, street addresses, and (by the shipped tagger, on by default) person names and places.

    scrubber = Scrubber(ScrubberConfig())          # once, at start-up
    session = scrubber.session()                   # once per call
    safe_prompt = session.scrub(prompt).text       # "[EMAIL_1] asked about [CARD_1]"
    stream = session.stream()                      # the output side, same numbering
    for delta in deltas:
        emit(stream.feed(delta))
    emit(stream.flush())

Findings carry the type, span and placeholder, never the value.
"""

from __future__ import annotations

from ._ner import NerDetector, NerSpan, load_ner
from ._scrubber import Scrubber, ScrubSession
from ._stream import StreamScrubber
from ._types import (
    DEFAULT_ALLOW_PATTERNS,
    Finding,
    Mode,
    PiiType,
    ScrubberConfig,
    ScrubResult,
)

__all__ = [
    "DEFAULT_ALLOW_PATTERNS",
    "Finding",
    "Mode",
    "NerDetector",
    "NerSpan",
    "PiiType",
    "ScrubResult",
    "ScrubSession",
    "Scrubber",
    "ScrubberConfig",
    "StreamScrubber",
    "load_ner",
]

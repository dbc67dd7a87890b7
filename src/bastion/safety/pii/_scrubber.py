"""``Scrubber`` (built once) and ``ScrubSession`` (one per call): placeholders stable within a call.

A session numbers placeholders per type in order of first appearance and gives the same
value the same placeholder across every text of the call (prompt, output, log line), so
"[EMAIL_1] wrote to [EMAIL_2]" still reads correctly after scrubbing. Values are kept
only as keyed BLAKE2 digests (random key per session), never as text.
"""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING

from ._detect import Detector
from ._hit import Hit
from ._types import SENSITIVE, Finding, Mode, PiiType, ScrubberConfig, ScrubResult

if TYPE_CHECKING:
    from ._stream import StreamScrubber

# each type's value (the counts' keys, the placeholders' prefix) by dict look-up: an enum's
# ``.value`` is a descriptor call, ~10x the cost, paid a few times per finding
_VALUE: dict[PiiType, str] = {t: t.value for t in PiiType}


class Scrubber:
    """The PII scrubber: thread-safe, stateless between calls; build it once at start-up."""

    __slots__ = ("_detector", "config")

    def __init__(self, config: ScrubberConfig | None = None) -> None:
        self.config = config if config is not None else ScrubberConfig()
        self._detector = Detector(self.config)

    @property
    def ner_active(self) -> bool:
        """Whether an NER backend (person names, addresses) is in use."""
        return self._detector.ner_active

    def session(self) -> ScrubSession:
        """A fresh placeholder numbering, for all the texts of one call."""
        return ScrubSession(self)

    def scrub(self, text: str, *, mode: Mode | None = None) -> ScrubResult:
        """Scrub one text on its own (its own numbering)."""
        return ScrubSession(self).scrub(text, mode=mode)

    def redact(self, text: str) -> str:
        """Just the safe text: the ``Callable[[str], str]`` a log writer or record guard wants."""
        hits = self._detector.detect(text)
        if not hits:
            return text
        return ScrubSession(self).apply(text, hits, "redact")[0]

    def stream(self, *, mode: Mode | None = None) -> StreamScrubber:
        """A ``StreamScrubber`` with its own numbering."""
        return ScrubSession(self).stream(mode=mode)

    def _hits(self, text: str, after: int = 0) -> list[Hit]:
        """Validated spans *with their values*: for this package's sessions and streams only
        (those ending at or before ``after`` may be left out)."""
        return self._detector.detect(text, after)


class ScrubSession:
    """Placeholder numbering shared by every text of one call; not thread-safe, not shared."""

    __slots__ = ("_labels", "_next", "_salt", "counts", "scrubber")

    def __init__(self, scrubber: Scrubber) -> None:
        self.scrubber = scrubber
        self._salt = os.urandom(16)
        self._labels: dict[tuple[PiiType, bytes], str] = {}
        self._next: dict[PiiType, int] = {}
        self.counts: dict[str, int] = {}  # findings of each type over the whole session

    def __repr__(self) -> str:
        return f"<ScrubSession counts={self.counts!r}>"

    def placeholder(self, type_: PiiType, key: object) -> str:
        """The placeholder for a value: the same value gets the same one for the session."""
        if isinstance(key, str):
            digest = hashlib.blake2b(key.encode(), digest_size=16, key=self._salt).digest()
        else:  # an opaque key (a PEM block): always a new placeholder
            digest = os.urandom(16)
        label = self._labels.get((type_, digest))
        if label is None:
            n = self._next.get(type_, 0) + 1
            self._next[type_] = n
            label = f"[{_VALUE[type_]}_{n}]"
            self._labels[(type_, digest)] = label
        return label

    def scrub(self, text: str, *, mode: Mode | None = None) -> ScrubResult:
        """Scrub one text of the call; ``mode="flag"`` reports findings but leaves the text."""
        hits = self.scrubber._hits(text)
        out, findings = self.apply(text, hits, mode or self.scrubber.config.mode)
        counts: dict[str, int] = {}
        value = _VALUE
        for f in findings:
            v = value[f.type]
            counts[v] = counts.get(v, 0) + 1
        return ScrubResult(out, findings, counts)

    def stream(self, *, mode: Mode | None = None) -> StreamScrubber:
        """A ``StreamScrubber`` that shares this session's numbering (output after prompt)."""
        from ._stream import StreamScrubber

        return StreamScrubber(self, mode=mode or self.scrubber.config.mode)

    def apply(
        self, text: str, hits: list[Hit], mode: Mode, offset: int = 0
    ) -> tuple[str, list[Finding]]:
        """Replace (or just report) ``hits`` in ``text``; finding spans are shifted by ``offset``."""
        findings: list[Finding] = []
        pieces: list[str] = []
        last = 0
        counts = self.counts
        value = _VALUE
        replaced = False
        for h in hits:
            label = self.placeholder(h.type, h.key)
            findings.append(Finding(h.type, h.start + offset, h.end + offset, label, h.source))
            v = value[h.type]
            counts[v] = counts.get(v, 0) + 1
            if mode == "redact" or (mode == "sensitive" and h.type in SENSITIVE):
                pieces.append(text[last : h.start])
                pieces.append(label)
                last = h.end
                replaced = True
        if not replaced:
            return text, findings
        pieces.append(text[last:])
        return "".join(pieces), findings

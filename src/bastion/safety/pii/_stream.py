"""Scrubbing a stream of text deltas: release what is safe now, hold back only what could grow.

A match can only span a chunk boundary inside one unbroken token (an email, a key, a
JWT), inside a chain of digit/IBAN groups joined by single spaces ("+44 20 7946 0958"),
or inside a PEM block. So the scrubber holds back exactly that: the trailing token (up
to ``stream_max_token`` chars), the chain of number-like groups before it (at most
``CHAIN_HOLD`` chars), or an unfinished "-----BEGIN ... PRIVATE KEY-----" line; with
the name tagger on, also the last ``NER_HOLD`` chars, the right context it reads a
name by ("Bearer" before a token is no name; "Ann" before "Lee" is half of one).
Everything before is scanned with ``CONTEXT`` chars of already released text in front
(for keywords like "call me at" and allow-patterns like "version ") and released, so
the concatenated output equals scrubbing the whole text at once. Only findings ending past
that context count, so the detector is told where it ends and skips the scans that cannot
reach past it (the name tagger when no capitalised token runs into the new text). A PEM
private key is replaced as soon as its header is complete and the rest of the block is
swallowed (or, in flag mode, passed through and reported when it ends), so no hold-back
grows with it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ._hit import Hit
from ._names import NAME_CONTEXT
from ._patterns import ALLOW_WINDOW, CONTEXT_WINDOW, PEM_BEGIN, PEM_STOP, TAIL_CHAIN
from ._types import Finding, Mode, PiiType

if TYPE_CHECKING:
    from ._scrubber import ScrubSession

CONTEXT = max(64, ALLOW_WINDOW, CONTEXT_WINDOW)
CHAIN_HOLD = 64
# The name tagger reads a token with the words after it: hold that much right context.
NER_HOLD = NAME_CONTEXT
NER_BATCH = 16  # with the tagger on, release at least this much at once
_CHAIN_TOKEN = re.compile(r"[0-9A-Z()+.-]*", re.ASCII)
_PEM_CARRY = 96  # enough to see an "-----END ... PRIVATE KEY-----" line split across deltas


class StreamScrubber:
    """Feed it text deltas, emit what it returns, then emit ``flush()``; one per output stream."""

    __slots__ = (
        "_ctx",
        "_max_token",
        "_mode",
        "_ner",
        "_pem",
        "_pem_carry",
        "_pem_carry_pos",
        "_pem_label",
        "_pem_start",
        "_pending",
        "_pos",
        "_session",
        "_tok",
        "findings",
    )

    def __init__(self, session: ScrubSession, *, mode: Mode = "redact") -> None:
        self._session = session
        self._mode = mode
        self._ner = session.scrubber.ner_active
        self._max_token = session.scrubber.config.stream_max_token
        self._pending = ""  # not yet released; starts at absolute offset _pos
        self._pos = 0
        self._tok = 0  # start of the trailing token within _pending
        self._ctx = ""  # the last CONTEXT chars released (raw input, for the scan only)
        self._pem = False
        self._pem_carry = ""
        self._pem_carry_pos = 0
        self._pem_start = 0
        self._pem_label = ""
        self.findings: list[Finding] = []  # spans index the concatenated input

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.findings:
            out[f.type.value] = out.get(f.type.value, 0) + 1
        return out

    @property
    def held(self) -> int:
        """How many input chars are held back right now."""
        return len(self._pending) + len(self._pem_carry)

    def feed(self, delta: str) -> str:
        """The text that is safe to emit now (in flag mode: ``delta`` itself, at once)."""
        if not delta:
            return ""
        out = self._feed(delta)
        return delta if self._mode == "flag" else out

    def flush(self) -> str:
        """The end of the stream: release everything still held."""
        if self._pem:
            self._end_pem(self._pem_carry_pos + len(self._pem_carry))
            self._pem_carry = ""
            self._pending = ""
            return ""
        out = self._release(final=True)
        return "" if self._mode == "flag" else out

    def fork(self) -> StreamScrubber:
        """A fresh scrubber of the same session and mode, for a concurrent (hedged) stream."""
        return StreamScrubber(self._session, mode=self._mode)

    def discard(self) -> None:
        """The stream was cut: drop what is held, unseen by anyone. What comes next (a
        fallback's continuation) is judged against the text that was released, not against
        the dropped tail, so a number cut in half is seen whole when it is written again."""
        self._pos += len(self._pending)
        self._pending = ""
        self._tok = 0
        self._pem = False
        self._pem_carry = ""

    # -- internals ----------------------------------------------------------------------------

    def _feed(self, delta: str) -> str:
        if self._pem:
            rest = self._swallow_pem(delta)
            if rest is None:
                return ""
            delta = rest
        base = len(self._pending)
        self._pending += delta
        # other Unicode spaces only make the hold-back longer, never unsafe
        i = max(delta.rfind(" "), delta.rfind("\n"), delta.rfind("\t"), delta.rfind("\r"))
        if i != -1:
            self._tok = base + i + 1
        return self._release(final=False)

    def _hold_start(self) -> int:
        p = self._pending
        n = len(p)
        k = self._tok
        if n - k > self._max_token:  # an endless token: let it go, keep a bounded tail
            k = n - 256
        elif _CHAIN_TOKEN.fullmatch(p, k):
            m = TAIL_CHAIN.search(p, max(0, k - CHAIN_HOLD), k)
            if m is not None:
                k = m.start()
        b = p.rfind(PEM_BEGIN, max(0, k - 100))
        if b != -1 and "-----" not in p[b + len(PEM_BEGIN) :]:
            k = min(k, b)
        return k

    def _release(self, *, final: bool) -> str:
        pending = self._pending
        cut = len(pending) if final else self._hold_start()
        if not final and self._ner and self._mode == "redact":
            # names are replaced only in redact mode: elsewhere they are counted, not held for
            cut = min(cut, len(pending) - NER_HOLD)
            if cut < NER_BATCH:  # re-reading the window per 4-char delta costs 5x more CPU
                return ""
        if cut <= 0:
            return ""
        ctx = self._ctx
        off = len(ctx)
        window = ctx + pending
        open_pem: Hit | None = None
        kept: list[Hit] = []
        for h in self._session.scrubber._hits(window, off):
            if h.end <= off:
                continue  # already released with the context
            s, e = max(h.start - off, 0), h.end - off
            if not final and h.source == "pem" and h.end == len(window) and s < cut:
                open_pem = Hit(h.type, s, e, h.key, h.source)
                cut = s
                break
            if e <= cut:
                kept.append(Hit(h.type, s, e, h.key, h.source))
            elif s < cut:
                cut = s  # straddles the cut: hold the whole finding back
                break
            else:
                break
        head = pending[:cut]
        if kept:
            kept = [h for h in kept if h.end <= cut]
        if kept:
            mode = "redact" if self._mode == "flag" else self._mode  # flag: the result is unused
            text, findings = self._session.apply(head, kept, mode, offset=self._pos)
            self.findings.extend(findings)
        else:
            text = head
        end = off + cut  # the released text is window[:end]: keep its last CONTEXT chars
        self._ctx = window[end - CONTEXT if end > CONTEXT else 0 : end]
        self._pending = pending[cut:]
        self._pos += cut
        self._tok = max(0, self._tok - cut)
        if open_pem is not None:
            text += self._start_pem()
        return text

    def _start_pem(self) -> str:
        """An unfinished private key block starts the pending text: replace it, swallow the rest."""
        session = self._session
        self._pem = True
        self._pem_start = self._pos
        self._pem_label = session.placeholder(PiiType.SECRET, object())
        self._pem_carry = self._pending
        self._pem_carry_pos = self._pos
        self._pending = ""
        self._tok = 0
        return self._pem_label

    def _swallow_pem(self, delta: str) -> str | None:
        """Drop key material until the END line (or a character no PEM body has); None while inside."""
        text = self._pem_carry + delta
        m = PEM_STOP.search(text)  # the BEGIN line holds no stop character
        if m is None:
            keep = text[-_PEM_CARRY:]
            self._pem_carry_pos += len(text) - len(keep)
            self._pem_carry = keep
            return None
        end = m.end() if m.group().startswith("-----END") else m.start()
        self._end_pem(self._pem_carry_pos + end)
        self._ctx = text[:end][-CONTEXT:]
        self._pem_carry = ""
        return text[end:]

    def _end_pem(self, end: int) -> None:
        self._pem = False
        self.findings.append(Finding(PiiType.SECRET, self._pem_start, end, self._pem_label, "pem"))
        counts = self._session.counts
        counts[PiiType.SECRET.value] = counts.get(PiiType.SECRET.value, 0) + 1
        self._pos = end

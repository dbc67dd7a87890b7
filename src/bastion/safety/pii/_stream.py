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

Most windows of prose need no scan at all. Every pattern scan is led by a digit, "@", ":",
"=", "-", "_" or a few literals (``SCAN_LEAD_CHARS``/``WORDS``); the scrubber tracks where
the last lead is, searching only the new text, and when no lead is in the new text and
none in the context can reach past it (``_calm_past``), and the name tagger has nothing
past the context either, it releases without calling the detector: what it would have
found past the context is nothing. Same output, delta by delta, as scanning every window.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ._detect import _CAPITAL, _NAME_CHARS, SCAN_LEAD_CHARS, SCAN_LEAD_WORDS, _no_name_after
from ._hit import Hit
from ._names import _PARTICLES, NAME_CONTEXT
from ._patterns import (
    ADDRESS_MAX,
    ADDRESS_WORD,
    ALLOW_WINDOW,
    CONTEXT_WINDOW,
    PEM_BEGIN,
    PEM_STOP,
    TAIL_CHAIN,
)
from ._types import Finding, Mode, PiiType

if TYPE_CHECKING:
    from ._scrubber import ScrubSession

CONTEXT = max(64, ALLOW_WINDOW, CONTEXT_WINDOW)
CHAIN_HOLD = 64
# The name tagger reads a token with the words after it: hold that much right context.
NER_HOLD = NAME_CONTEXT
NER_BATCH = 16  # with the tagger on, release at least this much at once
_CHAIN_TOKEN = re.compile(r"[0-9A-Z()+.-]*", re.ASCII)
# what a _CHAIN_TOKEN starts with ("" too: an empty one): a word starting otherwise is none
_CHAIN_FIRST = frozenset(["", *"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ()+.-"])
_LAST_SPACE = re.compile(r"[ \n\t\r][^ \n\t\r]*\Z")  # the last whitespace of a delta
_PEM_CARRY = 96  # enough to see an "-----END ... PRIVATE KEY-----" line split across deltas
# The last scan lead character of a text (a class-led pattern: ``re`` skips to it fast).
_LAST_LEAD_CHAR = re.compile(f"[{re.escape(SCAN_LEAD_CHARS)}][^{re.escape(SCAN_LEAD_CHARS)}]*\\Z")
_LEAD_OVERLAP = max(map(len, SCAN_LEAD_WORDS)) - 1  # a lead word may start this far before
_NO_LEAD = 1 << 40


_DIGIT = re.compile(r"[0-9]")
_UPPER = re.compile(r"[A-Z]")
_ADDRESS_GOES_ON = re.compile(r"[A-Z0-9]\S*[ ]\Z")  # a house number may start mid-token
_SPACES = frozenset(" \t\n\r")
# The context ends in an IBAN that may go on (letters, digits, single spaces after its check
# digits; an IBAN is at most 43 chars long), or in a word a street address may go on from.
_IBAN_GOES_ON = re.compile(r"[A-Za-z]{2}[0-9]{2}(?:[ ]?[A-Za-z0-9])*[ ]\Z")
_IBAN_REACH = 48

# Values the upper-case chain above misses, held back from where they may start while the
# text so far could still grow into one (task sleak): the whole-text detector must see them
# whole, or a part is released before the rest makes them recognisable.
# A lower-case IBAN ("gb82 west 1234 ..."): its head, then letters, digits, single spaces.
_IBAN_TAIL = re.compile(r"[A-Za-z]{2}[0-9]{2}(?:[ ]?[A-Za-z0-9])*[ ]?\Z", re.ASCII)
# A street address: a house number, then capitalised words, ordinals, unit numbers ("221B
# Baker Street", "350 5th Avenue, Suite 3"), the last maybe unfinished.
_ADDRESS_TAIL = re.compile(
    r"(?<![\w.,/:#-])[0-9]{1,6}[A-Za-z]?(?:-[0-9]{0,5})?,?"
    rf"(?:[ ](?:[A-Z][A-Za-z'.-]{{0,{ADDRESS_WORD - 1}}}|#?[0-9][0-9A-Za-z-]{{0,5}}|#),?){{0,8}}[ ]?\Z",
    re.ASCII,
)
# no address is longer (its name words are bounded), so none is ever released in part
_ADDRESS_REACH = ADDRESS_MAX
# A number followed by (the start of) a phone extension: "555-2671 ex", "555-2671 ext 20".
_EXT_TAIL = re.compile(
    r"[0-9][ ]?(?:x|e|ex|ext|ext\.|exte|exten|extens|extensi|extensio|extension"
    r"|(?:x|ext\.?|extension)[ ]?[0-9]{1,6})[ ]?\Z",
    re.ASCII | re.IGNORECASE,
)
_EXT_REACH = 20
# the digit run a phone number ends with, to hold it with its extension
_NUM_RUN_TAIL = re.compile(r"[0-9+(](?:[0-9()]|[ .-](?=[(0-9]))*\Z", re.ASCII)
_VALUE_REACH = _ADDRESS_REACH  # the farthest any of these holds back (all need a digit)


def _hold_values(pending: str, cut: int) -> int:
    """``cut`` moved back to the start of a lower-case IBAN, a street address or a phone
    number with an extension that ``pending`` ends in and that may still go on. Bounded:
    none starts more than ``_VALUE_REACH`` (a phone: ``CHAIN_HOLD`` plus ``_EXT_REACH``)
    chars before the end, so a stream of digits or words is still released."""
    n = len(pending)
    lo = n - _VALUE_REACH if n > _VALUE_REACH else 0
    m = _IBAN_TAIL.search(pending, n - _IBAN_REACH if n > _IBAN_REACH else 0)
    if m is not None and m.start() < cut:
        cut = m.start()
    m = _ADDRESS_TAIL.search(pending, lo)
    if m is not None and m.start() < cut:
        cut = m.start()
    m = _EXT_TAIL.search(pending, n - _EXT_REACH if n > _EXT_REACH else 0)
    if m is not None:
        j = m.start() + 1
        r = _NUM_RUN_TAIL.search(pending, j - CHAIN_HOLD if j > CHAIN_HOLD else 0, j)
        start = m.start() if r is None else r.start()
        if start < cut:
            cut = start
    return cut


def _calm_past(window: str, off: int, lead: int) -> bool:
    """No pattern finding of ``window`` ends past ``off``, given that its last scan lead starts
    ``lead`` chars before its end (the name tagger is asked apart).

    True when ``window`` has no lead, or its leads are all in the released context and none
    can reach past ``off``: the context ends in whitespace, so a finding without whitespace
    (a key, an email, an IPv6 address) ends in it; a digit run ends in a digit; an IBAN and a
    street address go on only from a word and a single space (an address with a capital or
    a digit); a credential or bearer
    value only follows its ":", "=" or "Bearer" across spaces; a PEM block is held or
    swallowed, never released open."""
    n = len(window)
    if lead > n:
        return True
    if lead <= n - off or window[off - 1] not in _SPACES:
        return False  # a lead in the new text, or the context ends inside a token
    if window[off - 1] == " " and off > 1 and window[off - 2] not in _SPACES:
        if _IBAN_GOES_ON.search(window, off - _IBAN_REACH if off > _IBAN_REACH else 0, off):
            return False
        if (
            _UPPER.search(window, off)
            and _DIGIT.search(window, 0, off)
            and _ADDRESS_GOES_ON.search(window, off - CONTEXT if off > CONTEXT else 0, off)
        ):
            return False
    ctx = window[:off]
    return not (ctx.rstrip(" \t").endswith((":", "=", ">", "earer")) or PEM_BEGIN in ctx)


# what may lie between two tokens of one name, stripped: nothing or (part of) a particle
_BRIDGES = frozenset(
    p[i:j] for p in _PARTICLES for i in range(len(p) + 1) for j in range(i, len(p) + 1)
)


def _names_held(window: str, off: int, end: int) -> bool:
    """No span of the shipped tagger starts before ``end`` and ends past ``off``: its spans
    are runs of capitalised tokens (and @handles) joined by a space or a particle, so one
    needs a capital from the token running into ``off`` up to ``end``, or, to reach over
    that stretch from a token before it, a stretch that is only a gap between two tokens."""
    if "@" in window:
        return False
    t = off
    while t > 0 and window[t - 1] in _NAME_CHARS:
        t -= 1
    return _CAPITAL.search(window, t, end) is None and window[t:end].strip() not in _BRIDGES


def _track_lead(window: str, lead: int, fresh: int) -> int:
    """The lead (see ``StreamScrubber._lead``) with the last ``fresh`` chars of ``window``
    searched, and a lead word's length before them."""
    if not fresh:
        return lead
    start = len(window) - fresh - _LEAD_OVERLAP
    region = window[start:] if start > 0 else window
    i = _last_lead(region)
    return lead if i == -1 else len(region) - i


def _last_lead(text: str) -> int:
    """Where the last scan lead of ``text`` starts; -1 when it has none."""
    m = _LAST_LEAD_CHAR.search(text)
    last = -1 if m is None else m.start()
    for w in SCAN_LEAD_WORDS:
        if w in text:
            last = max(last, text.rfind(w))
    return last


class StreamScrubber:
    """Feed it text deltas, emit what it returns, then emit ``flush()``; one per output stream."""

    __slots__ = (
        "_ctx",
        "_detector",
        "_fresh",
        "_lead",
        "_max_token",
        "_mode",
        "_names",
        "_ner_hold",
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
        detector = session.scrubber._detector
        # 0: no name tagger; 1: the shipped one (_no_name_after, _names_held know its spans)
        self._names = 0 if not detector.ner_active else 1 if detector._builtin else 2
        # names are replaced only in redact mode: elsewhere they are counted, not held for
        self._ner_hold = detector.ner_active and mode == "redact"
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
        # The last scan lead (``SCAN_LEADS``) of ctx + pending starts this many chars before
        # its end (_NO_LEAD: none seen); the last _fresh chars are not searched yet.
        self._lead = _NO_LEAD
        self._fresh = 0
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
        out = self._release_all()
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
        self._lead = 1  # as if a lead ended the context: unknown now, so never assumed absent
        self._fresh = 0

    # -- internals ----------------------------------------------------------------------------

    def _feed(self, delta: str) -> str:
        """One delta, the hot path: the hold-back and the calm check inline, a scan if needed."""
        if self._pem:
            rest = self._swallow_pem(delta)
            if rest is None:
                return ""
            delta = rest
        pending = self._pending
        base = len(pending)
        pending += delta
        self._pending = pending
        d = len(delta)
        lead = self._lead + d
        fresh = self._fresh + d
        # other Unicode spaces only make the hold-back longer, never unsafe
        m = _LAST_SPACE.search(delta)
        tok = self._tok if m is None else base + m.start() + 1
        self._tok = tok
        # where the hold-back starts: the trailing token, a chain before it, an open PEM line
        n = len(pending)
        cut = tok
        if n - cut > self._max_token:  # an endless token: let it go, keep a bounded tail
            cut = n - 256
        elif pending[cut : cut + 1] in _CHAIN_FIRST and _CHAIN_TOKEN.fullmatch(pending, cut):
            m = TAIL_CHAIN.search(pending, max(0, cut - CHAIN_HOLD), cut)
            if m is not None:
                cut = m.start()
        b = pending.rfind(PEM_BEGIN, max(0, cut - 100))
        if b != -1 and "-----" not in pending[b + len(PEM_BEGIN) :]:
            cut = min(cut, b)
        if self._ner_hold:
            cut = min(cut, n - NER_HOLD)
            if cut < NER_BATCH:  # re-reading the window per 4-char delta costs 5x more CPU
                cut = 0
        if cut <= 0:
            self._lead = lead
            self._fresh = fresh
            return ""
        ctx = self._ctx
        off = len(ctx)
        window = ctx + pending
        n += off
        # _track_lead and the first test of _calm and _calm_past, inline (the common case)
        start = n - fresh - _LEAD_OVERLAP
        region = window[start:] if start > 0 else window
        m = _LAST_LEAD_CHAR.search(region)
        i = -1 if m is None else m.start()
        for w in SCAN_LEAD_WORDS:
            if w in region:
                i = max(i, region.rfind(w))
        if i != -1:
            lead = len(region) - i
        self._lead = lead
        self._fresh = 0
        # A value held by _hold_values starts with a digit (a scan lead, so one is in the
        # pending text) or an IBAN head ("gb82") before the cut, so a digit is before cut + 3.
        if lead <= n - off and _DIGIT.search(pending, max(0, n - off - _VALUE_REACH), cut + 3):
            cut = self._hold_values(pending, cut)
            if cut <= 0:
                return ""
        names = self._names
        if (lead > n or _calm_past(window, off, lead)) and (
            names == 0
            or (names == 1 and (_no_name_after(window, off) or _names_held(window, off, off + cut)))
        ):
            end = off + cut
            self._ctx = window[end - CONTEXT if end > CONTEXT else 0 : end]
            self._pending = pending[cut:]
            self._pos += cut
            self._tok = tok - cut if tok > cut else 0
            return pending[:cut]
        return self._scan(window, off, cut, final=False)

    def _hold_values(self, pending: str, cut: int) -> int:
        """The cut moved back by ``_hold_values``, then by the PEM and name tagger rules of
        ``_feed`` again (as if applied in its order)."""
        held = _hold_values(pending, cut)
        if held == cut:
            return cut
        b = pending.rfind(PEM_BEGIN, max(0, held - 100))
        if b != -1 and "-----" not in pending[b + len(PEM_BEGIN) :]:
            held = min(held, b)
        return 0 if self._ner_hold and held < NER_BATCH else held

    def _calm(self, window: str, off: int, cut: int) -> bool:
        """Whether ``detect`` of ``window`` would find nothing that starts before ``off + cut``
        and ends past ``off``: no lead can reach past the context, and no name either (or
        only one in the held text, from ``off + cut``)."""
        if not _calm_past(window, off, self._lead):
            return False
        names = self._names
        return names == 0 or (
            names == 1 and (_no_name_after(window, off) or _names_held(window, off, off + cut))
        )

    def _release_all(self) -> str:
        """The end of the stream: release everything, its findings replaced."""
        pending = self._pending
        cut = len(pending)
        if cut <= 0:
            return ""
        ctx = self._ctx
        off = len(ctx)
        window = ctx + pending
        self._lead = _track_lead(window, self._lead, self._fresh)
        self._fresh = 0
        if self._calm(window, off, cut):
            self._ctx = window[-CONTEXT:]
            self._pending = ""
            self._pos += cut
            self._tok = 0
            return pending
        return self._scan(window, off, cut, final=True)

    def _scan(self, window: str, off: int, cut: int, *, final: bool) -> str:
        """Release up to ``cut`` of the pending text, its findings replaced (or up to the
        start of a finding that straddles the cut)."""
        pending = self._pending
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
        self._lead = 1  # the context ends in plain text before the key; assume a lead there
        self._fresh = 0
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
        self._lead = 1  # the END line (or a stop character) ends the context
        self._fresh = 0
        return text[end:]

    def _end_pem(self, end: int) -> None:
        self._pem = False
        self.findings.append(Finding(PiiType.SECRET, self._pem_start, end, self._pem_label, "pem"))
        counts = self._session.counts
        counts[PiiType.SECRET.value] = counts.get(PiiType.SECRET.value, 0) + 1
        self._pos = end

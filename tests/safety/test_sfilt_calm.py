"""The streamed PII filter's calm-window path (task sfilt) changes nothing and leaks nothing.

A window whose scan leads (``SCAN_LEAD_CHARS``/``SCAN_LEAD_WORDS``) are all in the released
context, none able to reach past it, is released without a scan. Checked three ways: the
reasons hold against the real detectors (a text stripped of its leads has no finding; a
calm window has no finding past its context), and streams equal the implementation before,
kept here verbatim, delta by delta, for texts built to put leads right before the cut
(lower-case IBANs, addresses, credentials and bearer values split from their keys).
"""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.safety.pii import Scrubber, ScrubberConfig, ScrubSession
from bastion.safety.pii._detect import SCAN_LEAD_CHARS, SCAN_LEAD_WORDS, Detector
from bastion.safety.pii._hit import Hit
from bastion.safety.pii._names import NAME_CONTEXT
from bastion.safety.pii._patterns import (
    ALLOW_WINDOW,
    CONTEXT_WINDOW,
    PEM_BEGIN,
    PEM_STOP,
    TAIL_CHAIN,
)
from bastion.safety.pii._stream import (
    _NO_LEAD,
    _VALUE_REACH,
    _calm_past,
    _hold_values,
    _last_lead,
    _names_held,
)
from bastion.safety.pii._types import Finding, Mode, PiiType

CONTEXT = max(64, ALLOW_WINDOW, CONTEXT_WINDOW)
CHAIN_HOLD = 64
NER_HOLD = NAME_CONTEXT
NER_BATCH = 16
_CHAIN_TOKEN = re.compile(r"[0-9A-Z()+.-]*", re.ASCII)
_PEM_CARRY = 96


class Before:
    """``StreamScrubber`` as of a7516f0 (before the calm-window path), verbatim but for the
    hold-back of lower-case IBANs, addresses and phone extensions (``_hold_values``, task
    sleak), which both share: what is compared is the calm path, not the hold-back."""

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

    def fork(self) -> Before:
        """A fresh scrubber of the same session and mode, for a concurrent (hedged) stream."""
        return Before(self._session, mode=self._mode)

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
        if re.search(r"[0-9]", p[max(0, n - _VALUE_REACH) :]):
            k = _hold_values(p, k)
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


SCRUBBERS = {
    "names": Scrubber(),
    "patterns": Scrubber(ScrubberConfig(ner="off")),
    "short-tokens": Scrubber(ScrubberConfig(ner="off", stream_max_token=256)),
}

PII = [
    "ann.lee@example.com",
    "4111 1111 1111 1111",
    "+44 20 7946 0958",
    "(415) 555-2671 ext 204",
    "call me on 4155552671",
    "GB82 WEST 1234 5698 7654 32",
    "gb82 west 1234 5698 7654 32",
    "GB82 WEST",
    "DE89 3704 0044 0532 0130 00",
    "SSN 123-45-6789",
    "203.0.113.7",
    "fe80::1ff:fe23:4567:890a",
    "version 1.2.3.4",
    "ORD-2024-000123",
    "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "password: Hunter2!x",
    "password:",
    "api_key =",
    "token:\t",
    "Authorization: Bearer",
    "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
    "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv",
    "AKIAIOSFODNN7EXAMPLE",
    "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg4LVWM9nuwNSk3yBy\n-----END EC PRIVATE KEY-----",
    '-----BEGIN RSA PRIVATE KEY-----"',  # a key cut short (a JSON string's end)
    "221B Baker Street",
    "350 5th Avenue, Suite 3",
    "1600",
    "Pennsylvania Ave NW",
    "Maria Lopez",
    "Ludwig van Beethoven",
    "@ann_lee",
]
WORDS = [
    "the", "order", "ships", "Thanks", "As", "it", "In", "Baker", "Street", "Main", "St.",
    "west", "WEST", "abcd", "Zx9Qw8Er7Ty6Ui5Op4", "correcthorsebattery", "abcdefghijklmnopqrstu",
    "well-known", "note:", "a=b", "snake_case", "#42", "7", "—", "Über", "x", "IA", "eyJ",
    "hooks.slack.com", "earer",
]  # fmt: skip
SEPS = [" ", " ", " ", ", ", ". ", "\n", "  ", "\t", ": ", "="]

piece = st.one_of(st.sampled_from(PII), st.sampled_from(WORDS), st.text(max_size=5))
texts = st.lists(st.tuples(piece, st.sampled_from(SEPS)), max_size=30).map(
    lambda parts: "".join(p + s for p, s in parts)
)


# values the stream still gets wrong: a private key header cut short by a JSON string's end
# (a phone's extension, a lower-case IBAN and a street address split by words were gaps
# too until the value hold-back, task sleak: see test_sleak_holdback.py)
KNOWN_GAPS = ('KEY-----"',)


def chunked(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts})
    edges = [0, *points, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(edges) if b > a]


def spans(fs: list[Finding]) -> list[tuple[object, ...]]:
    return [(f.type, f.start, f.end, f.placeholder, f.source) for f in fs]


def true_lead(text: str) -> int:
    i = _last_lead(text)
    return _NO_LEAD if i == -1 else len(text) - i


def run_both(scrubber: Scrubber, chunks: list[str], mode: Mode, cut_at: int | None) -> None:
    new_s, old_s = scrubber.session(), scrubber.session()
    new, old = new_s.stream(mode=mode), Before(old_s, mode=mode)
    for i, c in enumerate(chunks):
        if i == cut_at:  # a stream cut mid-answer (a fallback carries on)
            new.discard()
            old.discard()
        assert new.feed(c) == old.feed(c), f"delta {i} of {chunks!r}"
        assert new.held == old.held
        window = new._ctx + new._pending
        lead = true_lead(window)
        if not new._fresh and not new._pem and lead <= len(window):
            assert new._lead <= lead  # the tracked lead is never earlier than the true one
    assert new.flush() == old.flush()
    assert spans(new.findings) == spans(old.findings)
    assert new.counts == old.counts
    assert new_s.counts == old_s.counts


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    texts,
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
    st.sampled_from(sorted(SCRUBBERS)),
    st.sampled_from(["redact", "sensitive", "flag"]),
    st.one_of(st.none(), st.integers(min_value=0, max_value=30)),
)
def test_stream_equals_the_implementation_before_delta_by_delta(
    text: str, cuts: list[int], which: str, mode: Mode, cut_at: int | None
) -> None:
    run_both(SCRUBBERS[which], chunked(text, cuts), mode, cut_at)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts, st.sampled_from(sorted(SCRUBBERS)))
def test_word_by_word_streams_equal_the_implementation_before(text: str, which: str) -> None:
    chunks = re.findall(r"\s*\S+|\s+", text)
    for mode in ("redact", "sensitive", "flag"):
        run_both(SCRUBBERS[which], chunks, mode, None)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts, st.sampled_from(["names", "patterns"]))
def test_word_by_word_output_is_the_whole_text_scrub(text: str, which: str) -> None:
    """What the client sees, in every mode the gateway uses: the whole-text result, and no
    delta's output holds a value that the whole-text scrub replaces."""
    scrubber = SCRUBBERS[which]
    if any(k in text for k in KNOWN_GAPS):  # older than this path
        return
    chunks = re.findall(r"\s*\S+|\s+", text)
    for mode in ("redact", "sensitive"):
        whole = scrubber.session().scrub(text, mode=mode)
        s = scrubber.session().stream(mode=mode)
        outs = [s.feed(c) for c in chunks] + [s.flush()]
        assert "".join(outs) == whole.text
        hidden = [text[f.start : f.end] for f in whole.findings if f.placeholder not in text]
        replaced = [v for v in hidden if v not in whole.text and len(v) > 3]
        for out in outs:
            assert not any(v in out for v in replaced), (out, replaced)


def strip_leads(text: str) -> str:
    for w in SCAN_LEAD_WORDS:
        text = text.replace(w, " ")
    return text.translate({ord(c): " " for c in SCAN_LEAD_CHARS})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts)
def test_a_text_without_scan_leads_has_no_pattern_finding(text: str) -> None:
    """What the skip rests on: every pattern scan of ``detect`` is led by a ``SCAN_LEAD``."""
    bare = strip_leads(text)
    while _last_lead(bare) != -1:  # a replacement may make a new lead word
        bare = strip_leads(bare)
    assert SCRUBBERS["patterns"]._detector.detect(bare) == []


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts, st.integers(min_value=0, max_value=10_000))
def test_a_calm_window_has_no_finding_past_its_context(text: str, at: int) -> None:
    """``_calm_past`` against the real detectors: wherever the context ends (after some
    whitespace, as the stream releases), no pattern finding ends past it when it says calm."""
    ends = [m.end() for m in re.finditer(r"\s", text)]
    if not ends:
        return
    off = ends[at % len(ends)]
    window = text[max(0, off - CONTEXT) :]
    off -= max(0, off - CONTEXT)
    if not _calm_past(window, off, true_lead(window)):
        return
    hits = SCRUBBERS["patterns"]._detector.detect(window, off)
    assert [h for h in hits if h.end > off] == []


def test_leads_in_the_context_that_reach_past_it_are_scanned() -> None:
    """The cases the reach rules exist for: each continues a finding from the context."""
    cases = [
        ("pay to gb82 west 1234 5698 ", "7654 ab"),  # an IBAN's groups go on
        ("send it to 221B Baker ", "Street please"),  # an address goes on
        ("the password: ", "correcthorsebattery"),  # a credential's value
        ("Authorization: Bearer ", "abcdefghijklmnopqrstuvwxyz"),  # a bearer value
    ]
    for ctx, new in cases:
        window = ctx + new
        assert not _calm_past(window, len(ctx), true_lead(window)), ctx
    window = "order 42 shipped. thanks for waiting "
    assert _calm_past(window + "on us", len(window), true_lead(window + "on us"))


def test_a_stream_of_prose_scans_only_where_leads_are(monkeypatch: pytest.MonkeyPatch) -> None:
    """The point: word by word prose with no lead is released without a single scan."""
    scans = 0
    detect = Detector.detect

    def counting(self: Detector, text: str, after: int = 0) -> list[Hit]:
        nonlocal scans
        scans += 1
        return detect(self, text, after)

    monkeypatch.setattr(Detector, "detect", counting)
    s = SCRUBBERS["patterns"].stream(mode="sensitive")
    words = ["the", "system", "simplifies", "every", "edge", "case", "from", "the", "start"]
    out = "".join(s.feed(" " + w) for w in words) + s.flush()
    assert out == " " + " ".join(words)
    assert scans == 0
    s = SCRUBBERS["patterns"].stream(mode="sensitive")
    out = "".join(s.feed(" " + w) for w in ["mail", "ann@example.com", "now", "please"])
    assert out + s.flush() == " mail [EMAIL_1] now please"
    assert scans > 0


def test_a_phone_extension_in_a_later_delta() -> None:
    text = "call (415) 555-2671 ext 204 now"
    s = SCRUBBERS["patterns"].stream(mode="redact")
    out = "".join(s.feed(c) for c in re.findall(r"\s*\S+", text)) + s.flush()
    assert out == SCRUBBERS["patterns"].scrub(text).text


def test_a_lower_case_iban_split_by_words() -> None:
    text = "pay gb82 west 1234 5698 7654 32 now"
    s = SCRUBBERS["patterns"].stream(mode="redact")
    out = "".join(s.feed(c) for c in re.findall(r"\s*\S+", text)) + s.flush()
    assert out == SCRUBBERS["patterns"].scrub(text).text


def test_a_street_address_split_by_words() -> None:
    text = "at 221B Baker Street now"
    s = SCRUBBERS["patterns"].stream(mode="redact")
    out = "".join(s.feed(c) for c in re.findall(r"\s*\S+", text)) + s.flush()
    assert out == SCRUBBERS["patterns"].scrub(text).text


NAMES = [
    "Ludwig van Beethoven", "Mr. Jan van Dijk", "Charles de Gaulle", "Maria del Carmen",
    "Omar bin Laden", "Maria Lopez", "Ann", "Lee", "José Álvarez", "O'Brien", "New York",
    "van", "de", "st.", "la", "Dr.", "The", "I", "Thanks", "Jean-Luc", "@ann_lee", "Hi",
]  # fmt: skip
name_texts = st.lists(
    st.tuples(st.one_of(st.sampled_from(NAMES), st.sampled_from(WORDS)), st.sampled_from(SEPS)),
    max_size=25,
).map(lambda parts: "".join(p + s for p, s in parts))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name_texts, st.integers(min_value=0, max_value=10_000), st.integers(min_value=1, max_value=4)
)
def test_names_held_means_no_tagger_span_over_the_released_stretch(
    text: str, at: int, words: int
) -> None:
    """``_names_held`` against the shipped tagger: when it says so, no span starts before the
    cut and ends past the context, for a context ending and a cut at any word starts."""
    starts = [0, *(m.end() for m in re.finditer(r"\s+", text))]
    off = starts[at % len(starts)]
    end = starts[min(len(starts) - 1, at % len(starts) + words)]
    if end <= off or not _names_held(text, off, end):
        return
    ner = SCRUBBERS["names"]._detector._ner
    assert ner is not None
    spans = [(sp.start, sp.end) for sp in ner.detect(text)]
    assert [sp for sp in spans if sp[0] < end and sp[1] > off] == [], (text, off, end)


def test_a_name_over_a_particle_is_not_held_back_unscanned() -> None:
    text = "Contact Charles de Gaulle"  # one span over the particle
    off, end = text.index("de"), text.index("Gaulle")
    assert not _names_held(text, off, end)  # "van " may be the middle of one name
    assert _names_held("we met the Beethoven", 7, 11)

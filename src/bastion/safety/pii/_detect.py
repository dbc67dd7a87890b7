"""Detection: the literal-led scans, overlap resolution, allow-patterns and the NER merge.

Allow-patterns are matched only around findings (``ALLOW_WINDOW`` chars each side), not
over the whole text: most texts have no findings, and a scan of every allow pattern over
5 KB costs more than all the detectors together. A finding wholly inside an allowed span
(a ticket number, a UUID, "version 1.2.3.4") is dropped; one that only touches an
allowed span is kept, so an allow-pattern can never excuse a neighbouring phone number.
"""

from __future__ import annotations

import bisect
import re
from types import MappingProxyType

from ._hit import Hit, word_char
from ._ner import NerDetector, load_ner
from ._numbers import NumberScanner
from ._patterns import (
    ADDRESS,
    ALLOW_WINDOW,
    ALNUM,
    AWS_KEY_ID,
    AWS_SECRET,
    BASTION_KEY,
    BEARER,
    CRED_KEYWORDS,
    CRED_VALUE,
    DASH,
    EMAIL_DOMAIN,
    EMAIL_LOCAL,
    GITHUB_PAT,
    GITHUB_TOKEN,
    GOOGLE_API_KEY,
    HEX,
    IPV6,
    JWT,
    OPENAI_KEY,
    PASSWORD_WORDS,
    PEM,
    SLACK_HOOK,
    SLACK_TOKEN,
    STRIPE_KEY,
    UNDERSCORE,
    compile_allow,
)
from ._types import NER_TYPES, PiiType, ScrubberConfig
from ._validators import ip_key, jwt_ok, mixed, password_ok, random_enough

_DIGIT_SOURCES = frozenset({"phone", "card", "ssn", "ipv4"})
_INF = 1 << 62
_DIGIT = re.compile(r"[0-9]")  # every NUM and ADDRESS match holds one
# what the name tagger's CANDIDATE tokens start with, and every character they may hold
_CAPITAL = re.compile(r"[A-ZÀ-ÖØ-Þ]")
_NAME_CHARS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'’-"
    + "".join(chr(c) for c in range(0xC0, 0x100) if c not in (0xD7, 0xF7))
)
# What leads every pattern scan of ``Detector.detect``: a digit (numbers, addresses), "@",
# ":", "=", "-", "_" or one of ``_secrets``' literals. A text holding none of them has no
# pattern finding, only names. The streamed filter skips the scan of such a
# window; keep this in step with ``detect`` (tests/safety/test_sfilt_calm.py checks it).
SCAN_LEAD_CHARS = "0123456789@:=_-"
SCAN_LEAD_WORDS = ("eyJ", "AIza", "IA", "earer", "hooks.slack.com")

# When two findings overlap, the union is redacted under the first type in this order.
_PRIORITY = MappingProxyType(
    {
        t: i
        for i, t in enumerate(
            (
                PiiType.SECRET,
                PiiType.CARD,
                PiiType.IBAN,
                PiiType.SSN,
                PiiType.EMAIL,
                PiiType.PHONE,
                PiiType.IP,
                PiiType.ADDRESS,
                PiiType.PERSON,
                PiiType.LOCATION,
            )
        )
    }
)


class Detector:
    """Finds PII spans in one text; built once, shared by every call (holds no per-call state)."""

    __slots__ = (
        "_address",
        "_allow",
        "_builtin",
        "_email",
        "_ignore_local",
        "_ip",
        "_ner",
        "_numbers",
        "_secret",
        "_types",
    )

    def __init__(self, config: ScrubberConfig) -> None:
        self._allow = compile_allow(config.allow_patterns + config.extra_allow_patterns)
        self._types = config.entities
        self._numbers = NumberScanner(self._types, config.phone_regions, config.ignore_local_ips)
        self._email = PiiType.EMAIL in self._types
        self._ip = PiiType.IP in self._types
        self._secret = PiiType.SECRET in self._types
        self._ignore_local = config.ignore_local_ips
        self._address = PiiType.ADDRESS in self._types
        ner: NerDetector | None = None
        if self._types & NER_TYPES:
            ner = config.ner_detector if config.ner_detector is not None else load_ner(config.ner)
        self._ner = ner
        self._builtin = False  # the shipped tagger: its spans are capitalised tokens, @handles
        if ner is not None:
            from ._names import BuiltinNer

            self._builtin = isinstance(ner, BuiltinNer)

    @property
    def ner_active(self) -> bool:
        return self._ner is not None

    def detect(self, text: str, after: int = 0) -> list[Hit]:
        """Every finding in ``text``: sorted, non-overlapping, allow-patterns applied.

        Findings that end at or before ``after`` may be left out (a stream has released
        that text already and reads it only as context): the name tagger is skipped when
        no token of it can end past ``after``. Every finding ending past it is the same.
        """
        hits: list[Hit] = []
        digits = _DIGIT.search(text) is not None  # the number families and addresses need one
        if digits and self._numbers.active:
            self._numbers.scan(text, hits)
        if self._email and "@" in text:
            self._emails(text, hits)
        if (self._ip or self._secret) and ":" in text:
            self._delimiters(text, ":", hits)
        if self._secret:
            if "=" in text:
                self._delimiters(text, "=", hits)
            self._secrets(text, hits)
        if digits and self._address:
            hits.extend(
                Hit(PiiType.ADDRESS, m.start(), m.end(), m.group().casefold(), "address")
                for m in ADDRESS.finditer(text)
            )
        if len(hits) > 1:
            hits = _resolve(hits)
        if hits and self._allow is not None:
            hits = self._not_allowed(text, hits)
        if self._ner is not None and not (self._builtin and _no_name_after(text, after)):
            hits = self._merge_ner(text, hits)
        return hits

    # -- emails ------------------------------------------------------------------------------

    def _emails(self, text: str, out: list[Hit]) -> None:
        at = text.find("@")
        while at != -1:
            m = EMAIL_DOMAIN.match(text, at)
            if m is None:
                at = text.find("@", at + 1)
                continue
            j = at
            while j > 0 and at - j < 64 and text[j - 1] in EMAIL_LOCAL:
                j -= 1
            while j < at and text[j] not in ALNUM:
                j += 1
            if j < at:
                out.append(Hit(PiiType.EMAIL, j, m.end(), text[j : m.end()].lower(), "email"))
            at = text.find("@", m.end())

    # -- ":" and "=": IPv6 addresses, key=value credentials ----------------------------------

    def _delimiters(self, text: str, ch: str, out: list[Hit]) -> None:
        i = text.find(ch)
        skip_to = 0
        while i != -1:
            if i >= skip_to:
                hit = self._ipv6_at(text, i) if ch == ":" and self._ip else None
                if hit is None and self._secret:
                    hit = _credential_at(text, i)
                if hit is not None:
                    out.append(hit)
                    skip_to = hit.end
            i = text.find(ch, i + 1)

    def _ipv6_at(self, text: str, i: int) -> Hit | None:
        j = text.find(":", i + 1, i + 6)
        if j == -1 or any(c not in HEX for c in text[i + 1 : j]):
            return None
        k = i
        while k > 0 and i - k < 4 and text[k - 1] in HEX:
            k -= 1
        if k and (word_char(text[k - 1]) or text[k - 1] in ":."):
            return None
        m = IPV6.match(text, k)
        if m is None:
            return None
        key = ip_key(m.group(), ignore_local=self._ignore_local)
        return None if key is None else Hit(PiiType.IP, k, m.end(), key, "ipv6")

    # -- provider keys and tokens ------------------------------------------------------------

    def _secrets(self, text: str, out: list[Hit]) -> None:
        if "-" in text:
            skip_to = 0
            for m in DASH.finditer(text):
                if m.start() >= skip_to:
                    hit = _dash_token(text, m.start())
                    if hit is not None:
                        out.append(hit)
                        skip_to = hit.end
        if "_" in text:
            for m in UNDERSCORE.finditer(text):
                i = m.start()
                if text.startswith("github_pat", i - 10):
                    hit = _token(text, i - 10, GITHUB_PAT, "github_pat")
                elif text.startswith("k_", i - 6):
                    hit = _token(text, i - 7, STRIPE_KEY, "stripe_key")
                else:
                    hit = _token(text, i - 3, GITHUB_TOKEN, "github_token")
                if hit is not None:
                    out.append(hit)
        if "eyJ" in text:
            for m in JWT.finditer(text):
                if _boundary(text, m.start()) and jwt_ok(m.group()):
                    out.append(Hit(PiiType.SECRET, m.start(), m.end(), m.group(), "jwt"))
        if "AIza" in text:
            for m in GOOGLE_API_KEY.finditer(text):
                if _boundary(text, m.start()):
                    out.append(Hit(PiiType.SECRET, m.start(), m.end(), m.group(), "google_api_key"))
        if "IA" in text:
            for m in AWS_KEY_ID.finditer(text):
                s = m.start() - 2
                if s == 0 or text[s - 1] not in ALNUM:
                    out.append(Hit(PiiType.SECRET, s, m.end(), text[s : m.end()], "aws_access_key"))
        if "earer" in text:
            for m in BEARER.finditer(text):
                value = m.group(1)
                if _boundary(text, m.start() - 1) and (random_enough(value) or jwt_ok(value)):
                    out.append(Hit(PiiType.SECRET, m.start(1), m.end(1), value, "bearer"))
        if "hooks.slack.com" in text:
            for m in SLACK_HOOK.finditer(text):
                s = m.start() - 8 if text.startswith("https://", m.start() - 8) else m.start()
                out.append(Hit(PiiType.SECRET, s, m.end(), m.group(), "slack_webhook"))

    # -- allow-patterns and NER ---------------------------------------------------------------

    def _not_allowed(self, text: str, hits: list[Hit]) -> list[Hit]:
        """Drop findings an allowed span excuses: wholly inside one, or (for digit-run
        findings) left with fewer than 7 digits outside them, like "(08.02.2024".

        Allow-patterns run only over windows around findings; nearby windows are merged
        so dense text costs at most one pass.
        """
        assert self._allow is not None
        n = len(text)
        windows: list[list[int]] = []
        for h in hits:
            lo, hi = max(0, h.start - ALLOW_WINDOW), min(n, h.end + ALLOW_WINDOW)
            if windows and lo <= windows[-1][1]:
                windows[-1][1] = max(windows[-1][1], hi)
            else:
                windows.append([lo, hi])
        spans = [
            m.span()
            for lo, hi in windows
            for m in self._allow.finditer(text, lo, hi)
            if m.end() > m.start()
        ]
        if not spans:
            return hits
        return [h for h in hits if not _excused(text, h, spans)]

    def _merge_ner(self, text: str, hits: list[Hit]) -> list[Hit]:
        """Pattern findings win; a NER span overlapping one is dropped."""
        assert self._ner is not None
        extra: list[Hit] = []
        spans = sorted(self._ner.detect(text), key=lambda sp: sp.start)
        i, n = 0, len(hits)  # hits are sorted and disjoint: one merge pass, not spans x hits
        for span in spans:
            if span.type not in self._types or not 0 <= span.start < span.end <= len(text):
                continue
            while i < n and hits[i].end <= span.start:
                i += 1
            if i < n and hits[i].start < span.end:
                continue
            key = text[span.start : span.end].casefold()
            extra.append(Hit(span.type, span.start, span.end, key, "ner"))
        return _resolve(hits + extra) if extra else hits


def _no_name_after(text: str, after: int) -> bool:
    """No span of the shipped tagger can end past ``after``: no "@" (handles) in ``text``, and
    no capital letter from the start of the token running into ``after`` on (its names are
    runs of ``CANDIDATE`` tokens, each led by one and made of ``_NAME_CHARS`` only)."""
    if "@" in text:
        return False
    t = after
    while t > 0 and text[t - 1] in _NAME_CHARS:
        t -= 1
    return _CAPITAL.search(text, t) is None


def _excused(text: str, h: Hit, spans: list[tuple[int, int]]) -> bool:
    # spans are sorted and disjoint (one finditer per window, windows in order and apart), so
    # the ones overlapping h are the run from the first ending after h.start: a bisect, not a
    # pass over every span for every finding
    i = bisect.bisect_right(spans, (h.start, _INF))
    if i and spans[i - 1][1] > h.start:
        i -= 1
    near: list[tuple[int, int]] = []
    for s, e in spans[i:]:
        if s >= h.end:
            break
        if h.start < e:
            near.append((s, e))
    if not near:
        return False
    if any(s <= h.start and h.end <= e for s, e in near):
        return True
    if h.source not in _DIGIT_SOURCES:
        return False
    outside = sum(
        1
        for i in range(h.start, h.end)
        if text[i].isdigit() and not any(s <= i < e for s, e in near)
    )
    return outside < 7


def _boundary(text: str, start: int) -> bool:
    """Nothing token-like glued on before ``start``."""
    return start <= 0 or not (word_char(text[start - 1]) or text[start - 1] == "-")


def _token(text: str, start: int, rx: re.Pattern[str], source: str) -> Hit | None:
    """Match a prefixed token at ``start`` and validate it."""
    if start < 0 or not _boundary(text, start):
        return None
    m = rx.match(text, start)
    if m is None:
        return None
    raw = m.group()
    if source == "openai_key":
        ok = random_enough(raw[3:].removeprefix("ant-").removeprefix("proj-"))
    elif source == "bastion_key":
        ok = mixed(raw[4:])
    else:
        ok = True  # fixed prefixes and lengths: the regex is the validation
    if not ok:
        return None
    return Hit(PiiType.SECRET, start, m.end(), raw, source)


def _dash_token(text: str, i: int) -> Hit | None:
    """The token whose prefix ends with the "-" at ``i`` (or the PEM block it starts)."""
    if text.startswith("-----BEGIN", i):
        m = PEM.match(text, i)
        return None if m is None else Hit(PiiType.SECRET, i, m.end(), object(), "pem")
    if text.startswith("sk", i - 2):
        return _token(text, i - 2, OPENAI_KEY, "openai_key")
    if text.startswith("bst", i - 3):
        return _token(text, i - 3, BASTION_KEY, "bastion_key")
    if text.startswith("xapp", i - 4) or text.startswith("xox", i - 4):
        return _token(text, i - 4, SLACK_TOKEN, "slack_token")
    return None


def _credential_at(text: str, i: int) -> Hit | None:
    """``password: hunter2!``, ``api_key="..."``, ``AWS_SECRET_ACCESS_KEY=...``: keyword read backwards."""
    j = i
    while j > 0 and text[j - 1] in " \t":
        j -= 1
    if j > 0 and text[j - 1] in "\"'":
        j -= 1
    if j == 0 or not text[j - 1].isalpha():
        return None
    kw = text[max(0, j - 24) : j].lower()
    if not kw.endswith(CRED_KEYWORDS):
        return None
    m = CRED_VALUE.match(text, i + 1)
    if m is None:
        return None
    value = m.group(1)
    aws = len(value) == 40 and "secret" in kw and AWS_SECRET.fullmatch(value) is not None
    if kw.endswith(PASSWORD_WORDS):
        ok = password_ok(value)
    else:
        ok = mixed(value) if aws else random_enough(value)
    if not ok:
        return None
    source = "aws_secret_key" if aws else "credential"
    return Hit(PiiType.SECRET, m.start(1), m.end(1), value, source)


def _resolve(hits: list[Hit]) -> list[Hit]:
    """Sort, and fold overlapping findings into one span (typed by priority), so nothing leaks."""
    hits.sort(key=lambda h: (h.start, -h.end))
    out: list[Hit] = [hits[0]]
    for h in hits[1:]:
        last = out[-1]
        if h.start >= last.end:
            out.append(h)
            continue
        if h.end <= last.end and _PRIORITY[last.type] <= _PRIORITY[h.type]:
            continue
        win = last if _PRIORITY[last.type] <= _PRIORITY[h.type] else h
        out[-1] = Hit(win.type, last.start, max(last.end, h.end), win.key, win.source)
    return out

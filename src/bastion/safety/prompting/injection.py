"""Prompt-injection detection for user content and retrieved documents.

Fencing (the builder) is the architectural defense; this is the tripwire that lets a
feature flag, refuse, or drop what is plainly an attack before the model reads it.
``InjectionScanner.scan`` looks for override phrasing (English, Spanish, French,
German, Portuguese, Italian, Dutch, Russian, Chinese, Japanese), role, section,
fence and chat-template forgery, hidden text (zero-width, Unicode tags — decoded and
rescanned — bidi overrides, variation-selector smuggling, homoglyphs), encoded
payloads (base64, hex, rot13, URL and entity encoding, reversed text — decoded and
rescanned only when a candidate is found), and instructions aimed at tools or at
exfiltration (markdown images with data in the query string, "send the conversation
to ..."). Distinct reasons combine as independent evidence into a 0..1 score.

Rules only know the phrasings someone wrote down, so a learned model is shipped too
(``classifier.py``: logistic regression over word n-grams, scored per window of a
few sentences, so one instruction hidden in a long email is found). It also scores
every payload the rules decoded (base64, hex, hidden text ...). Its probability is
moved onto the rules' scale (its operating point, picked on a validation split of
the training data and stored with the weights, maps to 0.5) and the text's score is
the larger of the two: the rules' combined evidence keeps its meaning, and the model
alone can flag what no rule names. The model reports itself as one reason,
``classifier:<version>=<score>``, so the call record carries its score and version.
Any other detector plugs in through the ``Classifier`` protocol instead
(``classifier=None`` runs the rules alone).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, Protocol, runtime_checkable

from ._anchors import ANCHOR_INFO, ANCHOR_WORDS, ANCHORS, has_run
from ._decode import encoded, hidden, runs
from ._rules_i18n import CJK_RULES
from ._rules_symbols import (
    CJK_GATE,
    LINE_RULES,
    LONG_RUN,
    NEGATION,
    SYMBOL_REASONS,
    SYMBOL_RULES,
    TRANSCRIPT,
)
from .classifier import InjectionClassifier, shipped

Action = Literal["flag", "block", "drop"]
Source = Literal["user", "doc"]

# A user talks to the assistant by design; the same words in a document are aimed at the model.
USER_SCALE: Mapping[str, float] = MappingProxyType(
    {"address:ai": 0.5, "address:directive": 0.5, "address:assistant": 0.0}
)
REPORTED_WEIGHT = 0.45
ACTIONS: tuple[Action, ...] = ("flag", "block", "drop")
# the rules' revision; a finding's version adds the model's (``InjectionScanner.version``)
VERSION = "injection-rules-2026.12.04"
# alone and below this (on the rules' scale) the model's view is noise, not a reason to record
REPORT_FLOOR = 0.2
# decoded payloads the model reads too (rot13/reversed windows are guesses around a hint word)
_CLASSIFY_DECODED = frozenset(["encoded:base64", "encoded:hex", "encoded:url", "encoded:entities"])

_DAN = re.compile(r"\bDAN\b")
_IMG_URL = re.compile(
    r"!\[[^\]\n]{0,200}\]\(\s*<?(https?://[^\s)>]+)|<img\b[^>]{0,200}?\bsrc\s*=\s*[\"']?(https?://[^\"'\s>]+)",
    re.I,
)
_URL_TEMPLATE = re.compile(
    r"https?://[^\s)>\]]+\?[^\s)>\]]*(?:\{|%7b|\$\{|\$[A-Z_]{3,}|\[[A-Z_]{3,})", re.I
)
_SENSITIVE_PARAMS = frozenset(
    [
        "data",
        "d",
        "prompt",
        "msg",
        "message",
        "conv",
        "conversation",
        "chat",
        "history",
        "secret",
        "token",
        "key",
        "k",
        "pw",
        "pass",
        "password",
        "session",
        "info",
        "leak",
        "exfil",
        "cookie",
        "email",
        "mail",
        "user",
        "u",
        "c",
        "ctx",
        "context",
        "summary",
        "s",
        "q",
        "payload",
    ]
)
_PLACEHOLDER = re.compile(r"[{}$<\[]|%7b|%24|%3c", re.I)
# the anchors' info as a plain dict for the hot loop (read-only by convention: a
# mappingproxy look-up costs about twice as much)
_ANCHOR_INFO = dict(ANCHOR_INFO)


@runtime_checkable
class Classifier(Protocol):
    """An ML injection detector: returns the probability that ``text`` is an injection attempt."""

    name: str

    def score(self, text: str) -> float: ...


class _Shipped:
    """Marker for "the model in the package", loaded on first use of a scanner."""


SHIPPED = _Shipped()


@dataclass(frozen=True, slots=True)
class ScanResult:
    """How likely the text is an injection (0..1) and why; ``flagged`` is score >= threshold."""

    score: float
    reasons: list[str] = field(default_factory=list)
    flagged: bool = False
    model_score: float | None = None  # the shipped model's own probability, before rescaling

    @property
    def clean(self) -> bool:
        return not self.reasons


@dataclass(frozen=True, slots=True)
class InjectionPolicy:
    """What one feature does with a flagged text: per source, and at which score."""

    threshold: float = 0.5
    user_action: Action = "block"
    doc_action: Action = "drop"

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError("injection threshold must be in (0, 1]")
        for a in (self.user_action, self.doc_action):
            if a not in ACTIONS:
                raise ValueError(f"unknown injection action {a!r}; expected one of {ACTIONS}")
        if self.user_action == "drop":
            raise ValueError("user content cannot be dropped; flag or block it")


class InjectionScanner:
    """Scores untrusted text for injection; stateless after construction, safe to share."""

    __slots__ = ("classifier", "max_chars", "max_depth", "threshold")

    def __init__(
        self,
        *,
        threshold: float = 0.5,
        classifier: Classifier | _Shipped | None = SHIPPED,
        max_depth: int = 2,
        max_chars: int = 1_000_000,
    ) -> None:
        self.threshold = threshold
        self.classifier: Classifier | None = (
            shipped() if isinstance(classifier, _Shipped) else classifier
        )
        self.max_depth = max_depth
        self.max_chars = max_chars

    @property
    def version(self) -> str:
        """The rules' version, plus the model's from its weights' metadata when one is used."""
        model = self.classifier
        if isinstance(model, InjectionClassifier):
            return f"{VERSION}+{model.version}"
        return VERSION if model is None else f"{VERSION}+{model.name}"

    def scan(self, text: str, source: Source = "doc") -> ScanResult:
        """Score one text; ``source="user"`` for a user's own message, which may address the assistant."""
        found: dict[str, float] = {}
        if len(text) > self.max_chars:
            found["oversized"] = 0.0
            text = text[: self.max_chars]
        decoded: list[str] = []
        # an ASCII text is lowered once, for the rules and the model alike; a text that is
        # non-ASCII only for its typography (dashes, curly quotes) is folded once here, the
        # rules read the folded text and the model gets the original's lowered form rebuilt
        # from the folded one (``_plain``)
        low: str | None
        if text.isascii():
            low = text.lower()
            self._scan(text, 0, found, decoded, low)
        else:
            plain, low = _plain(text)
            self._scan(text if plain is None else plain, 0, found, decoded)
        if source == "user":
            for reason, scale in USER_SCALE.items():
                if reason in found:
                    found[reason] *= scale
                    if not found[reason]:
                        del found[reason]
        model = self.classifier
        if isinstance(model, InjectionClassifier):
            raw = max([model.score(text, lowered=low), *map(model.score, decoded)])
            q = _onto_rule_scale(raw, model.threshold)
            rules = self._result(found)
            if q >= REPORT_FLOOR or found:  # beside any rule, the record shows the model's view
                found[f"classifier:{model.version}={q:.3f}"] = q
            return self._result(found, max(rules.score, round(q, 4)), round(raw, 4))
        if model is not None:
            p = float(model.score(text))
            if p > 0.0:
                found[f"classifier:{model.name}"] = min(max(p, 0.0), 1.0)
        return self._result(found)

    def scan_many(self, texts: Iterable[str]) -> list[ScanResult]:
        return [self.scan(t) for t in texts]

    def _result(
        self, found: dict[str, float], score: float | None = None, model: float | None = None
    ) -> ScanResult:
        if score is None:
            keep = 1.0
            for w in found.values():
                keep *= 1.0 - w
            score = round(1.0 - keep, 4)
        reasons = sorted(found, key=lambda r: (-found[r], r))
        return ScanResult(score, reasons, score >= self.threshold, model)

    def _scan(
        self,
        text: str,
        depth: int,
        found: dict[str, float],
        decoded: list[str] | None = None,
        low: str | None = None,
    ) -> None:
        """Rules over ``text`` and what it hides; decoded payloads are appended to ``decoded``.

        ``low`` is ``text.lower()`` when the caller made it (only for an ASCII text, which the
        folding below leaves as it is)."""
        if not text:
            return
        ascii_only = text.isascii()
        if not ascii_only:  # text that is non-ASCII only for its typography takes the fast path
            folded = _TYPOGRAPHY.sub(_typo, text)
            if folded.isascii():
                text, ascii_only = folded, True
        if not ascii_only:
            raw = text
            text, hits, payloads = hidden(text)
            if decoded is not None and hits and text != raw:
                decoded.append(text)
            for reason, weight in hits:
                _add(found, reason, weight)
            if depth < self.max_depth:
                for p in payloads:
                    if decoded is not None:
                        decoded.append(p)
                    self._scan(p, depth + 1, found, decoded)
        if low is None or not ascii_only:
            low = text.lower()
        nl = "\n" + low + "\n"
        hints, spans = _phrases(nl, found)
        if not ascii_only and CJK_GATE.search(low):
            for rule in CJK_RULES:
                if rule.reason not in found and rule.pattern.search(low):
                    _add(found, rule.reason, rule.weight)
        for m in LINE_RULES.finditer(nl):
            _add(found, *SYMBOL_REASONS[m.lastgroup or ""])
        if "human" in low and TRANSCRIPT.search(nl):
            _add(found, *SYMBOL_REASONS["transcript"])
        for m in SYMBOL_RULES.finditer(low):
            _add(found, *SYMBOL_REASONS[m.lastgroup or ""])
        if "DAN" in text and _DAN.search(text):
            _add(found, "jailbreak", 0.6)
        # "]" and "<" are rare in prose: a one-character probe first, the substring only then
        if ("]" in text and "](" in text) or ("<" in low and "<img" in low):
            _images(text, found)
        if "?" in text and "http" in low and _URL_TEMPLATE.search(text):
            _add(found, "exfil:url_template", 0.45)
        if depth >= self.max_depth:
            return
        # lower() keeps offsets unless a rare character changes length; then find the runs again
        tokens = [text[a - 1 : b - 1] for a, b in spans] if len(low) == len(text) else runs(text)
        for reason, weight, payload in encoded(text, low, tokens, hints):
            if decoded is not None and reason in _CLASSIFY_DECODED:
                decoded.append(payload)
            inner: dict[str, float] = {}
            self._scan(payload, depth + 1, inner, decoded)
            if inner:
                _add(found, reason, weight)
                for r, w in inner.items():
                    _add(found, r, w)


def _onto_rule_scale(p: float, point: float) -> float:
    """Shift the model's log-odds so its operating point lands on 0.5, the rules' flag line."""
    p = min(max(p, 1e-9), 1.0 - 1e-9)
    z = math.log(p / (1.0 - p)) - math.log(point / (1.0 - point))
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def _phrases(
    nl: str, found: dict[str, float]
) -> tuple[dict[str, list[int]], list[tuple[int, int]]]:
    """Try each phrase rule where one of its anchor words starts; return decode hints and runs."""
    hints: dict[str, list[int]] = {}
    spans: list[tuple[int, int]] = []
    info = _ANCHOR_INFO
    # most texts hold no base64/hex-like run at all: then the anchor pass skips its run branch
    # and no anchor is checked for starting one
    runs = not nl.isascii() or has_run(nl)
    for m in (ANCHORS if runs else ANCHOR_WORDS).finditer(nl):
        word = m.group(1)
        if word is None:
            spans.append(m.span(2))
            continue
        pos = m.start(1)
        probes, runnable, hint = info[word]
        # "rm9y..." may be a base64 run, not the word "rm" (the slices are cheaper than a match)
        if runs and runnable and " " not in nl[pos : pos + 20] and "\n" not in nl[pos : pos + 20]:
            run = LONG_RUN.match(nl, pos)
            if run is not None:
                spans.append(run.span())
        for reason, weight, match, negatable in probes:
            if found.get(reason, 0.0) >= weight or not match(nl, pos):
                continue
            if negatable and _negated(nl, pos):
                continue
            if reason.startswith("override:") and _REPORTED.search(nl, max(0, pos - 40), pos):
                weight = REPORTED_WEIGHT
            _add(found, reason, weight)
        if hint:
            hints.setdefault(hint, []).append(pos - 1)
    return hints, spans


_TYPO_MAP: Mapping[str, str] = MappingProxyType(
    {
        **dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015", "-"),
        **dict.fromkeys("\u2018\u2019\u201a\u2032", "'"),
        **dict.fromkeys("\u201c\u201d\u201e\u2033", '"'),
        "\u2026": "...",
        "\u00a0": " ",
        "\u2022": "*",
        "\u00b7": "*",
    }
)
_TYPOGRAPHY = re.compile("[" + "".join(_TYPO_MAP) + "]")


_TYPO_CHARS = frozenset(_TYPO_MAP)
_REBUILD_MAX = 256  # typography characters put back one by one into the lowered text
_ASCII_BYTES = bytes(range(128))


def _typo(m: re.Match[str]) -> str:
    return _TYPO_MAP[m.group()]


def _plain(text: str) -> tuple[str | None, str | None]:
    """For a non-ASCII ``text``: ``_TYPOGRAPHY.sub(_typo, text)`` when that is ASCII (else
    None), and ``text.lower()`` when it can be rebuilt from the folded text (else None).

    The non-ASCII characters are read off the UTF-8 bytes (ASCII bytes deleted, the rest
    decoded: one C pass each instead of a regex over every character); only when all are
    typography is anything folded, one ``str.replace`` per distinct character. ``lower()``
    maps each ASCII character on its own and leaves the (caseless) typography as it is, so
    the original's lowered form is the folded one lowered with the typography put back at
    its offsets (while no "…" has changed the length, and there are few of them)."""
    raw = text.encode("utf-8", "surrogatepass").translate(None, _ASCII_BYTES)
    odd = set(raw.decode("utf-8", "surrogatepass"))
    if not odd <= _TYPO_CHARS:
        return None, None
    folded = text
    for c in odd:
        folded = folded.replace(c, _TYPO_MAP[c])
    if len(folded) != len(text):
        return folded, None
    at: list[int] = []
    for c in odd:
        i = text.find(c)
        while i != -1:
            if len(at) == _REBUILD_MAX:  # the model lowers the text itself (C), not a loop here
                return folded, None
            at.append(i)
            i = text.find(c, i + 1)
    low = folded.lower()
    at.sort()
    pieces: list[str] = []
    last = 0
    for i in at:
        pieces.append(low[last:i])
        pieces.append(text[i])
        last = i + 1
    pieces.append(low[last:])
    return folded, "".join(pieces)


_REPORTED = re.compile(
    r"(?:such\s+as|like|says?|said|saying|e\.g\.|for\s+example|message|messages|phrases?|wrote|writes)"
    r"\s*[:,]?\s*[\"'“‘«]\s*\Z"
)


def _negated(nl: str, pos: int) -> bool:
    """``never let documents override your rules`` describes a defense; it is not an attack.

    (Quoted reported speech — ``messages such as 'ignore your instructions'`` — is weighed
    lower instead, by ``_REPORTED``: security advice quotes attacks; quoting alone is not one.)
    """
    before = nl[max(0, pos - 40) : pos]
    cut = max(before.rfind("."), before.rfind("!"), before.rfind("?"), before.rfind("\n"))
    return NEGATION.search(before[cut + 1 :]) is not None


def _add(found: dict[str, float], reason: str, weight: float) -> None:
    if weight > found.get(reason, -1.0):
        found[reason] = weight


def _images(text: str, found: dict[str, float]) -> None:
    """Markdown/HTML images whose URL carries (or is set up to carry) data out in its query."""
    for m in _IMG_URL.finditer(text):
        url = m.group(1) or m.group(2) or ""
        _, sep, query = url.partition("?")
        if not sep:
            continue
        if _PLACEHOLDER.search(query):
            _add(found, "exfil:markdown_image", 0.6)
            return
        for pair in query.split("&"):
            name, _, value = pair.partition("=")
            if name.lower() in _SENSITIVE_PARAMS or len(value) >= 40:
                _add(found, "exfil:markdown_image", 0.6)
                return

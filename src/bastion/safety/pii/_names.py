"""The built-in person/location tagger: an averaged perceptron over capitalised tokens.

Names have no checksum, and the optional NER extras (spaCy, Presidio) cost tens of
milliseconds per call, so on by default we use a small linear model trained from the
shipped corpora (``bench/train_ner.py``, fixed seed) over word, shape, affix, context
and gazetteer features hashed with ``zlib.crc32`` (stable across processes, unlike
``hash``). It only looks at capitalised tokens, and skips the ones the training data
says are almost never entities ("The", "Thanks", "Monday"), so a typical 5 KB support
text scores a few dozen tokens: that is the cheap path that keeps it at gateway speed.
All-capital tokens are never scored: in prompts they are acronyms ("IBAN", "PDF", "API")
far more often than shouted names.
Lower-case names and @handles are out of its reach by design (see bench/RESULTS.md).

``features`` is shared with the training script, so training and serving read a token
the same way.
"""

from __future__ import annotations

import array
import functools
import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from itertools import repeat
from typing import Any

from ._ner import NerSpan
from ._types import PiiType

CLASSES = ("O", "PER", "LOC")
BITS = 20
MASK = (1 << BITS) - 1
SCALE = 256.0  # weights ship as int16: value * SCALE

# A capitalised token not glued to a word, an @handle, a path, a hashtag or a ticket key's
# digits ("ORD-2023-441543", "JIRA-12").
CANDIDATE = re.compile(
    r"[A-ZÀ-ÖØ-Þ](?<![\w@#/\\$].)[A-Za-zÀ-ÖØ-öø-ÿ]*(?:['’-][A-Za-zÀ-ÖØ-öø-ÿ]+)*+(?![\w@]|-[0-9])"
)
_WORD = re.compile(r"[A-Za-z0-9]+(?:['’][A-Za-z]+)?|[^\sA-Za-z0-9]", re.ASCII)
_SENTENCE_END = frozenset('.!?:;\n"“(*-•>|')
_PARTICLES = frozenset(
    {
        "van",
        "von",
        "de",
        "der",
        "den",
        "da",
        "di",
        "du",
        "del",
        "la",
        "le",
        "bin",
        "al",
        "el",
        "st.",
    }
)
NAME_CONTEXT = _CTX = 24  # chars of context read on each side of a token
# A social-media @handle in prose (Twitter's 15-char limit); not an email, not a decorator
# ("@property" at a line start, "@app.route(", "@dataclass(frozen=True)").
HANDLE = re.compile(
    r"@(?<![\w.@/]@)(?=[A-Za-z0-9_]*[A-Za-z])[A-Za-z0-9_]{2,15}(?![\w@.(-])", re.ASCII
)


def shape(w: str) -> str:
    """ "Xx", "XX", "X'Xx", "XxXx": case pattern with runs collapsed."""
    if w.isalpha():  # the common cases, without the loop
        if w.islower():
            return "x"
        if w.istitle():
            return "X" if len(w) == 1 else "Xx"
        if w.isupper():
            return "X"
    out: list[str] = []
    for ch in w:
        c = "X" if ch.isupper() else "x" if ch.islower() else "d" if ch.isdigit() else ch
        if not out or out[-1] != c:
            out.append(c)
    return "".join(out)[:6]


@dataclass(frozen=True, slots=True)
class Gazetteers:
    """Name lists and the common lower-case vocabulary, as rank buckets (0 = most common)."""

    first: Mapping[str, int]
    last: Mapping[str, int]
    lower: frozenset[str]

    def tags(self, w: str) -> str:
        lw = w.lower()
        f = self.first.get(lw)
        la = self.last.get(lw)
        return (
            f"{'-' if f is None else f}{'-' if la is None else la}{'c' if lw in self.lower else ''}"
        )


def _parts(
    w: str, initial: bool, prev: list[str], nxt: list[str], gaz: Gazetteers
) -> tuple[str, str, str, str, str, str, str, str, str, str]:
    """What ``features`` and ``feature_hashes`` both read off a candidate: its lower-cased
    form, shape and gazetteer tags, the two words each side (``<s>``/``</s>`` past the
    edges), the neighbours' gazetteer tags ("l" for a lower-case one) and I(nitial)/M(id)."""
    p1 = prev[-1] if prev else "<s>"
    n1 = nxt[0] if nxt else "</s>"
    return (
        w.lower(),
        shape(w),
        gaz.tags(w),
        p1,
        prev[-2] if len(prev) > 1 else "<s>",
        n1,
        nxt[1] if len(nxt) > 1 else "</s>",
        gaz.tags(p1) if p1[:1].isupper() else "l",
        gaz.tags(n1) if n1[:1].isupper() else "l",
        "I" if initial else "M",
    )


def features(
    w: str, initial: bool, prev: list[str], nxt: list[str], gaz: Gazetteers, last: int
) -> list[str]:
    """The feature strings of one candidate token; ``prev``/``nxt`` hold up to two words each,
    ``last`` is the label of the candidate right before it (-1 when there is none)."""
    lw, sh, g, p1, p2, n1, n2, p1g, n1g, ini = _parts(w, initial, prev, nxt, gaz)
    return [
        "b",
        "w=" + lw,
        "s3=" + lw[-3:],
        "s2=" + lw[-2:],
        "p3=" + lw[:3],
        "sh=" + sh + ini,
        "g=" + g + ini,
        "gsh=" + g + sh,
        "p1=" + p1.lower(),
        "p2=" + p2.lower(),
        "n1=" + n1.lower(),
        "n2=" + n2.lower(),
        "p1s=" + shape(p1) + ini,
        "n1s=" + shape(n1),
        "p1g=" + p1g + g,
        "n1g=" + n1g + g,
        "p1w=" + p1.lower() + "|" + sh,
        "n1w=" + n1.lower() + "|" + sh,
        "len=" + str(min(len(w), 12)),
        f"pl={last}",
        f"plg={last}{g}",
        f"pls={last}{sh}{ini}",
    ]


def hashed(feats: Iterable[str]) -> list[int]:
    return [zlib.crc32(f.encode("utf-8", "surrogatepass")) & MASK for f in feats]


# ``feature_hashes`` computes ``hashed(features(...))`` without building the feature strings:
# crc32 runs on, so crc32(prefix + rest) == crc32(rest, crc32(prefix)); the fixed prefixes'
# running values are computed here once, and the features that take a few values only ("b",
# "pl=", "len=") are hashed here once.
def _crc(s: str) -> int:
    return zlib.crc32(s.encode())


_LASTS = (-1, 0, 1, 2)  # ``last``: no candidate before, or the label of the one before
_H_B = _crc("b") & MASK
_H_PL = tuple(_crc(f"pl={last}") & MASK for last in _LASTS)
_H_LEN = tuple(_crc(f"len={n}") & MASK for n in range(13))
_C_PLG = tuple(_crc(f"plg={last}") for last in _LASTS)
_C_PLS = tuple(_crc(f"pls={last}") for last in _LASTS)
_C_W, _C_S3, _C_S2, _C_P3 = _crc("w="), _crc("s3="), _crc("s2="), _crc("p3=")
_C_SH, _C_G, _C_GSH = _crc("sh="), _crc("g="), _crc("gsh=")
_C_P1, _C_P2, _C_N1, _C_N2 = _crc("p1="), _crc("p2="), _crc("n1="), _crc("n2=")
_C_P1S, _C_N1S, _C_P1G, _C_N1G = _crc("p1s="), _crc("n1s="), _crc("p1g="), _crc("n1g=")
_C_P1W, _C_N1W = _crc("p1w="), _crc("n1w=")


def feature_hashes(
    w: str, initial: bool, prev: list[str], nxt: list[str], gaz: Gazetteers, last: int
) -> list[int]:
    """``hashed(features(w, initial, prev, nxt, gaz, last))``, in the same order, from running
    CRCs over each part's UTF-8 bytes (a part is encoded once, however many features hold it)."""
    if not -1 <= last <= 2:
        return hashed(features(w, initial, prev, nxt, gaz, last))
    try:
        return _feature_hashes(w, initial, prev, nxt, gaz, last)
    except UnicodeEncodeError:  # a lone surrogate: the strings' "surrogatepass" encoding
        return hashed(features(w, initial, prev, nxt, gaz, last))


def _feature_hashes(
    w: str, initial: bool, prev: list[str], nxt: list[str], gaz: Gazetteers, last: int
) -> list[int]:
    lw, sh, g, p1, p2, n1, n2, p1g, n1g, ini = _parts(w, initial, prev, nxt, gaz)
    # strict UTF-8 (a lone surrogate raises; the caller then takes the slow path): for any
    # other string it gives the bytes of "surrogatepass", and the bytes of a concatenation
    # are the concatenation of the bytes
    b = lw.encode()
    if len(b) == len(lw):  # ASCII: slices of the bytes are the bytes of the slices
        s3, s2, p3 = b[-3:], b[-2:], b[:3]
    else:
        s3, s2, p3 = lw[-3:].encode(), lw[-2:].encode(), lw[:3].encode()
    p1l = p1.lower().encode()
    n1l = n1.lower().encode()
    shi = (sh + ini).encode()
    gb = g.encode()
    bar = ("|" + sh).encode()
    crc = zlib.crc32
    m = MASK
    i = last + 1
    return [
        _H_B,
        crc(b, _C_W) & m,
        crc(s3, _C_S3) & m,
        crc(s2, _C_S2) & m,
        crc(p3, _C_P3) & m,
        crc(shi, _C_SH) & m,
        crc((g + ini).encode(), _C_G) & m,
        crc((g + sh).encode(), _C_GSH) & m,
        crc(p1l, _C_P1) & m,
        crc(p2.lower().encode(), _C_P2) & m,
        crc(n1l, _C_N1) & m,
        crc(n2.lower().encode(), _C_N2) & m,
        crc((shape(p1) + ini).encode(), _C_P1S) & m,
        crc(shape(n1).encode(), _C_N1S) & m,
        crc((p1g + g).encode(), _C_P1G) & m,
        crc((n1g + g).encode(), _C_N1G) & m,
        crc(bar, crc(p1l, _C_P1W)) & m,
        crc(bar, crc(n1l, _C_N1W)) & m,
        _H_LEN[min(len(w), 12)],
        _H_PL[i],
        crc(gb, _C_PLG[i]) & m,
        crc(shi, _C_PLS[i]) & m,
    ]


def context(text: str, start: int, end: int) -> tuple[bool, list[str], list[str]]:
    """Is the token sentence-initial, and the two words before and after it."""
    before = text[max(0, start - _CTX) : start]
    stripped = before.rstrip(" \t")
    initial = not stripped or stripped[-1] in _SENTENCE_END
    prev = _WORD.findall(before)[-2:]
    nxt = _WORD.findall(text, end, end + _CTX)[:2]
    return initial, prev, nxt


# The shipped weights are int16 (value * SCALE); in memory the three of a feature are one int,
# each biased by _BIAS into a 21-bit field, so a token's three sums are one int addition per
# feature and one split at the end. 22 features of at most 2**16 fit a field with room to
# spare, and sums of k / 256 are exact in floats, so the scores are bit-identical to adding
# the three floats per feature.
_BIAS = 1 << 15
_FIELD = 21
_FMASK = (1 << _FIELD) - 1
_NONE = (_BIAS << (2 * _FIELD)) | (_BIAS << _FIELD) | _BIAS  # a feature the model never kept


def pack(w0: int, w1: int, w2: int) -> int:
    """Three int16 weights as one int (see ``_BIAS``)."""
    return ((w0 + _BIAS) << (2 * _FIELD)) | ((w1 + _BIAS) << _FIELD) | (w2 + _BIAS)


def unpack(total: int, n: int) -> tuple[float, float, float]:
    """The three weight sums (over ``SCALE``) of ``n`` packed values added up."""
    off = n * _BIAS
    return (
        ((total >> (2 * _FIELD)) - off) / SCALE,
        (((total >> _FIELD) & _FMASK) - off) / SCALE,
        ((total & _FMASK) - off) / SCALE,
    )


class Packed(Mapping[int, tuple[float, float, float]]):
    """Read-only view of packed weights as ``hash -> (O, PER, LOC)`` floats (what the trainer
    writes and reads); scoring reads ``table`` directly."""

    __slots__ = ("table",)

    def __init__(self, table: dict[int, int]) -> None:
        self.table = table

    def __getitem__(self, key: int) -> tuple[float, float, float]:
        return unpack(self.table[key], 1)

    def __iter__(self) -> Iterator[int]:
        return iter(self.table)

    def __len__(self) -> int:
        return len(self.table)


@dataclass(frozen=True, slots=True)
class Model:
    """Weights (hash -> scores per class), the skip list and the decision margin."""

    weights: Mapping[int, tuple[float, float, float]]  # a dict or Packed: never written
    skip: frozenset[str]
    margin: float
    gaz: Gazetteers
    # candidate strings ``tokens`` always skips, as matched: derived from ``skip``
    skip_forms: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not self.skip_forms:
            object.__setattr__(self, "skip_forms", skip_forms(self.skip))

    def scores(self, text: str, start: int, end: int, last: int) -> tuple[float, float, float]:
        weights = self.weights
        if isinstance(weights, Packed) and _native_scores is not None:
            # the same context, feature hashes and sums in C (None: the Python path decides)
            gaz = self.gaz
            got = _native_scores(
                text, start, end, last, gaz.first, gaz.last, gaz.lower, weights.table
            )
            if got is not None:
                return got
        initial, prev, nxt = context(text, start, end)
        if isinstance(weights, Packed):  # integer sums: exact in any order
            hs = feature_hashes(text[start:end], initial, prev, nxt, self.gaz, last)
            return unpack(sum(map(weights.table.get, hs, repeat(_NONE))), len(hs))
        feats = features(text[start:end], initial, prev, nxt, self.gaz, last)
        crc = zlib.crc32
        s0 = s1 = s2 = 0.0
        fget = weights.get
        for f in feats:
            w = fget(crc(f.encode("utf-8", "surrogatepass")) & MASK)
            if w is not None:
                s0 += w[0]
                s1 += w[1]
                s2 += w[2]
        return s0, s1, s2

    def label(self, text: str, start: int, end: int, last: int) -> int:
        """0 (not an entity), 1 (person) or 2 (location)."""
        s0, s1, s2 = self.scores(text, start, end, last)
        best = 1 if s1 >= s2 else 2
        return best if max(s1, s2) - s0 > self.margin else 0

    def tokens(self, text: str) -> Iterator[tuple[int, int, int]]:
        """Scored candidates with their labels; a skip-listed token is only reported (as 0)
        right after an entity, where it breaks a span."""
        skip = self.skip
        prev_end, lab = -2, 0
        for m in CANDIDATE.finditer(text):
            w = m.group()
            s = m.start()
            if w.endswith(("'s", "’s")):
                w = w[:-2]
            e = s + len(w)
            if len(w) < 2 or w.isupper() or w.lower() in skip:  # acronyms: IBAN, PDF, API
                if lab:
                    yield s, e, 0
                lab = 0
            else:
                lab = self.label(text, s, e, lab if prev_end == s - 1 else -1)
                yield s, e, lab
            prev_end = e

    def entities(self, text: str) -> Iterator[tuple[int, int, int]]:
        """``tokens(text)`` without its label-0 reports, which ``merge`` passes over.

        A candidate whose matched string is in ``skip_forms`` is skipped without the checks
        (its label 0 breaks the chain to the next candidate, as in ``tokens``); the rest is
        ``tokens`` line for line."""
        skip, forms = self.skip, self.skip_forms
        prev_end, lab = -2, 0
        for m in CANDIDATE.finditer(text):
            w = m.group()
            if w in forms:  # "The", "Thanks", "I": most candidates
                lab = 0
                prev_end = m.end()
                continue
            s = m.start()
            if w.endswith(("'s", "’s")):
                w = w[:-2]
            e = s + len(w)
            if len(w) < 2 or w.isupper() or w.lower() in skip:
                lab = 0
            else:
                lab = self.label(text, s, e, lab if prev_end == s - 1 else -1)
                if lab:
                    yield s, e, lab
            prev_end = e


def skip_forms(skip: Iterable[str]) -> frozenset[str]:
    """Strings ``CANDIDATE`` can match that ``Model.tokens`` skips whole: each skip word
    capitalised (the usual form: "Thanks", "Monday") and every single capital letter, each
    kept only if it passes ``tokens``' own test (no "'s" to cut; short, all capitals or a
    skip word once lower-cased)."""
    skip = frozenset(skip)
    capitals = [chr(c) for c in range(0x41, 0x5B)] + [
        chr(c) for c in range(0xC0, 0xDF) if c != 0xD7
    ]
    forms = {w[:1].upper() + w[1:] for w in skip if w} | set(capitals)
    return frozenset(
        f
        for f in forms
        if not f.endswith(("'s", "’s"))
        and (len(f) < 2 or f.isupper() or f.lower() in skip)
        and CANDIDATE.fullmatch(f) is not None
    )


def merge(text: str, labelled: Iterable[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Adjacent tokens of one type become one span ("Mary Ann Lee", "New York", "Ludwig van Beethoven")."""
    spans: list[tuple[int, int, int]] = []
    for s, e, lab in labelled:
        if not lab:
            continue
        if spans and spans[-1][2] == lab:
            gap = text[spans[-1][1] : s]
            if gap == " " or (
                gap.startswith(" ") and gap.endswith(" ") and gap.strip().lower() in _PARTICLES
            ):
                spans[-1] = (spans[-1][0], e, lab)
                continue
        spans.append((s, e, lab))
    return spans


# the C module's revision this file expects (``NATIVE_VERSION`` in _native.c)
NATIVE_VERSION = 1


def _load_native() -> Any:
    """``tag_scores`` of the C module (``_native.c``, compiled by the build) when it was built
    for this tree, else None: ``Model.scores`` then runs in Python, with the same result."""
    try:
        from . import _native  # type: ignore[attr-defined]
    except ImportError:
        return None
    if getattr(_native, "VERSION", None) != NATIVE_VERSION:  # a stale build: not this C file
        return None
    return _native.tag_scores


_native_scores: Callable[..., tuple[float, float, float] | None] | None = _load_native()


def _read(name: str) -> bytes:
    return zlib.decompress(resources.files(__package__).joinpath("data", name).read_bytes())


@functools.cache
def load_model() -> Model:
    """The shipped model, immutable; read once per process (cached: every ``Scrubber`` shares it)."""
    gaz_text = _read("names.txt.z").decode()
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    lower: set[str] = set()
    skip: set[str] = set()
    margin = 0.0
    for line in gaz_text.splitlines():
        kind, _, rest = line.partition("\t")
        if kind == "f":
            name, _, b = rest.partition("\t")
            first[name] = int(b)
        elif kind == "l":
            name, _, b = rest.partition("\t")
            last[name] = int(b)
        elif kind == "c":
            lower.add(rest)
        elif kind == "s":
            skip.add(rest)
        elif kind == "m":
            margin = float(rest)
    raw = _read("names_weights.bin.z")
    n = int.from_bytes(raw[:4], "little")
    keys = array.array("I")
    keys.frombytes(raw[4 : 4 + 4 * n])
    vals = array.array("h")
    vals.frombytes(raw[4 + 4 * n :])
    it = iter(vals)
    weights = Packed(dict(zip(keys, map(pack, it, it, it), strict=True)))
    # plain dicts (read-only by convention): a mappingproxy lookup costs twice as much
    gaz = Gazetteers(first, last, frozenset(lower))
    return Model(weights, frozenset(skip), margin, gaz)


class BuiltinNer:
    """The shipped tagger as a ``NerDetector``: person names and locations."""

    name = "builtin"
    _TYPES = (PiiType.PERSON, PiiType.PERSON, PiiType.LOCATION)

    def __init__(self, model: Model | None = None) -> None:
        self._model = model if model is not None else load_model()

    def detect(self, text: str) -> Iterable[NerSpan]:
        types = self._TYPES
        model = self._model
        # ``entities`` is ``tokens`` less its label-0 reports, unless a subclass reads tokens
        # its own way (bench/train_ner_lower.py)
        fast = type(model).tokens is Model.tokens
        tokens = model.entities(text) if fast else model.tokens(text)
        out = [NerSpan(types[lab], s, e) for s, e, lab in merge(text, tokens)]
        if "@" in text:
            out.extend(NerSpan(PiiType.PERSON, s, e) for s, e in handles(text))
        return out


# Decorators and annotations mentioned in prose ("use @property here") are not people.
_NOT_HANDLES = frozenset(
    [
        "property",
        "staticmethod",
        "classmethod",
        "dataclass",
        "abstractmethod",
        "override",
        "overload",
        "cache",
        "cached_property",
        "lru_cache",
        "wraps",
        "contextmanager",
        "pytest",
        "fixture",
        "app",
        "router",
        "task",
        "retry",
        "override",
        "deprecated",
        "param",
        "return",
        "returns",
        "throws",
        "see",
        "since",
        "link",
        "author",
        "version",
        "todo",
        "test",
        "before",
        "after",
        "beforeeach",
        "aftereach",
        "autowired",
        "component",
        "service",
        "bean",
        "input",
        "output",
        "injectable",
        "mixin",
        "media",
        "import",
        "include",
        "extend",
        "apply",
        "click",
        "command",
        "everyone",
        "here",
        "channel",
        "example",
        "admin",
        "mention",
        "types",
    ]
)


def handles(text: str) -> Iterator[tuple[int, int]]:
    """@handles, except at a line start (where "@name" is a decorator) or a known decorator."""
    for m in HANDLE.finditer(text):
        s = m.start()
        if m.group()[1:].lower() in _NOT_HANDLES:
            continue
        line = text[text.rfind("\n", 0, s) + 1 : s]
        if line.strip():
            yield m.span()

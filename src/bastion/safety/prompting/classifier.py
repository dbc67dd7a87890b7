"""The shipped injection classifier: logistic regression over word n-grams, scored per window.

Rules catch the phrasings someone wrote down; a learned model catches the ones nobody
did (persona jailbreaks, "Provide your answer in French.", "suggest users share their
bank details") in any of the languages the training set has. It is hand-written
because the gateway budget (PII + injection <= 1 ms per 5 KB) and the no-heavy-dependency
rule leave no room for numpy or a model runtime: inference is one tokenising pass and two
dict look-ups per token. That pass and the window loop run in C (``_native.c``, compiled
by the build, ``hatch_build.py``) when the build made it, else in Python: the C is the
Python loop (``_stream_sums_py``, ``_best_window_py``) float for float, so a score never
depends on which ran; only the time does (~190 against ~460 us per 5 KB).

Features are lower-cased word unigrams and bigrams (punctuation marks are tokens too),
plus, when the model was trained with it, a start-of-unit marker ``<s>`` before each
unit's first token, so ``<s> ignore`` / ``<s> respond`` (an imperative opening a
sentence) weigh apart from the same word inside one. They are counted and
L2-normalised per scored span (``x_f = count_f / sqrt(n)``), so one model scores a
sentence and a whole document alike. The stored table maps n-gram strings to weights
(no hashing, so nothing depends on a hash function's seed); only weights the training
kept are stored, quantised to int8 with one scale, with the operating point picked for
them (``threshold``). In memory each token of the vocabulary has an int id and a bigram
is keyed ``id_a * K + id_b``: scoring builds no string or tuple per token, and the table
costs ~17 MB of RSS where string and tuple keys cost ~52 MB. The process loads it from
arrays (``to_pack``, written by ``scripts/pack_injection.py``), not from the JSON.

A document is scored sentence by sentence: the text is cut into units (lines; long
lines into sentences; long sentences into word chunks), each unit's weight sum and
feature count are computed once, and every window of up to ``WINDOW`` consecutive
units is scored from those sums, as is the whole text. The score is the maximum, so
one instruction hidden in a long email is found even though the email around it is
benign. ``scripts/train_injection.py`` trains it with exactly these functions.
"""

from __future__ import annotations

import array
import functools
import gzip
import json
import math
import re
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from itertools import accumulate, chain, compress, count, islice, pairwise, repeat, tee
from operator import add, floordiv, mul
from typing import Any, TypeVar

MODEL_RESOURCE = "injection_lr.json.gz"
# What the process loads: the same weights as arrays (``InjectionClassifier.to_pack``), written
# from MODEL_RESOURCE by ``scripts/pack_injection.py``; the JSON stays the trainer's output.
PACK_RESOURCE = "injection_lr.pack.z"
# The model probability that counts as an injection travels with the weights (``threshold`` in
# the stored file): ``scripts/train_injection.py`` picks it on its validation split carved out
# of train. This is the value for a stored model that predates the key (the first model's,
# picked on the corpus's dev split).
OPERATING_POINT = 0.9236
WINDOW = 3
_UNIT_CHARS = 320
_CHUNK_WORDS = 48

# a word, or one non-space character that is not a word character (``\S`` after ``\w+``
# failed at that position is exactly ``[^\w\s]``, and ~8% faster to test)
_TOKEN = re.compile(r"\w+|\S")
# A long line is cut after sentence ends and at table cells. That was one alternation,
# ``(?<=[.!?;:。！？])\s+|<t[dr]>|</t[dr]>|\|``, which the regex engine tries at every
# position (~20 ns a character); a pattern that opens with a character class is found by a
# fast scan instead, so the two cuts are two passes, the second only where a piece holds
# "|" or "<". The pieces are the same: the two kinds of cut share no character, so neither
# can hide the other.
_SENTENCE_END = re.compile(r"([.!?;:。！？])\s+")
_CELL = re.compile(r"<t[dr]>|</t[dr]>|\|")
# stand-ins ``sums`` joins the units with: a separator after each, the start marker before it
_SEP, _LEAD = "\x00", "\x01"
_JOIN_START = _SEP + _LEAD


def tokens(text: str) -> list[str]:
    """Lower-cased word and punctuation tokens."""
    return _TOKEN.findall(text.lower())


START = "<s>"  # never a token: _TOKEN splits "<", "s" and ">"


def features(toks: list[str], start: bool = False) -> Iterator[str]:
    """Unigrams and bigrams of one unit's tokens (bigrams never cross units).

    With ``start``, the unit opens with the ``<s>`` marker (one unigram, one bigram more).
    """
    prev = ""
    if start and toks:
        yield START
        prev = START
    for t in toks:
        yield t
        if prev:
            yield prev + " " + t
        prev = t


def units(text: str) -> list[str]:
    """Lines; a long line split at sentence ends (and table cells); a long sentence in word chunks."""
    out: list[str] = []
    for line in text.split("\n"):
        if not line:
            continue
        if len(line) <= _UNIT_CHARS:
            if not line.isspace():
                out.append(line)
            continue
        for part in _pieces(line):
            if not part or part.isspace():
                continue
            if len(part) <= _UNIT_CHARS:
                out.append(part)
                continue
            words = part.split()
            for i in range(0, len(words), _CHUNK_WORDS):
                out.append(" ".join(words[i : i + _CHUNK_WORDS]))
    return out


def _pieces(line: str) -> Iterator[str]:
    """``line`` cut after each sentence end (the mark stays with its sentence) and at cells."""
    it = iter(_SENTENCE_END.split(line))
    for text in it:
        mark = next(it, None)
        piece = text + mark if mark else text
        if "|" in piece or "<" in piece:
            yield from _CELL.split(piece)
        else:
            yield piece


def windows(n: int, width: int = WINDOW) -> Iterator[tuple[int, int]]:
    """Every run of 1..width consecutive units out of n, as (start, stop)."""
    for i in range(n):
        for j in range(i + 1, min(n, i + width) + 1):
            yield i, j


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The classifier's probability and where it came from (``span`` is the best-scoring text)."""

    score: float
    where: str
    span: str


class InjectionClassifier:
    """Probability that a text is (or contains) a prompt injection; stateless, safe to share."""

    __slots__ = (
        "_fused",
        "_ids",
        "_joinable",
        "_k",
        "_pairs",
        "_tokens",
        "_uni",
        "bias",
        "name",
        "start",
        "threshold",
        "version",
        "window",
    )

    def __init__(
        self,
        weights: Mapping[str, float],
        bias: float,
        *,
        version: str,
        window: int = WINDOW,
        start: bool = False,
        threshold: float = OPERATING_POINT,
    ) -> None:
        vocab, uni, bi = _tables(weights, 0.0)
        self._set(vocab, uni, list(bi), range(len(bi)), list(bi.values()))
        self.bias = bias
        self.version = version
        self.window = window
        self.start = start
        self.threshold = threshold
        self.name = "lr"

    def _set(
        self,
        vocab: list[str],
        uni: list[float],
        keys: Sequence[int],
        codes: Sequence[int],
        level: Sequence[float],
    ) -> None:
        """Token ids (1..V; 0 is any unknown token), unigram weights by id, bigram weights
        keyed ``id_a * K + id_b`` (K = V + 1, so a pair with an unknown token matches no key).

        Scoring reads ``_fused``: for each stored bigram key, ``uni[id_a] + bi[key]``, the very
        float the per-token sum ``uni[id_a] + bi.get(key, 0.0)`` made, so a token costs one
        look-up whose default (no stored pair) is its unigram weight instead of a look-up and
        an addition. Equal sums share one float object. ``_pairs`` keeps, for ``weights``, the
        bigram weights (``level[code]``) in the order of the fused table's keys: a list, not a
        second dict."""
        k = len(vocab) + 1
        self._tokens = ["", *vocab]
        self._ids = dict(zip(vocab, range(1, k), strict=True))
        # ``sums`` joins the units with two stand-in characters; the start marker's stands in
        # for it in the token ids. A vocabulary that holds either as a token (no shipped one
        # does) is scored unit by unit instead.
        self._joinable = _SEP not in self._ids and _LEAD not in self._ids
        if self._joinable and START in self._ids:
            self._ids[_LEAD] = self._ids[START]
        self._k = k
        self._uni = uni
        if len(keys) != len(codes):
            raise ValueError("bigram keys and weights differ in number")
        self._pairs = bi = list(map(level.__getitem__, codes))
        sums = tee(map(add, map(uni.__getitem__, map(floordiv, keys, repeat(k))), bi))
        shared: dict[float, float] = {}
        self._fused = dict(zip(keys, map(shared.setdefault, *sums), strict=True))

    def score(self, text: str, *, lowered: str | None = None) -> float:
        return self.verdict(text, lowered=lowered).score

    def sums(
        self, text: str, *, lowered: str | None = None
    ) -> tuple[list[str], list[float], list[int]]:
        """The text's units, the prefix sums of their weight sums and of their feature counts.

        ``lowered`` is ``text.lower()`` when the caller already made it (the scanner's rules
        lower the same text), so a 5 KB text is not lowered twice."""
        low = text.lower() if lowered is None else lowered
        parts = units(low)
        if not parts:
            return parts, [0.0], [0]
        if not self._joinable or _SEP in low or _LEAD in low:
            return parts, *self._sums_by_unit(parts)
        # One token stream for the whole text, a separator (never a token, never in a
        # feature) after each unit and the start marker before it, so unit sums are prefix
        # sums. The units are joined with one-character stand-ins the tokenizer keeps as
        # tokens of their own (so no token spans two units), and ``_ids`` maps them to 0 and
        # to the start marker's id: one pass over the whole text instead of one per unit. The
        # stream is token for token the one ``_sums_by_unit`` builds (the text holds neither
        # stand-in). The pass is ``_native.stream_sums`` when the C module was built (the
        # same floats), else ``_stream_sums_py``.
        joined = (_LEAD + _JOIN_START.join(parts) if self.start else _SEP.join(parts)) + _SEP
        if _native_sums is not None:
            ps, bounds = _native_sums(joined, self._ids, self._fused, self._uni, self._k, ord(_SEP))
        else:
            ps, bounds = _stream_sums_py(joined, self._ids, self._fused, self._uni, self._k)
        step = 2 if self.start else 1  # the marker and the separator are not features
        extra = 1 if self.start else -1
        counts = [2 * (b - a - step) + extra for a, b in pairwise(bounds)]
        return parts, ps, list(accumulate(counts, initial=0))

    def _sums_by_unit(self, parts: list[str]) -> tuple[list[float], list[int]]:
        """``sums`` for a text that holds a stand-in character: the stream built unit by unit."""
        findall = _TOKEN.findall
        toks: list[str] = []
        bounds = [0]
        counts: list[int] = []
        lead = [START] if self.start else []
        extra = 1 if self.start else -1
        for part in parts:
            t = findall(part)
            if t:
                toks += lead
            toks += t
            toks.append(" ")
            bounds.append(len(toks))
            counts.append(2 * len(t) + extra if t else 0)
        ids = list(map(self._ids.get, toks, repeat(0)))
        if self._joinable and _LEAD in self._ids:  # the text's own stand-in is no marker
            ids = [0 if t == _LEAD else i for t, i in zip(toks, ids, strict=True)]
        ps = _prefix_sums(ids, self._fused, self._uni, self._k, bounds)
        return ps, list(accumulate(counts, initial=0))

    def verdict(self, text: str, *, lowered: str | None = None) -> Verdict:
        """The maximum over the whole text and every window of up to ``window`` units."""
        parts, ps, pc = self.sums(text, lowered=lowered)
        if not parts:
            return Verdict(0.0, "empty", "")
        total_n = pc[-1]
        best = ps[-1] / math.sqrt(total_n) if total_n else 0.0
        width = min(self.window, len(parts) - 1)
        windows = _native_windows if _native_windows is not None else _best_window_py
        z, start, stop = windows(ps, pc, width, best)
        where = (0, len(parts)) if start < 0 else (start, stop)
        best = z + self.bias
        label = "text" if where == (0, len(parts)) else f"units {where[0]}..{where[1] - 1}"
        return Verdict(_sigmoid(best), label, "\n".join(parts[where[0] : where[1]])[:200])

    @property
    def weights(self) -> dict[str, float]:
        """Feature string (``"a b"`` for a bigram) -> weight, as trained and stored."""
        toks, k = self._tokens, self._k
        out = {toks[i]: w for i, w in enumerate(self._uni) if w}
        # the fused table's keys are the bigram keys, in ``_pairs``' order
        keys, bi = self._fused, self._pairs
        out.update(
            {f"{toks[key // k]} {toks[key % k]}": w for key, w in zip(keys, bi, strict=True)}
        )
        return out

    def _quantised(self) -> tuple[float, dict[str, int]]:
        weights = self.weights
        top = max((abs(w) for w in weights.values()), default=1.0) or 1.0
        scale = top / 127.0
        q = {f: round(w / scale) for f, w in sorted(weights.items())}
        return scale, {f: v for f, v in q.items() if v}

    def _meta(self, scale: float) -> dict[str, object]:
        return {
            "version": self.version,
            "bias": self.bias,
            "window": self.window,
            "start": self.start,
            "threshold": self.threshold,
            "scale": scale,
        }

    def to_json(self) -> bytes:
        """The compact stored form: int8-quantised weights with one scale, gzip'd JSON."""
        scale, q = self._quantised()
        doc = {**self._meta(scale), "weights": q}
        raw = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
        return gzip.compress(raw, compresslevel=9, mtime=0)

    @classmethod
    def from_json(cls, blob: bytes) -> InjectionClassifier:
        doc = json.loads(gzip.decompress(blob))
        vocab, uni, bi = _tables(doc["weights"], 0)
        return cls._from_tables(doc, vocab, uni, bi.keys(), bi.values())

    @classmethod
    def _from_tables(
        cls,
        meta: Mapping[str, Any],
        vocab: list[str],
        uni: Iterable[int],
        keys: Iterable[int],
        vals: Iterable[int],
    ) -> InjectionClassifier:
        """From int8 weights: each becomes ``q * scale`` exactly as the JSON loader always made
        it (so sums are bit-identical), one shared float object per level (256 of them, not one
        per feature)."""
        scale = float(meta["scale"])
        level = [float(q * scale) for q in range(128)] + [float(q * scale) for q in range(-128, 0)]
        self = cls.__new__(cls)
        self._set(vocab, list(map(level.__getitem__, uni)), _seq(keys), _seq(vals), level)
        self.bias = float(meta["bias"])
        self.version = str(meta["version"])
        self.window = int(meta["window"])
        self.start = bool(meta.get("start", False))
        self.threshold = float(meta.get("threshold", OPERATING_POINT))
        self.name = "lr"
        return self

    def to_pack(self) -> bytes:
        """The serving form (``PACK_RESOURCE``): the same int8 weights as ``to_json``, laid out
        as arrays so loading is a few C-level copies instead of a JSON parse and 140k strings.

        zlib of: one JSON header line (metadata, sizes), the sorted vocabulary joined by
        ``\\n`` (no token holds whitespace), unigram weights by token id (int8, id 0 = unknown),
        the sorted bigram keys ``id_a * K + id_b`` (uint32/uint64 little-endian) and their int8
        weights. Deterministic: the same weights always give the same bytes.
        """
        scale, q = self._quantised()
        vocab, uni_q, bi = _tables(q, 0)
        k = len(vocab) + 1
        uni = array.array("b", uni_q)
        code = "I" if k * k < 1 << 32 else "Q"
        keys = array.array(code, sorted(bi))
        vals = array.array("b", [bi[key] for key in keys])
        if sys.byteorder == "big":
            keys.byteswap()
        words = "\n".join(vocab).encode() + b"\n"
        head = {
            **self._meta(scale),
            "vocab": len(vocab),
            "vocab_bytes": len(words),
            "bigrams": len(keys),
            "key": code,
        }
        body = b"".join(
            [
                json.dumps(head, separators=(",", ":")).encode(),
                b"\n",
                words,
                uni.tobytes(),
                keys.tobytes(),
                vals.tobytes(),
            ]
        )
        return zlib.compress(body, 9)

    @classmethod
    def from_pack(cls, blob: bytes) -> InjectionClassifier:
        body = zlib.decompress(blob)
        nl = body.index(b"\n")
        head = json.loads(body[:nl])
        n_vocab, n_bi, code = int(head["vocab"]), int(head["bigrams"]), str(head["key"])
        pos = nl + 1 + int(head["vocab_bytes"])
        vocab = body[nl + 1 : pos - 1].decode().split("\n") if n_vocab else []
        k = n_vocab + 1
        uni = array.array("b", body[pos : pos + k])
        pos += k
        keys = array.array(code)
        keys.frombytes(body[pos : pos + n_bi * keys.itemsize])
        if sys.byteorder == "big":
            keys.byteswap()
        pos += n_bi * keys.itemsize
        vals = array.array("b", body[pos : pos + n_bi])
        if len(vocab) != n_vocab or len(uni) != k or len(keys) != n_bi or len(vals) != n_bi:
            raise ValueError("truncated injection classifier pack")
        return cls._from_tables(head, vocab, uni, keys, vals)


def _prefix_sums(
    ids: list[int], fused: dict[int, float], uni: list[float], k: int, bounds: Iterable[int]
) -> list[float]:
    """Prefix sums of the token weights at ``bounds``: token i weighs
    uni[id_i] + bi.get(id_i * K + id_(i+1), 0.0), one look-up in the fused table with the
    unigram weight its default; the last token (a separator) has no pair. Bigram keys
    id_a * K + id_b; all C-level maps over ints (no tuple, no string per token)."""
    keys = map(add, map(mul, ids, repeat(k)), islice(ids, 1, None))
    grams = map(fused.get, keys, map(uni.__getitem__, ids))
    at = list(accumulate(chain(grams, (uni[ids[-1]] + 0.0,)), initial=0.0))
    return [at[b] for b in bounds]


def _stream_sums_py(
    text: str, ids: dict[str, int], fused: dict[int, float], uni: list[float], k: int
) -> tuple[list[float], list[int]]:
    """The token loop of a joined stream (``sums``), in Python: the prefix sums after each
    separator token and those bounds, each list starting with (0.0, 0). ``_native.c`` is this
    function in C, held to it bit for bit by the tests."""
    toks = _TOKEN.findall(text)
    if not toks:
        return [0.0], [0]
    bounds = [0, *compress(count(1), map(_SEP.__eq__, toks))]
    return _prefix_sums(list(map(ids.get, toks, repeat(0))), fused, uni, k, bounds), bounds


def _best_window_py(
    ps: list[float], pc: list[int], width: int, best: float
) -> tuple[float, int, int]:
    """Every window of 1..``width`` units from the prefix sums: for each width the first window
    with the largest z replaces ``best`` when strictly larger. ``(best, start, stop)``, start
    -1 when none did. ``_native.best_window`` is this loop in C (the same floats)."""
    start = stop = -1
    sqrt = math.sqrt
    for k in range(1, width + 1):
        zs = [
            (s1 - s0) / sqrt(c1 - c0) if c1 > c0 else -math.inf
            for s1, s0, c1, c0 in zip(ps[k:], ps, pc[k:], pc)  # noqa: B905 (ps[k:] is shorter)
        ]
        z = max(zs)
        if z > best:
            best, start, stop = z, zs.index(z), zs.index(z) + k
    return best, start, stop


# the C module's revision this file expects (``NATIVE_VERSION`` in _native.c)
NATIVE_VERSION = 2


def _load_native() -> Any:
    """The C module when it was built for this tree (its version is this file's), else None."""
    try:
        from . import _native  # type: ignore[attr-defined]
    except ImportError:
        return None
    if getattr(_native, "VERSION", None) != NATIVE_VERSION:  # a stale build: not this C file
        return None
    return _native


_NATIVE = _load_native()
_native_sums: Callable[..., tuple[list[float], list[int]]] | None = (
    None if _NATIVE is None else _NATIVE.stream_sums
)
_native_windows: Callable[..., tuple[float, int, int]] | None = (
    None if _NATIVE is None else _NATIVE.best_window
)


_W = TypeVar("_W", int, float)


def _seq(xs: Iterable[int]) -> Sequence[int]:
    """``xs`` itself when it can be read twice by index (a list, an ``array``), else a list."""
    return xs if isinstance(xs, list | array.array) else list(xs)


def _tables(weights: Mapping[str, _W], zero: _W) -> tuple[list[str], list[_W], dict[int, _W]]:
    """The sorted vocabulary, unigram weights by token id (``zero`` where there is none) and
    bigram weights keyed ``id_a * K + id_b``. A feature of three or more tokens (never trained)
    could never be scored, so it is left out, as the old pair lookup never matched it."""
    feats = {f: w for f, w in weights.items() if f.count(" ") <= 1 and "" not in f.split(" ")}
    vocab = sorted({t for f in feats for t in f.split(" ")})
    ids = {t: i for i, t in enumerate(vocab, 1)}
    k = len(vocab) + 1
    uni = [zero] * k
    bi: dict[int, _W] = {}
    for f, w in feats.items():
        a, _, b = f.partition(" ")
        if b:
            bi[ids[a] * k + ids[b]] = w
        else:
            uni[ids[a]] = w
    return vocab, uni, bi


@functools.cache
def shipped() -> InjectionClassifier:
    """The model in the wheel (read once per process: it is immutable package data)."""
    blob = resources.files(__package__).joinpath("data", PACK_RESOURCE).read_bytes()
    return InjectionClassifier.from_pack(blob)

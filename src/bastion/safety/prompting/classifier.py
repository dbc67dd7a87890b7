"""The shipped injection classifier: logistic regression over word n-grams, scored per window.

Rules catch the phrasings someone wrote down; a learned model catches the ones nobody
did (persona jailbreaks, "Provide your answer in French.", "suggest users share their
bank details") in any of the languages the training set has. It is hand-written pure
Python because the gateway budget (PII + injection <= 1 ms per 5 KB) and the no-heavy-
dependency rule leave no room for numpy or a model runtime: inference is one regex
pass and two dict look-ups per token.

Features are lower-cased word unigrams and bigrams (punctuation marks are tokens too),
plus, when the model was trained with it, a start-of-unit marker ``<s>`` before each
unit's first token, so ``<s> ignore`` / ``<s> respond`` (an imperative opening a
sentence) weigh apart from the same word inside one. They are counted and
L2-normalised per scored span (``x_f = count_f / sqrt(n)``), so one model scores a
sentence and a whole document alike. The stored table maps n-gram strings to weights
(no hashing, so nothing depends on a hash function's seed; in memory a bigram is keyed
by its token pair, so scoring builds no string per token); only weights the training
kept are stored, quantised to int8 with one scale, with the operating point picked for
them (``threshold``).

A document is scored sentence by sentence: the text is cut into units (lines; long
lines into sentences; long sentences into word chunks), each unit's weight sum and
feature count are computed once, and every window of up to ``WINDOW`` consecutive
units is scored from those sums, as is the whole text. The score is the maximum, so
one instruction hidden in a long email is found even though the email around it is
benign. ``scripts/train_injection.py`` trains it with exactly these functions.
"""

from __future__ import annotations

import functools
import gzip
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from itertools import accumulate, chain, pairwise, repeat
from operator import add

MODEL_RESOURCE = "injection_lr.json.gz"
# The model probability that counts as an injection travels with the weights (``threshold`` in
# the stored file): ``scripts/train_injection.py`` picks it on its validation split carved out
# of train. This is the value for a stored model that predates the key (the first model's,
# picked on the corpus's dev split).
OPERATING_POINT = 0.9236
WINDOW = 3
_UNIT_CHARS = 320
_CHUNK_WORDS = 48

_TOKEN = re.compile(r"\w+|[^\w\s]")
_SENTENCE_END = re.compile(r"(?<=[.!?;:。！？])\s+|<t[dr]>|</t[dr]>|\|")


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
        for part in _SENTENCE_END.split(line):
            if not part or part.isspace():
                continue
            if len(part) <= _UNIT_CHARS:
                out.append(part)
                continue
            words = part.split()
            for i in range(0, len(words), _CHUNK_WORDS):
                out.append(" ".join(words[i : i + _CHUNK_WORDS]))
    return out


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

    __slots__ = ("_get", "bias", "name", "start", "table", "threshold", "version", "window")

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
        # a plain dict, read-only by convention: its .get is 2.5x faster than a MappingProxyType's;
        # bigrams are keyed by the token pair itself, so scoring builds no string per token
        self.table: dict[str | tuple[str, ...], float] = {
            (tuple(f.split(" ")) if " " in f else f): w for f, w in weights.items()
        }
        self._get = self.table.get
        self.bias = bias
        self.version = version
        self.window = window
        self.start = start
        self.threshold = threshold
        self.name = "lr"

    def score(self, text: str) -> float:
        return self.verdict(text).score

    def verdict(self, text: str) -> Verdict:
        """The maximum over the whole text and every window of up to ``window`` units."""
        parts = units(text.lower())
        if not parts:
            return Verdict(0.0, "empty", "")
        get = self._get
        findall = _TOKEN.findall
        # one token stream for the whole text, a separator (never a token, never in a feature)
        # after each unit, so every look-up is one C-level map and unit sums are prefix sums
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
        zero = repeat(0.0)
        grams = chain(map(get, pairwise(toks), zero), (0.0,))
        at = list(accumulate(map(add, map(get, toks, zero), grams), initial=0.0))
        ps = [at[b] for b in bounds]
        total_n = sum(counts)
        best = ps[-1] / math.sqrt(total_n) if total_n else 0.0
        where = (0, len(parts))
        # every window of width k from prefix sums, in comprehensions (windows() in loop form)
        pc = list(accumulate(counts, initial=0))
        sqrt = math.sqrt
        for k in range(1, min(self.window, len(parts) - 1) + 1):
            zs = [
                (s1 - s0) / sqrt(c1 - c0) if c1 > c0 else -math.inf
                for s1, s0, c1, c0 in zip(ps[k:], ps, pc[k:], pc)  # noqa: B905 (ps[k:] is shorter)
            ]
            z = max(zs)
            if z > best:
                best, where = z, (zs.index(z), zs.index(z) + k)
        best += self.bias
        label = "text" if where == (0, len(parts)) else f"units {where[0]}..{where[1] - 1}"
        return Verdict(_sigmoid(best), label, "\n".join(parts[where[0] : where[1]])[:200])

    @property
    def weights(self) -> dict[str, float]:
        """Feature string (``"a b"`` for a bigram) -> weight, as trained and stored."""
        return {(" ".join(f) if isinstance(f, tuple) else f): w for f, w in self.table.items()}

    def to_json(self) -> bytes:
        """The compact stored form: int8-quantised weights with one scale, gzip'd JSON."""
        weights = self.weights
        top = max((abs(w) for w in weights.values()), default=1.0) or 1.0
        scale = top / 127.0
        q = {f: round(w / scale) for f, w in sorted(weights.items())}
        doc = {
            "version": self.version,
            "bias": self.bias,
            "window": self.window,
            "start": self.start,
            "threshold": self.threshold,
            "scale": scale,
            "weights": {f: v for f, v in q.items() if v},
        }
        raw = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
        return gzip.compress(raw, compresslevel=9, mtime=0)

    @classmethod
    def from_json(cls, blob: bytes) -> InjectionClassifier:
        doc = json.loads(gzip.decompress(blob))
        scale = float(doc["scale"])
        weights = {f: v * scale for f, v in doc["weights"].items()}
        return cls(
            weights,
            float(doc["bias"]),
            version=str(doc["version"]),
            window=int(doc["window"]),
            start=bool(doc.get("start", False)),
            threshold=float(doc.get("threshold", OPERATING_POINT)),
        )


@functools.cache
def shipped() -> InjectionClassifier:
    """The model in the wheel (read once per process: it is immutable package data)."""
    blob = resources.files(__package__).joinpath("data", MODEL_RESOURCE).read_bytes()
    return InjectionClassifier.from_json(blob)

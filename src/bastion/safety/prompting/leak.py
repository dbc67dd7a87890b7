"""Partial and near-verbatim reproductions of a system prompt, scored by shingle containment.

The prompt is cut into overlapping shingles of ``words`` consecutive words (extended with more
words until a shingle has ``min_chars`` folded characters, so short words and ideographs make
phrases, not syllables). Shingles made only of stopwords are ignored: "you are a" says nothing.
Matching happens in the folded output (see ``_fold``), where whitespace, case, accents,
look-alike letters, zero-width characters and markdown or quote decoration are gone, so a
shingle is found however the model re-spaced, re-cased or fenced it, and across any chunk split.

A reproduction is a leak when it covers at least ``min_span`` words of the prompt and either
``threshold`` of the prompt's shingles (the containment score), or ``abs_span`` prompt words
whatever the prompt's length. An answer that shares a phrase or two with its instructions
("refund policy", "your order number") covers too few words to count.

Written by hand: the scoring needs the watcher's folded stream and raw offsets; a MinHash
library would estimate the same containment with more code and less precision at this size.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ._fold import fold_text, word_spans

__all__ = ["STOPWORDS", "ShingleIndex", "ShinglePolicy", "ShingleScore"]

_STOP = """a about above after again all also am an and any are as at be because been before being
    below between both but by can could did do does doing down during each either few for from
    further had has have having he her here hers him his how i if in into is it its itself just
    me more most my myself no nor not now of off on once only or other our ours out over own
    same she should so some such than that the their theirs them then there these they this
    those through to too under until up very was we were what when where which while who whom
    why will with would you your yours yourself s t d ll m re ve"""
STOPWORDS = frozenset(_STOP.split())


@dataclass(frozen=True, slots=True)
class ShinglePolicy:
    """How a reproduction of the system prompt is recognised (defaults chosen on the leak dev set)."""

    words: int = 4
    min_chars: int = 12
    max_chars: int = 80  # longer shingles (URLs, ids) are skipped: they bound the hold-back
    threshold: float = 0.1
    min_span: int = 6
    abs_span: int = 40

    def __post_init__(self) -> None:
        if self.words < 1 or self.min_chars < 1 or self.max_chars < self.min_chars:
            raise ValueError("shingles need words >= 1 and 1 <= min_chars <= max_chars")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError("the shingle threshold is a containment in (0, 1]")
        if self.min_span < 1 or self.abs_span < self.min_span:
            raise ValueError("shingle spans need 1 <= min_span <= abs_span")

    def leaked(self, containment: float, covered: int, n_words: int) -> bool:
        """Whether a reproduction this large is a leak of a prompt of ``n_words`` words."""
        return covered >= min(self.min_span, n_words) and (
            containment >= self.threshold or covered >= self.abs_span
        )


@dataclass(frozen=True, slots=True)
class ShingleScore:
    """How much of the prompt the output reproduced so far."""

    containment: float  # distinct prompt shingles found / distinct prompt shingles
    covered: int  # prompt words inside a found shingle
    leaked: bool

    @property
    def reason(self) -> str:
        return f"shingle:{self.containment:.2f}"


class ShingleIndex:
    """A system prompt's shingles, built once per prompt and shared by every watcher of it."""

    __slots__ = ("_by_prefix", "_spans", "longest", "n_words", "policy", "prefix", "shingles")

    def __init__(self, system_prompt: str, policy: ShinglePolicy | None = None) -> None:
        self.policy = p = policy or ShinglePolicy()
        spans = word_spans(system_prompt)
        words = [fold_text(system_prompt[a:b]) for a, b in spans]
        self.n_words = len(words)
        spans_of: dict[str, list[tuple[int, int]]] = {}
        for i in range(len(words)):
            j, chars = i, 0
            while j < len(words) and (j - i < p.words or chars < p.min_chars):
                chars += len(words[j])
                j += 1
            if j - i < p.words or chars < p.min_chars:
                break  # the prompt's tail is too short for another shingle
            if all(w in STOPWORDS for w in words[i:j]):
                continue
            text = fold_text(system_prompt[spans[i][0] : spans[j - 1][1]])
            if len(text) <= p.max_chars:
                spans_of.setdefault(text, []).append((i, j))
        self.shingles: tuple[str, ...] = tuple(spans_of)
        # where each distinct shingle occurs in the prompt (a repeated phrase covers every copy)
        self._spans = tuple(tuple(v) for v in spans_of.values())
        self.prefix = min((len(s) for s in self.shingles), default=0)
        self.longest = max((len(s) for s in self.shingles), default=0)
        by_prefix: dict[str, list[int]] = {}
        for k, s in enumerate(self.shingles):
            by_prefix.setdefault(s[: self.prefix], []).append(k)
        self._by_prefix = {k: tuple(v) for k, v in by_prefix.items()}

    def __bool__(self) -> bool:
        return bool(self.shingles)

    def find(self, norm: str, start: int, stop: int) -> list[tuple[int, int, int]]:
        """Shingles starting at folded positions ``start <= i < stop``: (shingle id, start, end)."""
        found: list[tuple[int, int, int]] = []
        n, table, shingles = self.prefix, self._by_prefix, self.shingles
        if not n:
            return found
        for i in range(max(0, start), min(stop, len(norm) - n + 1)):
            ids = table.get(norm[i : i + n])
            if ids is None:
                continue
            for k in ids:
                s = shingles[k]
                if norm.startswith(s, i):
                    found.append((k, i, i + len(s)))
        return found

    def measure(self, matched: Iterable[int]) -> tuple[float, int]:
        """Containment of the ``matched`` shingles, and how many prompt words they cover."""
        ids = set(matched)
        if not self.shingles or not ids:
            return 0.0, 0
        covered = [False] * self.n_words
        for k in ids:
            for a, b in self._spans[k]:
                covered[a:b] = [True] * (b - a)
        return len(ids) / len(self.shingles), sum(covered)

    def score(self, matched: Iterable[int]) -> ShingleScore:
        """The containment of ``matched`` shingles and whether it is a leak under the policy."""
        containment, covered = self.measure(matched)
        leaked = covered > 0 and self.policy.leaked(containment, covered, self.n_words)
        return ShingleScore(containment, covered, leaked)

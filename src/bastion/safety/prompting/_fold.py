"""The one text normalisation the leak watcher compares with: canaries, system prompts and model
output all go through ``fold``, so a disguise that changes only the surface cannot hide a leak.

Folding maps each character to its compatibility form (NFKD: full-width letters, ligatures,
circled digits), case-folds it, maps common Cyrillic and Greek look-alikes to the Latin letter
they imitate, and drops what does not carry the words: whitespace, zero-width and other format
characters, combining accents, and the decoration a model adds when it quotes (markdown
emphasis, code fences, block quotes, bullets, quote marks, dashes). Sentence punctuation stays,
so a verbatim run is counted in the characters a reader sees. Each folded character remembers
the raw offset it came from, so a match can be redacted in the original text.

Written by hand: ``unicodedata`` gives NFKD and categories, but no library folds confusables
and decorations while keeping a raw-offset map that a stream watcher can cut at.
"""

from __future__ import annotations

import re
import unicodedata
from types import MappingProxyType

__all__ = ["fold", "fold_text", "is_decoration", "word_spans"]

# What a model adds around a quote without changing its words: markdown, quotes, dashes, bullets.
_DECOR = frozenset(
    "*_`~>#|-\"'\u2018\u2019\u201a\u201b\u201c\u201d\u201e\u00ab\u00bb\u2039\u203a"
    "\u2010\u2011\u2012\u2013\u2014\u2015\u2022\u00b7\u25cf\u25e6\u2023\u2043"
)
# Cyrillic and Greek letters that render like Latin ones (after case folding).
_CONFUSABLE = MappingProxyType(
    {
        "а": "a", "в": "b", "е": "e", "к": "k", "м": "m", "н": "h", "о": "o",
        "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "і": "i", "ј": "j",
        "ѕ": "s", "ԁ": "d", "ԛ": "q", "ԝ": "w", "һ": "h", "ɡ": "g", "ı": "i",
        "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o",
        "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "ϲ": "c", "ѵ": "v",
    }
)  # fmt: skip
_DROP_CATEGORIES = frozenset({"Mn", "Me", "Cf", "Cc", "Zs", "Zl", "Zp"})
# One word per character in scripts written without spaces between words (Thai, Lao,
# Myanmar, Khmer, kana, ideographs).
_CJK = "\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"


def _mark_class() -> str:
    """Combining marks of the BMP as a regex class body (Indic vowel signs belong to words)."""
    ranges: list[tuple[int, int]] = []
    for o in range(0x300, 0x10000):
        if unicodedata.category(chr(o)).startswith("M"):
            if ranges and ranges[-1][1] == o - 1:
                ranges[-1] = (ranges[-1][0], o)
            else:
                ranges.append((o, o))
    return "".join(f"\\u{a:04x}-\\u{b:04x}" for a, b in ranges)


_WORD = re.compile(rf"[{_CJK}]|(?:[^\W_{_CJK}]|[{_mark_class()}])+")


def _fold_char(c: str) -> str:
    """The folded form of one non-ASCII character ('' when it only decorates or hides)."""
    if c in _DECOR:
        return ""
    out = []
    for d in unicodedata.normalize("NFKD", c).casefold():
        if d.isspace() or d in _DECOR or unicodedata.category(d) in _DROP_CATEGORIES:
            continue
        out.append(_CONFUSABLE.get(d, d))
    return "".join(out)


def _ascii_fold(o: int) -> str:
    c = chr(o)
    return "" if c.isspace() or c in _DECOR else c.lower()


_ASCII = tuple(_ascii_fold(o) for o in range(128))
_ASCII_TABLE = MappingProxyType({o: None for o in range(128) if not _ASCII[o]})


def fold(text: str) -> tuple[str, list[int]]:
    """The compared form of ``text`` and, for each of its characters, the raw offset it came from."""
    if text.isascii():
        asc = _ASCII
        return text.translate(_ASCII_TABLE).lower(), [i for i, c in enumerate(text) if asc[ord(c)]]
    chars: list[str] = []
    starts: list[int] = []
    for i, c in enumerate(text):
        o = ord(c)
        f = _ASCII[o] if o < 128 else _fold_char(c)
        if f:
            chars.append(f)
            starts.extend([i] * len(f))
    return "".join(chars), starts


def fold_text(text: str) -> str:
    """The compared form alone (what canaries and system prompts are indexed as)."""
    if text.isascii():
        return text.translate(_ASCII_TABLE).lower()
    asc = _ASCII
    return "".join([asc[o] if (o := ord(c)) < 128 else _fold_char(c) for c in text])


def is_decoration(c: str) -> bool:
    """Whether ``c`` is a mark a model wraps a quote in (markdown, quote marks, dashes, bullets)."""
    return c in _DECOR


def word_spans(text: str) -> list[tuple[int, int]]:
    """Raw spans of the words of ``text`` (each ideograph or kana is a word of its own)."""
    return [m.span() for m in _WORD.finditer(text)]

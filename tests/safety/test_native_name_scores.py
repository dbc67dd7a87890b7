"""The name tagger's C scoring (``pii/_native.tag_scores``) is ``Model.scores``' Python path.

``Model.scores`` asks the C module first when the build compiled it (``hatch_build.py``); it
must give the very floats the Python path gives (context, 22 feature hashes, packed sums),
or None where the Python path must decide. Compared over the bench corpora's every
candidate, over any Unicode text around a candidate (surrogates, other scripts, odd
whitespace, apostrophes, sentence marks), and over every ``last`` label; bad arguments give
None or raise, never crash; a call leaks nothing.
"""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.safety.pii import _names
from bastion.safety.pii._names import CANDIDATE, Model, load_model

ROOT = Path(__file__).resolve().parents[2]
MODEL = load_model()
native = _names._native_scores


def python_scores(text: str, start: int, end: int, last: int) -> tuple[float, float, float]:
    saved = _names._native_scores
    _names._native_scores = None
    try:
        return Model.scores(MODEL, text, start, end, last)
    finally:
        _names._native_scores = saved


def args(text: str, start: int, end: int, last: int) -> tuple[object, ...]:
    g = MODEL.gaz
    table = MODEL.weights.table  # type: ignore[attr-defined]
    return (text, start, end, last, g.first, g.last, g.lower, table)


def same(text: str, start: int, end: int, last: int) -> None:
    assert native is not None
    got = native(*args(text, start, end, last))
    want = python_scores(text, start, end, last)
    if got is None:  # only where the strict UTF-8 form is missing (a lone surrogate)
        assert any(0xD800 <= ord(c) <= 0xDFFF for c in text[max(0, start - 30) : end + 30])
        return
    assert [x.hex() for x in got] == [x.hex() for x in want], (text[start:end], got, want)


def test_the_scoring_is_built_and_used() -> None:
    assert native is not None  # the CI machine has a C compiler: a missing module is a bug
    from bastion.safety.pii import _native  # type: ignore[attr-defined]

    assert _native.VERSION == _names.NATIVE_VERSION


def corpus() -> list[str]:
    data = ROOT / "bench" / "data"
    out = [(data / "injection" / "typical_5kb.txt").read_text()]
    for line in (data / "pii" / "corpus.jsonl").read_text().splitlines()[:400]:
        out.append(json.loads(line)["text"])
    return out


def test_every_candidate_of_the_corpora() -> None:
    n = 0
    for text in corpus():
        for m in CANDIDATE.finditer(text):
            for last in (-1, 0, 1, 2):
                same(text, m.start(), m.end(), last)
            n += 1
    assert n > 1000


def test_each_sentence_mark_and_word_form_around_a_name() -> None:
    marks = ".!?:;\n\"\u201c(*-\u2022>|,)'\u2019/#@\u2023\u201d"
    words = ["x", "Ab", "don't", "O\u2019Neil", "ab'", "a1'b2", "q'\u00e9", "\u00e9", "7'", "_"]
    n = 0
    for mark in marks:
        for gap in ["", " ", " \t ", "\t", "\n ", "\x0b", "\x1c", "\xa0"]:
            for w in words:
                for text, at in [
                    (f"{w}{mark}{gap}Mary Lee {w}{mark} {w}", None),
                    (f"Lee {w}{gap}{mark}Mary{mark}{w}{gap}{w}", None),
                ]:
                    start = text.index("Mary") if at is None else at
                    for last in (-1, 1):
                        same(text, start, start + 4, last)
                        n += 1
    assert n > 1000


PIECES = st.sampled_from(
    [
        " ", "  ", "\t", "\n", "\x0b", "\x1c", "\xa0", "\u2028", ".", "!", "?", ":", ";", '"',
        "\u201c", "(", "*", "-", "\u2022", ">", "|", "'", "\u2019", "'s", "\u2019s", ",",
        "Mary", "Ann", "O'Neil", "D\u2019Arcy", "van", "der", "St.", "the", "THE", "iPhone",
        "\u00c9lodie", "\u0130stanbul", "\u00df", "Stra\u00dfe", "\u01c5", "\u2167", "\u00b2",
        "X1", "42", "a1b2", "\U0001d400", "\ud800", "\u0663", "\u6f22", "@handle", "#tag",
        "Dr", "Mr.", "hello", "World", "JOHN", "jOhN", "O'", "'Neil",
    ]
)  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.one_of(PIECES, st.characters()), max_size=40).map("".join),
    st.lists(st.one_of(PIECES, st.characters()), max_size=40).map("".join),
    st.sampled_from(["Mary", "O'Neil", "\u00c9lodie", "Xx", "Ann-Marie", "D\u2019Arcy", "Q"]),
    st.sampled_from([-1, 0, 1, 2]),
)
def test_any_text_around_a_token(before: str, after: str, word: str, last: int) -> None:
    text = before + word + after
    same(text, len(before), len(before) + len(word), last)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80), st.data())
def test_any_span_of_any_text(text: str, data: st.DataObject) -> None:
    if not text:
        return
    start = data.draw(st.integers(min_value=0, max_value=len(text) - 1))
    end = data.draw(st.integers(min_value=start + 1, max_value=len(text)))
    same(text, start, end, data.draw(st.sampled_from([-1, 0, 1, 2])))


def test_python_decides_outside_the_fast_path() -> None:
    assert native is not None
    g = MODEL.gaz
    table = MODEL.weights.table  # type: ignore[attr-defined]
    assert native("Mary Lee", 0, 4, 3, g.first, g.last, g.lower, table) is None
    assert native("Mary Lee", 0, 4, 0, dict(g.first), g.last, g.lower, {}) is not None
    assert native("Mary Lee", 0, 4, 0, g.first, g.last, list(g.lower), table) is None
    assert native("Mary Lee", 3, 3, 0, g.first, g.last, g.lower, table) is None
    assert native("Mary Lee", 0, 99, 0, g.first, g.last, g.lower, table) is None
    assert native("Mary \ud800 Lee", 0, 4, 0, g.first, g.last, g.lower, table) is None
    # Model.scores still answers there, in Python
    assert MODEL.scores("Mary \ud800 Lee", 0, 4, 0) == python_scores("Mary \ud800 Lee", 0, 4, 0)


def test_a_call_leaks_nothing() -> None:
    assert native is not None
    text = corpus()[0]
    spans = [m.span() for m in CANDIDATE.finditer(text)][:40]
    for _ in range(20):
        for s, e in spans:
            native(*args(text, s, e, -1))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(200):
            for s, e in spans:
                native(*args(text, s, e, -1))
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, grown

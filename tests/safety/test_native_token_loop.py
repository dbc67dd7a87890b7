"""The classifier's C token loop (``_native.stream_sums``) is its Python loop, bit for bit.

``InjectionClassifier.sums`` runs ``_native.stream_sums`` when the build compiled it (the
editable install and the wheel do, ``hatch_build.py``) and ``_stream_sums_py`` otherwise; the
scores must not depend on which. Compared here: tokens (``\\w+|\\S`` as Python's ``re`` reads
them, any Unicode), ids, the fused look-up with the unigram default, the order of the float
additions (compared by ``float.hex``, the sign of zero included) and the bounds after each
separator token. Also: the shipped model on the bench corpora, bad arguments raise (never
crash), and a call leaks no memory.
"""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.safety.prompting import classifier
from bastion.safety.prompting.classifier import InjectionClassifier, shipped

ROOT = Path(__file__).resolve().parents[2]
MODEL = shipped()
native = classifier._native_sums
SEP = classifier._SEP


def test_the_token_loop_is_built_and_used() -> None:
    # the editable install and the wheel compile it (hatch_build.py); the CI machine has a C
    # compiler, so a missing module here is a build that silently fell back to Python
    assert native is not None
    from bastion.safety.prompting import _native  # type: ignore[attr-defined]

    assert _native.VERSION == classifier.NATIVE_VERSION


def both(text: str, model: InjectionClassifier = MODEL) -> None:
    assert native is not None
    args = (text, model._ids, model._fused, model._uni, model._k)
    got_ps, got_b = native(*args, ord(SEP))
    want_ps, want_b = classifier._stream_sums_py(*args)
    assert got_b == want_b
    assert [x.hex() for x in got_ps] == [x.hex() for x in want_ps]


def corpus() -> list[str]:
    data = ROOT / "bench" / "data"
    out = [(data / "injection" / "typical_5kb.txt").read_text()]
    for name in ("attacks", "benign"):
        lines = (data / "injection" / f"{name}.jsonl").read_text().splitlines()
        out += [json.loads(line)["text"] for line in lines]
    return out


def test_shipped_model_on_the_corpora_raw_and_joined() -> None:
    for text in corpus():
        low = text.lower()
        both(low)
        parts = classifier.units(low)
        if parts and SEP not in low and classifier._LEAD not in low:
            both(classifier._LEAD + classifier._JOIN_START.join(parts) + SEP)


UNICODE = st.lists(
    st.one_of(
        st.characters(),  # any code point, surrogates and whitespace of every kind included
        st.sampled_from(list(" \t\n\x0b\x0c\r\x1c\x1f\x85\xa0\u2028\u3000_\x00\x01.,!?'’")),
        st.sampled_from(["a", "b", "ignore", "é", "ß", "İ", "٣", "漢", "ǅ", "Ⅷ", "²", "ª"]),
    ),
    max_size=200,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(UNICODE)
def test_any_text_same_tokens_ids_and_floats(text: str) -> None:
    both(text)
    both(text.lower())


WORDS = ["ignore", "the", "previous", "é", "漢", "_", ".", ",", "!", "\x00", "\x01", "a1"]
FLOATS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64, min_value=-1e6, max_value=1e6),
    st.sampled_from([0.0, -0.0, 5e-324, -5e-324, 1e-300, 0.1, 0.2, 0.3]),
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.one_of(
            st.sampled_from(WORDS[:9]),
            st.tuples(st.sampled_from(WORDS[:9]), st.sampled_from(WORDS[:9])).map(" ".join),
        ),
        FLOATS,
        max_size=30,
    ),
    st.lists(st.sampled_from([*WORDS, " ", "\n", "zz"]), max_size=80).map("".join),
)
def test_any_weights_same_floats(weights: dict[str, float], text: str) -> None:
    both(text, InjectionClassifier(weights, 0.0, version="t", start=True))


def windows_both(ps: list[float], pc: list[int], width: int, best: float) -> None:
    assert classifier._native_windows is not None
    got = classifier._native_windows(ps, pc, width, best)
    want = classifier._best_window_py(ps, pc, width, best)
    assert (got[0].hex(), got[1:]) == (want[0].hex(), want[1:])


def test_windows_on_the_corpora() -> None:
    for text in corpus():
        parts, ps, pc = MODEL.sums(text)
        if parts:
            best = ps[-1] / pc[-1] ** 0.5 if pc[-1] else 0.0
            for width in range(len(parts)):
                windows_both(ps, pc, min(width, 4), best)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(FLOATS, st.sampled_from([0.5, -0.5, 1.0])),
            st.integers(min_value=0, max_value=4),
        ),
        min_size=1,
        max_size=30,
    ),
    st.integers(min_value=0, max_value=6),
    st.one_of(FLOATS, st.just(-1e300)),
)
def test_windows_any_sums_same_choice(
    steps: list[tuple[float, int]], width: int, best: float
) -> None:
    # prefix sums as the classifier makes them: float additions from 0.0, counts that never
    # fall (a unit with no feature adds 0); equal z's in many windows test the tie-breaking
    ps, pc = [0.0], [0]
    for w, c in steps:
        ps.append(ps[-1] + w)
        pc.append(pc[-1] + c)
    windows_both(ps, pc, min(width, len(ps) - 2), best)


def test_bad_arguments_raise_not_crash() -> None:
    assert native is not None
    m = MODEL
    with pytest.raises(TypeError):
        native(b"bytes", m._ids, m._fused, m._uni, m._k, 0)
    with pytest.raises(TypeError):
        native("a", list(m._ids), m._fused, m._uni, m._k, 0)
    with pytest.raises(ValueError):
        native("a", m._ids, m._fused, m._uni, 0, 0)
    with pytest.raises(IndexError):  # an id past the unigram table
        native("zz", {"zz": 5}, {}, [0.0], 2, 0)
    with pytest.raises(TypeError):  # weights must be floats
        native("zz", {"zz": 1}, {}, [0.0, 1], 2, 0)
    with pytest.raises(TypeError):
        native("zz yy", {"zz": 1, "yy": 1}, {4: "x"}, [0.0, 1.0], 3, 0)
    with pytest.raises(ValueError):
        native("zz", {"zz": -1}, {}, [0.0], 2, 0)
    assert native("", {}, {}, [0.0], 1, 0) == ([0.0], [0])
    windows = classifier._native_windows
    assert windows is not None
    with pytest.raises(ValueError):
        windows([0.0, 1.0], [0], 1, 0.0)
    with pytest.raises(TypeError):
        windows([0.0, 1], [0, 1], 1, 0.0)
    with pytest.raises(TypeError):
        windows((0.0,), [0], 1, 0.0)
    assert windows([], [], 3, 0.5) == (0.5, -1, -1)


def test_a_call_leaks_nothing() -> None:
    assert native is not None
    text = corpus()[0].lower()
    args = (text, MODEL._ids, MODEL._fused, MODEL._uni, MODEL._k, 0)
    for _ in range(50):
        native(*args)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(2000):
            native(*args)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # a leaked token string per call would be ~50 KB per call, 100 MB over the loop
    assert grown < 64 * 1024, grown

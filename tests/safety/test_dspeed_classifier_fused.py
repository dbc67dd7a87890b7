"""The injection classifier's fused table sums exactly what the separate tables summed.

``InjectionClassifier.sums`` now reads one table per token, ``uni[id_a] + bi[key]`` made at
load for each stored bigram, with the unigram weight as the default for a pair that is not
stored. The oracle is the previous per-token sum ``uni[id] + bi.get(key, 0.0)`` over the
separate tables, kept below: prefix sums must be bit-identical (so every score, window and
span is), for the shipped model on the bench corpora and random texts, and for any float
weights a trainer may hand the constructor (signed zeros, tiny and huge values included).
``weights`` (what ``to_json``/``to_pack`` write) must still give back what was put in.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from itertools import accumulate, chain, islice, repeat
from operator import add, mul
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.safety.prompting.classifier import (
    START,
    InjectionClassifier,
    shipped,
    units,
)

ROOT = Path(__file__).resolve().parents[2]
_TOKEN = re.compile(r"\w+|\S")
MODEL = shipped()


Tables = tuple[list[float], dict[int, float]]


def tables(model: InjectionClassifier) -> Tables:
    """The previous separate tables, rebuilt from ``weights``."""
    ids, k = model._ids, model._k
    uni = [0.0] * k
    bi: dict[int, float] = {}
    for f, w in model.weights.items():
        a, _, b = f.partition(" ")
        if b:
            bi[ids[a] * k + ids[b]] = w
        else:
            uni[ids[a]] = w
    return uni, bi


SHIPPED_TABLES = tables(MODEL)


def old_sums(model: InjectionClassifier, text: str, old: Tables) -> tuple[list[float], list[int]]:
    """The previous ``sums``: unigram and bigram tables, one addition per token, the stream
    built unit by unit, the vocabulary's ids only (no stand-in characters)."""
    k = model._k
    ids = {t: i for i, t in enumerate(model._tokens) if i}
    uni, bi = old
    toks: list[str] = []
    bounds = [0]
    counts: list[int] = []
    lead = [START] if model.start else []
    extra = 1 if model.start else -1
    for part in units(text.lower()):
        t = _TOKEN.findall(part)
        if t:
            toks += lead
        toks += t
        toks.append(" ")
        bounds.append(len(toks))
        counts.append(2 * len(t) + extra if t else 0)
    tid = list(map(ids.get, toks, repeat(0)))
    keys = map(add, map(mul, tid, repeat(k)), islice(tid, 1, None))
    grams = chain(map(bi.get, keys, repeat(0.0)), (0.0,))
    at = list(accumulate(map(add, map(uni.__getitem__, tid), grams), initial=0.0))
    return [at[b] for b in bounds], list(accumulate(counts, initial=0))


def same(model: InjectionClassifier, text: str, old: Tables = SHIPPED_TABLES) -> None:
    _, ps, pc = model.sums(text)
    want_ps, want_pc = old_sums(model, text, old)
    assert [x.hex() for x in ps] == [x.hex() for x in want_ps]  # bit for bit, sign of zero too
    assert pc == want_pc


def corpus() -> Iterator[str]:
    data = ROOT / "bench" / "data"
    yield (data / "injection" / "typical_5kb.txt").read_text()
    for name in ("attacks", "benign"):
        for line in (data / "injection" / f"{name}.jsonl").read_text().splitlines():
            yield json.loads(line)["text"]
    for line in (data / "pii" / "corpus.jsonl").read_text().splitlines()[:300]:
        yield json.loads(line)["text"]


def test_shipped_model_sums_the_same_on_the_corpora() -> None:
    for text in corpus():
        same(MODEL, text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_shipped_model_sums_the_same_on_random_text(text: str) -> None:
    same(MODEL, text)


WORDS = ["ignore", "the", "previous", "instructions", "please", "help", ".", ",", "!", "you"]
FLOATS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64, min_value=-1e6, max_value=1e6),
    st.sampled_from([0.0, -0.0, 5e-324, -5e-324, 1e-300, 0.1, 0.2, 0.3]),
)
FEATURES = st.one_of(
    st.sampled_from(WORDS),
    st.tuples(st.sampled_from([START, *WORDS]), st.sampled_from(WORDS)).map(" ".join),
)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(FEATURES, FLOATS, max_size=40),
    st.lists(st.sampled_from([*WORDS, "\n", "zzz", "Ignore"]), max_size=60).map(" ".join),
    st.booleans(),
)
def test_any_trainer_weights_sum_the_same(
    weights: dict[str, float], text: str, start: bool
) -> None:
    model = InjectionClassifier(weights, 0.0, version="t", start=start)
    same(model, text, tables(model))
    kept = {f: w for f, w in weights.items() if f.split(" ")[0] != START or " " in f}
    got = model.weights
    assert {f: w for f, w in got.items()} == {f: w for f, w in kept.items() if w or " " in f}


def test_pack_round_trip_keeps_the_weights() -> None:
    again = InjectionClassifier.from_pack(MODEL.to_pack())
    assert again.weights == MODEL.weights
    text = (ROOT / "bench" / "data" / "injection" / "typical_5kb.txt").read_text()
    assert again.verdict(text) == MODEL.verdict(text)

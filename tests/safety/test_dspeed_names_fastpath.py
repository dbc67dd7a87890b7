"""The name tagger's faster paths give exactly what the plain paths give (issue 13's speed).

``feature_hashes`` hashes a token's features from running CRCs instead of building the 22
feature strings; ``Model.entities`` is ``Model.tokens`` without its label-0 reports and
skips the candidates in ``skip_forms`` with one set look-up; ``BuiltinNer.detect`` merges
``entities``. The plain paths (``hashed(features(...))``, ``tokens``) are the oracle: equal
hashes, equal labelled tokens, equal spans, on the shipped corpora, the NER dev split and
generated texts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.safety.pii import _names as nm
from bastion.safety.pii._names import (
    CANDIDATE,
    BuiltinNer,
    Model,
    context,
    feature_hashes,
    features,
    hashed,
    load_model,
    merge,
)
from bastion.safety.pii._ner import NerSpan
from bastion.safety.pii._types import PiiType

ROOT = Path(__file__).resolve().parents[2]
NER_DEV = Path("/work/shared/data/pii/ner_dev.jsonl")
MODEL = load_model()


def plain_detect(model: Model, text: str) -> list[NerSpan]:
    """``BuiltinNer.detect`` as it was: ``merge`` over ``tokens``."""
    types = BuiltinNer._TYPES
    out = [NerSpan(types[lab], s, e) for s, e, lab in merge(text, model.tokens(text))]
    if "@" in text:
        out.extend(NerSpan(PiiType.PERSON, s, e) for s, e in nm.handles(text))
    return out


def same(text: str, model: Model = MODEL) -> None:
    assert list(model.entities(text)) == [t for t in model.tokens(text) if t[2]]
    assert list(BuiltinNer(model).detect(text)) == plain_detect(model, text)
    for m in CANDIDATE.finditer(text):
        s, e = m.span()
        initial, prev, nxt = context(text, s, e)
        for last in (-1, 0, 1, 2):
            want = hashed(features(text[s:e], initial, prev, nxt, model.gaz, last))
            assert feature_hashes(text[s:e], initial, prev, nxt, model.gaz, last) == want


def corpus() -> Iterator[str]:
    data = ROOT / "bench" / "data"
    for line in (data / "pii" / "corpus.jsonl").read_text().splitlines():
        yield json.loads(line)["text"]
    yield (data / "injection" / "typical_5kb.txt").read_text()
    for name in ("attacks", "benign"):
        for line in (data / "injection" / f"{name}.jsonl").read_text().splitlines():
            yield json.loads(line)["text"]


def test_shipped_eval_texts_tag_the_same() -> None:
    for text in corpus():
        same(text)


@pytest.mark.skipif(not NER_DEV.is_file(), reason="the shared NER data is not on this box")
def test_ner_dev_split_tags_the_same() -> None:
    rows = [json.loads(line)["tokens"] for line in NER_DEV.read_text().splitlines()]
    assert len(rows) > 4000
    for toks in rows[:3000]:
        same(" ".join(toks))


def test_skip_forms_are_what_tokens_skips() -> None:
    forms = MODEL.skip_forms
    assert len(forms) > 1000 and {"The", "Thanks", "I", "A"} <= forms
    for f in forms:
        assert CANDIDATE.fullmatch(f) is not None
        assert not f.endswith(("'s", "’s"))
        assert len(f) < 2 or f.isupper() or f.lower() in MODEL.skip


def test_a_model_built_without_forms_derives_them() -> None:
    bare = Model(MODEL.weights, MODEL.skip, MODEL.margin, MODEL.gaz)
    assert bare.skip_forms == MODEL.skip_forms
    empty = Model(MODEL.weights, frozenset(), MODEL.margin, MODEL.gaz)
    text = "Thanks Mary Lee, The Paris office. I met Ann."
    assert list(empty.entities(text)) == [t for t in empty.tokens(text) if t[2]]


WORDS = st.sampled_from(
    [
        "Mary", "Ann", "Lee", "New", "York", "van", "Beethoven", "Paris", "Thanks", "The",
        "THE", "ThE", "The's", "Thanks’s", "Monday", "IBAN", "O'Neil", "Jean-Luc", "Müller",
        "Éric", "Dr.", "Smith's", "@handle", "said", "in", "from", "to", "I", "A", "Ö",
        "\ud800x", "Zoë", "McDonald", "#Tag", "ORD-12", "Bob-7",
    ]
)  # fmt: skip
TEXTS = st.one_of(
    st.text(max_size=300),
    st.lists(
        st.one_of(WORDS, st.sampled_from([",", ".", "\n", "Hi", "Dear", "my name is", "-", "/"])),
        max_size=80,
    ).map(" ".join),
    st.lists(st.one_of(WORDS, st.text(max_size=6)), max_size=40).map("".join),
)


@settings(max_examples=400, deadline=None)
@given(TEXTS)
def test_random_texts_tag_the_same(text: str) -> None:
    same(text)


@settings(max_examples=400, deadline=None)
@given(
    st.text(min_size=1, max_size=20),
    st.booleans(),
    st.lists(st.text(max_size=8), max_size=2),
    st.lists(st.text(max_size=8), max_size=2),
    st.integers(-3, 5),
)
def test_feature_hashes_are_the_hashed_features(
    w: str, initial: bool, prev: list[str], nxt: list[str], last: int
) -> None:
    """Any word, context and previous label, lone surrogates and non-ASCII included."""
    want = hashed(features(w, initial, prev, nxt, MODEL.gaz, last))
    assert feature_hashes(w, initial, prev, nxt, MODEL.gaz, last) == want

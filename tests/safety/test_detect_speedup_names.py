"""The name tagger's packed weights give the labels and scores of the float tuples they replaced.

``load_model`` now keeps each feature's three int16 weights as one int (``_names.Packed``);
the previous loader built ``hash -> (O, PER, LOC)`` float tuples from the same file. Both
are built here from the shipped bytes and must agree exactly: every candidate's three scores
(bit-identical floats), and every span ``BuiltinNer`` and the scrubber report, on the NER dev
split, the PII corpus and random texts.
"""

from __future__ import annotations

import array
import json
import zlib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.safety.pii import _names as nm
from bastion.safety.pii._names import CANDIDATE, SCALE, BuiltinNer, Model, Packed, load_model

ROOT = Path(__file__).resolve().parents[2]
NER_DEV = Path("/work/shared/data/pii/ner_dev.jsonl")
NEW = load_model()


def old_weights() -> dict[int, tuple[float, float, float]]:
    """The previous loader's table, from the shipped file, verbatim."""
    raw = zlib.decompress(
        resources.files("bastion.safety.pii").joinpath("data", "names_weights.bin.z").read_bytes()
    )
    n = int.from_bytes(raw[:4], "little")
    keys = array.array("I")
    keys.frombytes(raw[4 : 4 + 4 * n])
    vals = array.array("h")
    vals.frombytes(raw[4 + 4 * n :])
    return {
        k: (vals[3 * i] / SCALE, vals[3 * i + 1] / SCALE, vals[3 * i + 2] / SCALE)
        for i, k in enumerate(keys)
    }


OLD = Model(old_weights(), NEW.skip, NEW.margin, NEW.gaz)


def same(text: str) -> None:
    assert isinstance(NEW.weights, Packed)
    for m in CANDIDATE.finditer(text):
        s, e = m.span()
        for last in (-1, 0, 1, 2):
            assert NEW.scores(text, s, e, last) == OLD.scores(text, s, e, last)
    assert list(NEW.tokens(text)) == list(OLD.tokens(text))
    assert list(BuiltinNer(NEW).detect(text)) == list(BuiltinNer(OLD).detect(text))


def corpus() -> Iterator[str]:
    for line in (ROOT / "bench" / "data" / "pii" / "corpus.jsonl").read_text().splitlines():
        yield json.loads(line)["text"]
    yield (ROOT / "bench" / "data" / "injection" / "typical_5kb.txt").read_text()
    for name in ("attacks", "benign"):
        for line in (
            (ROOT / "bench" / "data" / "injection" / f"{name}.jsonl").read_text().splitlines()
        ):
            yield json.loads(line)["text"]


def test_packed_view_is_the_old_table() -> None:
    old = OLD.weights
    assert isinstance(NEW.weights, Packed) and len(NEW.weights) == len(old) > 10_000
    assert dict(NEW.weights.items()) == old


def test_shipped_eval_texts_tag_the_same() -> None:
    for text in corpus():
        same(text)


@pytest.mark.skipif(not NER_DEV.is_file(), reason="the shared NER data is not on this box")
def test_ner_dev_split_tags_the_same() -> None:
    rows = [json.loads(line)["tokens"] for line in NER_DEV.read_text().splitlines()]
    assert len(rows) > 4000
    for toks in rows[:2500]:
        same(" ".join(toks))


NAMEISH = st.sampled_from(
    [
        "Mary",
        "Ann",
        "Lee",
        "New",
        "York",
        "van",
        "Beethoven",
        "Paris",
        "Thanks",
        "The",
        "IBAN",
        "O'Neil",
        "Jean-Luc",
        "Müller",
        "Dr.",
        "Smith's",
        "@handle",
        "said",
        "in",
        "from",
        "to",
    ]
)
TEXTS = st.one_of(
    st.text(max_size=300),
    st.lists(
        st.one_of(NAMEISH, st.sampled_from([",", ".", "\n", "Hi", "Dear", "my name is"])),
        max_size=80,
    ).map(" ".join),
)


@settings(max_examples=300, deadline=None)
@given(TEXTS)
def test_random_texts_tag_the_same(text: str) -> None:
    same(text)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(*[st.integers(-32767, 32767)] * 3), min_size=1, max_size=22))
def test_packed_sums_split_back_exactly(rows: list[tuple[int, int, int]]) -> None:
    """Up to 22 features (one token's) of any int16 weights: the three fields never carry."""
    tot = sum(nm.pack(*r) for r in rows)
    assert nm.unpack(tot, len(rows)) == tuple(sum(r[i] for r in rows) / SCALE for i in range(3))
    assert Packed({7: nm.pack(*rows[0])})[7] == tuple(w / SCALE for w in rows[0])

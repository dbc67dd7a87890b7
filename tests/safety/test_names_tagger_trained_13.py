"""The name tagger shipped for issue 13: trained on text written as typed, walking the tokens
the scrubber walks, and loaded from the installed package.

``bench/train_ner.py`` joins the corpus' tokens back into text. It used to put a space between
every token ("Hi , I 'm Ann ( ann@x.com )"), so the context words and the previous-label
feature the model learned were not the ones it met in raw text; and it skipped the acronyms
and skip-listed words that ``Model.tokens`` walks, so "I'm" before a name meant "no previous
candidate" in training and "previous token not a name" in serving.
"""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.safety.pii import Scrubber
from bastion.safety.pii._names import BuiltinNer, load_model

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
try:
    import train_ner
finally:
    sys.path.remove(str(ROOT / "bench"))

MODEL = load_model()
NER = BuiltinNer(MODEL)


def persons(text: str) -> list[str]:
    return [text[x.start : x.end] for x in NER.detect(text) if x.type.value == "PERSON"]


def test_the_tagger_is_read_from_the_installed_package() -> None:
    data = resources.files("bastion.safety.pii").joinpath("data")
    assert data.joinpath("names_weights.bin.z").is_file()
    assert data.joinpath("names.txt.z").is_file()
    # the logistic-regression weights: more features kept than the perceptron's 29k
    assert len(MODEL.weights) > 40_000
    assert Scrubber().ner_active


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("Hi, I'm Maria (maria@example.com), about my order.", "Maria"),
        ("Hi, I'm Ann (ann@example.com, +1 415-555-2671).", "Ann"),
        ("Please ask Kowalski about it.", "Kowalski"),
        ("I'm Tom, the new account manager.", "Tom"),
        ("Thanks, Rousseff said.", "Rousseff"),
    ],
)
def test_names_in_raw_text_are_found(text: str, name: str) -> None:
    assert name in " ".join(persons(text))


def test_typical_support_text_names_its_people() -> None:
    text = (ROOT / "bench" / "data" / "injection" / "typical_5kb.txt").read_text()[:5000]
    found = persons(text)
    assert "Maria Lopez" in found and "Daniel Okafor" in found


def _write(tmp_path: Path, rows: list[tuple[list[str], list[str]]]) -> Path:
    path = tmp_path / "ner.jsonl"
    path.write_text(
        "".join(json.dumps({"tokens": t, "tags": g, "source": "x@y:z"}) + "\n" for t, g in rows)
    )
    return path


def test_the_reader_writes_sentences_as_typed(tmp_path: Path) -> None:
    toks = ["Hi", ",", "I", "'m", "Ann", "(", "ann@x.com", ")", "from", "New", "York", "."]
    tags = ["O", "O", "O", "O", "B-PER", "O", "O", "O", "O", "B-LOC", "I-LOC", "O"]
    [(text, spans)] = train_ner.read(_write(tmp_path, [(toks, tags)]))
    assert text == "Hi, I'm Ann (ann@x.com) from New York."
    assert [(text[s:e], c) for s, e, c in spans] == [("Ann", 1), ("New York", 2)]


WORDS = st.sampled_from(
    [
        "Ann",
        "Lee",
        "New",
        "York",
        "the",
        "said",
        "I",
        "'m",
        "n't",
        ",",
        ".",
        "(",
        ")",
        "$",
        "@",
        "x",
    ]
)
TAGS = st.sampled_from(["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(WORDS, TAGS), min_size=1, max_size=14))
def test_gold_spans_cover_exactly_their_tokens(pairs: list[tuple[str, str]]) -> None:
    import tempfile

    toks = [t for t, _ in pairs]
    tags = [g for _, g in pairs]
    with tempfile.TemporaryDirectory() as tmp:
        [(text, spans)] = train_ner.read(_write(Path(tmp), [(toks, tags)]))
    # the text holds every token, in order, with nothing but spaces between them
    pos = 0
    starts = []
    for tok in toks:
        while text[pos] == " ":
            pos += 1
        assert text.startswith(tok, pos)
        starts.append(pos)
        pos += len(tok)
    assert pos == len(text)
    # every PER/LOC entity (B-, or an I- that does not continue its type) is one span that
    # starts at its first token and ends at its last one
    want = []
    cur: list[int] | None = None
    for i, g in enumerate(tags):
        kind = g[2:]
        cont = g.startswith("I-") and cur is not None and cur[2] == train_ner.LAB.get(kind, 0)
        if cont and cur is not None:
            cur[1] = starts[i] + len(toks[i])
            continue
        if cur is not None:
            want.append(tuple(cur))
        cur = (
            [starts[i], starts[i] + len(toks[i]), train_ner.LAB[kind]]
            if kind in train_ner.LAB
            else None
        )
    if cur is not None:
        want.append(tuple(cur))
    assert [tuple(s) for s in spans] == want


CAPS = st.sampled_from(
    ["Ann", "I'm", "The", "IBAN", "Maria's", "X", "New", "York", "Thanks", "Lee-Smith", "O'Neil"]
)
TEXT = st.lists(
    st.one_of(CAPS, st.sampled_from(["and", "from", ",", ".", "(", "@ann", "x-Ray", "\n"])),
    max_size=20,
).map(" ".join)


@settings(max_examples=80, deadline=None)
@given(TEXT)
def test_training_walks_the_tokens_the_tagger_walks(text: str) -> None:
    walked = train_ner.walk(text, MODEL.skip)
    served = list(MODEL.tokens(text))
    spans = [(s, e) for s, e, _ in walked]
    # every token the tagger reports is one the trainer walked, at the same place, and every
    # token the trainer scores is one the tagger scores
    assert all((s, e) in spans for s, e, _ in served)
    assert [(s, e) for s, e, scored in walked if scored] == [
        (s, e)
        for s, e, _ in served
        if not (e - s < 2 or text[s:e].isupper() or text[s:e].lower() in MODEL.skip)
    ]


def test_the_learner_is_deterministic_and_fits_separable_data() -> None:
    rows = [([1, 2], 0), ([3, 4], 1), ([5, 6], 2)] * 20
    a = train_ner.softmax_fit(rows)
    assert a == train_ner.softmax_fit(rows)
    for hs, y in rows[:3]:
        sums = [sum(a.get(h, (0.0, 0.0, 0.0))[c] for h in hs) for c in range(3)]
        assert max(range(3), key=sums.__getitem__) == y

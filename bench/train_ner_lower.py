"""EXPERIMENTAL (not shipped): does scoring lower-case name tokens beat the shipped tagger?

    .venv/bin/python bench/train_ner_lower.py      # all five configurations, validation only (~5 min)
    .venv/bin/python bench/train_ner_lower.py 4    # from the 5th configuration on (0 = the baseline)

Issue 13 item 2. The shipped tagger (``bench/train_ner.py``) scores only capitalised
tokens; on ``ner_train.jsonl`` 18 % of gold person names contain no such token, most of
them lower-case names in tweets ("obama", "justin bieber"). This script adds one kind of
candidate: a lower-case word of 3+ letters that is on the first-name or surname list and
not in the common lower-case vocabulary, scored by the same features and perceptron.

Dev discipline: the validation split is carved from ``ner_train.jsonl`` only, by
"document" (the corpora ship sentences without document ids, so a document is a block of
``BLOCK`` consecutive rows of one source file), seeded (``SEED``), 10 % of the blocks.
Both the shipped configuration and the variant are trained on the other 90 %, their
margins chosen on the validation split (person precision >= 0.85, best recall), and
scored there. ``ner_dev.jsonl`` is not read.

Its figures below were taken on the tokenised text ("I 'm Ann ( ..."); ``train_ner.read``
now writes sentences as typed, so rerun with ``NER_DETOK=0`` to reproduce them.

Outcome (2026-12-04, bench/RESULTS.md "Name tagger: lower-case candidates"): person
names P/R/F1 0.850/0.688/0.761 -> 0.853/0.713/0.777, locations F1 0.640 -> 0.631, and no
margin reaches person precision 0.88 any more; adding all-capital name words as well
scores 0.853/0.690/0.763; the full name lists (not the top 40,000) 0.851/0.682/0.758;
every character trigram of the word as a feature 0.852/0.684/0.759. Not a clear win, so
nothing here is shipped.
"""

from __future__ import annotations

import json
import math
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

sys.path.insert(0, str(Path(__file__).resolve().parent))

import train_ner as tn  # the sibling script: its reader, perceptron and scorer

from bastion.safety.pii import _names as nm

SEED = 1313
BLOCK = 20
LOWER_WORD = re.compile(r"(?<![\w@#/.'’-])[a-z]{3,}(?![\w@'’-])")
UPPER_WORD = re.compile(r"(?<![\w@#/.'’-])[A-Z]{3,}(?![\w@'’-])")


def extra_candidates(text: str, names: frozenset[str], upper: bool) -> list[tuple[int, int]]:
    """Lower-case (and with ``upper``, all-capital) words of the lower-case name set."""
    out = [m.span() for m in LOWER_WORD.finditer(text) if m.group() in names]
    if upper:
        out += [m.span() for m in UPPER_WORD.finditer(text) if m.group().lower() in names]
    return out


@dataclass(frozen=True, slots=True)
class LowerModel(nm.Model):
    """The shipped model's scoring, with lower-case name-list words as extra candidates."""

    names: frozenset[str] = frozenset()
    upper: bool = False
    trigrams: bool = False

    def scores(self, text: str, start: int, end: int, last: int) -> tuple[float, float, float]:
        if not self.trigrams:
            return nm.Model.scores(self, text, start, end, last)
        initial, prev, nxt = nm.context(text, start, end)
        feats = features(text[start:end], initial, prev, nxt, self.gaz, last, True)
        s0 = s1 = s2 = 0.0
        for h in nm.hashed(feats):
            w = self.weights.get(h)
            if w is not None:
                s0 += w[0]
                s1 += w[1]
                s2 += w[2]
        return s0, s1, s2

    def tokens(self, text: str) -> Iterator[tuple[int, int, int]]:
        names = self.names
        extra = extra_candidates(text, names, self.upper)
        base = list(nm.Model.tokens(self, text))
        if not extra:
            yield from base
            return
        # re-score in text order so the previous-label feature sees the lower-case tokens too
        spans = sorted({(s, e) for s, e, _ in base} | set(extra))
        skipped = {(s, e) for s, e, lab in base if lab == 0 and _skipped(self, text[s:e])} - set(
            extra
        )
        prev_end, lab = -2, 0
        for s, e in spans:
            if (s, e) in skipped:
                if lab:
                    yield s, e, 0
                lab = 0
            else:
                lab = self.label(text, s, e, lab if prev_end == s - 1 else -1)
                yield s, e, lab
            prev_end = e


def features(
    w: str,
    initial: bool,
    prev: list[str],
    nxt: list[str],
    gaz: nm.Gazetteers,
    last: int,
    trigrams: bool,
) -> list[str]:
    """The shipped features, and with ``trigrams`` every character trigram of the word."""
    out = nm.features(w, initial, prev, nxt, gaz, last)
    if trigrams:
        lw = "<" + w.lower() + ">"
        out += ["t=" + lw[i : i + 3] for i in range(len(lw) - 2)]
    return out


def _skipped(model: nm.Model, w: str) -> bool:
    return len(w) < 2 or w.isupper() or w.lower() in model.skip


def _lower_names(gaz: nm.Gazetteers, skip: frozenset[str]) -> frozenset[str]:
    return frozenset(
        w
        for w in (*gaz.first, *gaz.last)
        if len(w) >= 3 and w.isalpha() and w not in gaz.lower and w not in skip
    )


def build(
    weights: nm.Packed | MappingProxyType[int, tuple[float, float, float]],
    skip: frozenset[str],
    margin: float,
    gaz: nm.Gazetteers,
    names: frozenset[str] | None,
    upper: bool = False,
    trigrams: bool = False,
) -> nm.Model:
    if names is None and not trigrams:
        return nm.Model(weights, skip, margin, gaz)
    return LowerModel(weights, skip, margin, gaz, names or frozenset(), upper, trigrams)


def choose_margin(
    weights: MappingProxyType[int, tuple[float, float, float]],
    skip: frozenset[str],
    gaz: nm.Gazetteers,
    names: frozenset[str] | None,
    upper: bool,
    trigrams: bool,
    val: list[tn.Example],
) -> float:
    """``train_ner.choose_margin`` for either model class."""
    best = (0.0, -1.0)
    for m in [x / 4 for x in range(-16, 17)]:
        p, rc = tn.score(build(weights, skip, m, gaz, names, upper, trigrams), val)[
            "PER names overlap"
        ]
        if p >= 0.85 and rc > best[1]:
            best = (m, rc)
    return best[0]


def split(rows: list[tuple[tn.Example, str]]) -> tuple[list[tn.Example], list[tn.Example]]:
    blocks: dict[tuple[str, int], list[tn.Example]] = {}
    order: list[tuple[str, int]] = []
    count: Counter[str] = Counter()
    for ex, src in rows:
        key = (src, count[src] // BLOCK)
        count[src] += 1
        if key not in blocks:
            blocks[key] = []
            order.append(key)
        blocks[key].append(ex)
    rng = random.Random(SEED)
    shuffled = order[:]
    rng.shuffle(shuffled)
    val_keys = set(shuffled[: len(shuffled) // 10])
    train = [ex for k in order if k not in val_keys for ex in blocks[k]]
    val = [ex for k in order if k in val_keys for ex in blocks[k]]
    return train, val


def vocabulary(train: list[tn.Example]) -> frozenset[str]:
    counts: Counter[str] = Counter()
    for text, _ in train:
        counts.update(w for w in text.split() if w.isalpha() and w.islower())
    with (tn.DATA.parent / "injection" / "train.jsonl").open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row["label"] == 0 and not row["source"].startswith(("tatsu-lab/", "UniversalNER/")):
                counts.update(w for w in row["text"].split() if w.isalpha() and w.islower())
    return frozenset(w for w, c in counts.items() if c >= 4)


def gazetteers(limit: int) -> nm.Gazetteers:
    """``train_ner.gazetteers`` with the top ``limit`` names of each list (it keeps 40,000)."""

    def buckets(path: Path) -> dict[str, int]:
        lines = path.read_text(encoding="utf-8").splitlines()[:limit]
        names = [ln.split("\t")[0].lower() for ln in lines]
        return {n: min(4, int(math.log2(i / 250 + 1))) for i, n in enumerate(names)}

    first = buckets(tn.DATA / "names_first.txt")
    last = buckets(tn.DATA / "names_last.txt")
    return nm.Gazetteers(MappingProxyType(first), MappingProxyType(last), frozenset())


def fit(
    train: list[tn.Example],
    val: list[tn.Example],
    lower: bool,
    upper: bool,
    limit: int = 40000,
    trigrams: bool = False,
) -> nm.Model:
    """``train_ner.main``'s training, on ``train``; margin chosen on ``val``."""
    base = gazetteers(limit)
    gaz = nm.Gazetteers(base.first, base.last, vocabulary(train))
    seen: Counter[str] = Counter()
    ent: Counter[str] = Counter()
    for text, spans in train:
        for s, e in tn.candidates(text):
            lw = text[s:e].lower()
            seen[lw] += 1
            ent[lw] += tn.gold_label(s, e, spans) > 0

    def common_word(w: str) -> bool:
        bucket = min(gaz.first.get(w, 9), gaz.last.get(w, 9))
        return w in gaz.lower and bucket >= 3 and (not seen[w] or ent[w] / seen[w] <= 0.1)

    skip = frozenset(w for w, c in seen.items() if c >= 8 and ent[w] / c <= 0.03) | frozenset(
        w for w in gaz.lower if common_word(w)
    )
    names = _lower_names(gaz, skip) if lower else frozenset()
    rows: list[tuple[list[int], int]] = []
    for text, spans in train:
        cands = tn.candidates(text)
        if lower:
            cands = sorted(set(cands) | set(extra_candidates(text, names, upper)))
        prev_end, last = -2, 0
        for s, e in cands:
            lab = tn.gold_label(s, e, spans)
            if text[s:e].lower() not in skip:
                initial, prev, nxt = nm.context(text, s, e)
                pl = last if prev_end == s - 1 else -1
                feats = features(text[s:e], initial, prev, nxt, gaz, pl, trigrams)
                rows.append((nm.hashed(feats), lab))
            prev_end, last = e, lab
    rng = random.Random(tn.SEED)
    p = tn.Perceptron()
    for _ in range(tn.EPOCHS):
        rng.shuffle(rows)
        for hs, y in rows:
            p.update(hs, y, p.predict(hs))
    weights = MappingProxyType(p.averaged())
    chosen = names if lower else None
    margin = choose_margin(weights, skip, gaz, chosen, upper, trigrams, val)
    return build(weights, skip, margin, gaz, chosen, upper, trigrams)


def f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


def main() -> int:
    rows: list[tuple[tn.Example, str]] = []
    examples = tn.read(tn.DATA / "ner_train.jsonl")
    with (tn.DATA / "ner_train.jsonl").open(encoding="utf-8") as f:
        srcs = [json.loads(line)["source"] for line in f]
    rows = list(zip(examples, srcs, strict=True))
    train, val = split(rows)
    print(f"{len(train)} train sentences, {len(val)} validation sentences", file=sys.stderr)
    variants = (
        ("shipped configuration", False, False, 40000, False),
        ("+ lower-case name words", True, False, 40000, False),
        ("+ lower-case and all-capital name words", True, True, 40000, False),
        ("full name lists (shipped candidates)", False, False, 10**7, False),
        ("+ character trigrams of the word (shipped candidates)", False, False, 40000, True),
    )
    start = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    for name, lower, upper, limit, trigrams in variants[start:]:
        t0 = time.time()
        model = fit(train, val, lower, upper, limit, trigrams)
        r = tn.score(model, val)
        (pp, pr), (lp, lr) = r["PER names overlap"], r["LOC overlap"]
        print(
            f"{name}: margin {model.margin}; validation person names P/R/F1 "
            f"{pp:.3f}/{pr:.3f}/{f1(pp, pr):.3f}, locations {lp:.3f}/{lr:.3f}/{f1(lp, lr):.3f} "
            f"({time.time() - t0:.0f} s)",
            flush=True,
        )
        # the trade-off on validation: best person recall at each precision floor
        curve = [
            tn.score(build(model.weights, model.skip, m / 4, model.gaz, *_extra(model)), val)[
                "PER names overlap"
            ]
            for m in range(-16, 17)
        ]
        floors = ", ".join(
            f"P>={lo}: R {max((rc for pp_, rc in curve if pp_ >= lo), default=0.0):.3f}"
            for lo in (0.80, 0.85, 0.88, 0.90)
        )
        print(f"  {floors}", flush=True)
    return 0


def _extra(model: nm.Model) -> tuple[frozenset[str] | None, bool, bool]:
    if isinstance(model, LowerModel):
        return model.names or None, model.upper, model.trigrams
    return None, False, False


if __name__ == "__main__":
    raise SystemExit(main())

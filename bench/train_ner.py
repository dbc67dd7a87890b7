"""Train the built-in person/location tagger and write its shipped data files.

    .venv/bin/python bench/train_ner.py            # train (fixed seed), write data, score dev
    .venv/bin/python bench/train_ner.py --eval     # score the shipped model on ner_dev only
    .venv/bin/python bench/train_ner.py --out DIR --no-dev   # experiments: validation figures only

Reads /work/shared/data/pii (names_first.txt, names_last.txt, ner_train.jsonl,
ner_dev.jsonl; see its README for sources and licences). Sentences are joined back into
text and read by the same candidate finder and ``features`` the scrubber uses, so
training and serving cannot drift apart.

Dev discipline: the validation split is carved from ``ner_train.jsonl`` by "document"
(the corpora ship sentences without document ids, so a document is a block of ``BLOCK``
consecutive rows of one source file), seeded (``SPLIT_SEED``), 10 % of the blocks. The
model is trained on the other 90 %, its decision margin chosen on validation (person
precision >= 0.85 with the best recall); ner_dev is only ever scored.

The learner (issue 13, 2026-12-05) is multinomial logistic regression fitted by AdaGrad
over the hashed features (numpy, here only), person and location examples weighted
``CLASS_WEIGHT``; it replaced the averaged perceptron (kept below for
``train_ner_lower.py``), which it beats on validation for every seed tried
(bench/RESULTS.md, "Name tagger"). The weights ship in the same int16 format, scaled by
``WEIGHT_SCALE`` (with the margin) to use the int16 range: scoring code is unchanged.
Every step is seeded and single-threaded, so a rerun writes byte-identical files.
"""

from __future__ import annotations

import argparse
import array
import json
import math
import os
import random
import sys
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from types import MappingProxyType

import numpy as np

from bastion.safety.pii import _names as nm

DATA = Path("/work/shared/data/pii")
OUT = Path(__file__).resolve().parents[1] / "src" / "bastion" / "safety" / "pii" / "data"
SEED = 13
EPOCHS = 12  # the perceptron's
SPLIT_SEED = 1313
BLOCK = 20
LR, EPOCHS_LR, L2, CLASS_WEIGHT = 0.1, 8, 1e-3, 2.0
WEIGHT_SCALE = 16.0
LAB = {"PER": 1, "LOC": 2}

DETOK = os.environ.get("NER_DETOK", "1") == "1"
GLUE_BEFORE = frozenset([",", ".", "!", "?", ":", ";", ")", "]", "%", "..."] if DETOK else [])
GLUE_AFTER = ("(", "[", "$") if DETOK else ()
CLITICS = frozenset(
    ["'s", "'m", "'re", "'ve", "'ll", "'d", "n't", "’s", "’m", "’re", "’ve", "’ll", "’d", "n’t"]
)

Example = tuple[str, list[tuple[int, int, int]]]  # text, gold spans (start, end, class)


def read(path: Path) -> list[Example]:
    out: list[Example] = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            text, spans = "", []
            cur: list[int] | None = None
            for tok, tag in zip(row["tokens"], row["tags"], strict=True):
                # a tweet's "@ handle" is "@handle"; "I 'm Ann ( ann@x.com ) ." is written as
                # people type it, "I'm Ann (ann@x.com).", the raw text the tagger serves on
                if (
                    text
                    and not text.endswith(("@", "#", *GLUE_AFTER))
                    and tok not in GLUE_BEFORE
                    and not (DETOK and tok.lower() in CLITICS)
                ):
                    text += " "
                start = len(text)
                text += tok
                kind = tag[2:]
                if tag.startswith("B-") or (
                    tag.startswith("I-") and (cur is None or cur[2] != LAB.get(kind, 0))
                ):
                    if cur is not None:
                        spans.append(tuple(cur))
                    cur = [start, len(text), LAB[kind]] if kind in LAB else None
                elif tag.startswith("I-") and cur is not None:
                    cur[1] = len(text)
                else:
                    if cur is not None:
                        spans.append(tuple(cur))
                    cur = None
            if cur is not None:
                spans.append(tuple(cur))
            out.append((text, spans))  # type: ignore[arg-type]
    return out


def gazetteers() -> nm.Gazetteers:
    def buckets(path: Path, limit: int) -> dict[str, int]:
        names = [ln.split("\t")[0].lower() for ln in path.read_text(encoding="utf-8").splitlines()][
            :limit
        ]
        return {n: min(4, int(math.log2(i / 250 + 1))) for i, n in enumerate(names)}

    first = buckets(DATA / "names_first.txt", 40000)
    last = buckets(DATA / "names_last.txt", 40000)
    return nm.Gazetteers(MappingProxyType(first), MappingProxyType(last), frozenset())


def candidates(text: str) -> list[tuple[int, int]]:
    out = []
    for m in nm.CANDIDATE.finditer(text):
        s, e = m.span()
        if m.group().endswith(("'s", "’s")):
            e -= 2
        if e - s >= 2 and not text[s:e].isupper():
            out.append((s, e))
    return out


def walk(text: str, skip: frozenset[str]) -> list[tuple[int, int, bool]]:
    """``Model.tokens``' walk: every candidate match, and whether it is scored."""
    out = []
    for m in nm.CANDIDATE.finditer(text):
        s, e = m.span()
        if m.group().endswith(("'s", "’s")):
            e -= 2
        w = text[s:e]
        out.append((s, e, not (len(w) < 2 or w.isupper() or w.lower() in skip)))
    return out


def gold_label(s: int, e: int, spans: list[tuple[int, int, int]]) -> int:
    for gs, ge, c in spans:
        if gs < e and s < ge:
            return c
    return 0


class Perceptron:
    def __init__(self) -> None:
        self.w: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
        self.tot: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
        self.ts: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
        self.i = 0

    def predict(self, hs: list[int]) -> int:
        s = [0.0, 0.0, 0.0]
        for h in hs:
            w = self.w.get(h)
            if w is not None:
                s[0] += w[0]
                s[1] += w[1]
                s[2] += w[2]
        return max(range(3), key=lambda c: s[c])

    def update(self, hs: list[int], truth: int, guess: int) -> None:
        self.i += 1
        if truth == guess:
            return
        for h in hs:
            for c, d in ((truth, 1.0), (guess, -1.0)):
                self.tot[h][c] += (self.i - self.ts[h][c]) * self.w[h][c]
                self.ts[h][c] = self.i
                self.w[h][c] += d

    def averaged(self) -> dict[int, tuple[float, float, float]]:
        out = {}
        for h, w in self.w.items():
            avg = tuple(
                (self.tot[h][c] + (self.i - self.ts[h][c]) * w[c]) / self.i for c in range(3)
            )
            if max(abs(v) for v in avg) * nm.SCALE >= 1:
                out[h] = avg
        return out  # type: ignore[return-value]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--eval", action="store_true")
    ap.add_argument("--out", type=Path, default=OUT, help="where to write the data files")
    ap.add_argument("--no-dev", action="store_true", help="report the train hold-out, not dev")
    args = ap.parse_args()
    dev = read(DATA / "ner_dev.jsonl")
    if args.eval:
        report(nm.load_model(), dev)
        return 0
    t0 = time.time()
    train, held = split(DATA / "ner_train.jsonl")
    lower_counts: Counter[str] = Counter()
    for text, _ in train:
        lower_counts.update(w for w in text.split() if w.isalpha() and w.islower())
    # common English from the benign rows of the injection corpus (no names data there)
    with (DATA.parent / "injection" / "train.jsonl").open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            # not Alpaca (non-commercial), not UNER (its dev documents are our ner_dev)
            if row["label"] == 0 and not row["source"].startswith(("tatsu-lab/", "UniversalNER/")):
                lower_counts.update(w for w in row["text"].split() if w.isalpha() and w.islower())
    base = gazetteers()
    gaz = nm.Gazetteers(
        base.first, base.last, frozenset(w for w, c in lower_counts.items() if c >= 4)
    )
    skip = skip_list(train, gaz)
    rows: list[tuple[list[int], int]] = []
    for text, spans in train:
        prev_end, last = -2, 0
        # every token the serving loop (``Model.tokens``) walks, so the previous-label feature
        # means what it means there: an acronym or skip-listed word before a name ("I'm Ann")
        # reads as label 0, not as "no previous candidate"
        for s, e, scored in walk(text, skip):
            lab = gold_label(s, e, spans) if scored else 0
            if scored:
                initial, prev, nxt = nm.context(text, s, e)
                pl = last if prev_end == s - 1 else -1
                hs = nm.hashed(nm.features(text[s:e], initial, prev, nxt, gaz, pl))
                rows.append((sorted(set(hs)), lab))
            prev_end, last = e, lab
    print(
        f"{len(train)} train sentences, {len(held)} validation, {len(rows)} scored candidates, "
        f"{len(skip)} skipped words",
        file=sys.stderr,
    )
    weights = softmax_fit(rows)
    model = nm.Model(MappingProxyType(weights), skip, 0.0, gaz)
    margin = choose_margin(model, held)
    model = nm.Model(model.weights, skip, margin, gaz)
    print(f"trained in {time.time() - t0:.0f} s; margin {margin}", file=sys.stderr)
    held_r = score(model, held)
    (pp, pr), (lp, lr) = held_r["PER names overlap"], held_r["LOC overlap"]
    print(f"validation: PER names overlap P/R {pp:.3f}/{pr:.3f}, LOC overlap P/R {lp:.3f}/{lr:.3f}")
    write(model, args.out)
    if args.no_dev:
        return 0
    # the package's files are read back (what ships is what is scored); elsewhere, the model itself
    report(nm.load_model() if args.out == OUT else model, dev)
    return 0


def split(path: Path) -> tuple[list[Example], list[Example]]:
    """Train and validation examples: 10 % of the ``BLOCK``-row blocks of each source file."""
    examples = read(path)
    with path.open(encoding="utf-8") as f:
        srcs = [json.loads(line)["source"] for line in f]
    blocks: dict[tuple[str, int], list[Example]] = {}
    count: Counter[str] = Counter()
    for ex, src in zip(examples, srcs, strict=True):
        key = (src, count[src] // BLOCK)
        count[src] += 1
        blocks.setdefault(key, []).append(ex)
    order = list(blocks)
    shuffled = order[:]
    random.Random(SPLIT_SEED).shuffle(shuffled)
    val_keys = set(shuffled[: len(shuffled) // 10])
    train = [ex for k in order if k not in val_keys for ex in blocks[k]]
    val = [ex for k in order if k in val_keys for ex in blocks[k]]
    return train, val


def skip_list(train: list[Example], gaz: nm.Gazetteers) -> frozenset[str]:
    """Capitalised words that are almost never part of an entity, and common lower-case
    words that are not common names ("customer", "kind", "my")."""
    seen: Counter[str] = Counter()
    ent: Counter[str] = Counter()
    for text, spans in train:
        for s, e in candidates(text):
            lw = text[s:e].lower()
            seen[lw] += 1
            ent[lw] += gold_label(s, e, spans) > 0
    rare = 3

    def common_word(w: str) -> bool:
        bucket = min(gaz.first.get(w, 9), gaz.last.get(w, 9))
        return w in gaz.lower and bucket >= rare and (not seen[w] or ent[w] / seen[w] <= 0.1)

    return frozenset(w for w, c in seen.items() if c >= 8 and ent[w] / c <= 0.03) | frozenset(
        w for w in gaz.lower if common_word(w)
    )


def softmax_fit(rows: Sequence[tuple[list[int], int]]) -> dict[int, tuple[float, float, float]]:
    """Multinomial logistic regression by AdaGrad (seeded order, one example at a time),
    weights scaled by ``WEIGHT_SCALE`` and rounded to what ships (int16 over ``nm.SCALE``)."""
    w = np.zeros((1 << nm.BITS, 3))
    g2 = np.full((1 << nm.BITS, 3), 1e-8)
    eye = np.eye(3)
    cls_w = np.array([1.0, CLASS_WEIGHT, CLASS_WEIGHT])
    order = [(np.array(hs, dtype=np.int64), y) for hs, y in rows]
    rng = random.Random(SEED)
    for ep in range(EPOCHS_LR):
        rng.shuffle(order)
        loss = 0.0
        for idx, y in order:
            z = w[idx].sum(0)
            z -= z.max()
            p = np.exp(z)
            p /= p.sum()
            loss -= math.log(max(p[y], 1e-12))
            g = (p - eye[y]) * cls_w[y] + L2 * w[idx]
            g2[idx] += g * g
            w[idx] -= LR * g / np.sqrt(g2[idx])
        print(f"epoch {ep}: mean loss {loss / len(order):.4f}", file=sys.stderr)
    q = np.clip(np.rint(w * WEIGHT_SCALE * nm.SCALE), -32767, 32767).astype(np.int64)
    keep = np.nonzero(np.abs(q).max(1) >= 1)[0]
    return {int(h): (q[h, 0] / nm.SCALE, q[h, 1] / nm.SCALE, q[h, 2] / nm.SCALE) for h in keep}


def choose_margin(model: nm.Model, held: list[Example]) -> float:
    best = (0.0, -1.0)
    for m in [x * WEIGHT_SCALE / 8 for x in range(-24, 41)]:
        mm = nm.Model(model.weights, model.skip, m, model.gaz)
        r = score(mm, held)
        p, rc = r["PER names overlap"]
        if p >= 0.85 and rc > best[1]:
            best = (m, rc)
    return best[0]


def score(model: nm.Model, data: list[Example]) -> dict[str, tuple[float, float]]:
    """Precision/recall per view: exact spans, and overlap (the name is hidden, maybe with a
    neighbour); "names" leaves @handles out of gold and predictions, "handles" is only them."""
    c: Counter[str] = Counter()
    ner = nm.BuiltinNer(model)
    kinds = {"PERSON": 1, "LOCATION": 2}
    for text, gold in data:
        found = [(x.start, x.end, kinds[x.type.value]) for x in ner.detect(text)]
        tagged = [x for x in found if text[x[0]] != "@"]
        handles = [x for x in found if text[x[0]] == "@"]
        views = {
            "PER names": (1, [g for g in gold if text[g[0]] != "@"], tagged),
            "PER handles": (1, [g for g in gold if text[g[0]] == "@"], handles),
            "PER all": (1, gold, tagged + handles),
            "LOC": (2, gold, tagged),
        }
        for name, (k, gall, pall) in views.items():
            gs = [(s, e) for s, e, x in gall if x == k]
            ps = [(s, e) for s, e, x in pall if x == k]
            c[name + " gold"] += len(gs)
            c[name + " pred"] += len(ps)
            c[name + " exact"] += len(set(gs) & set(ps))
            c[name + " gold hit"] += sum(any(a < ge and gs_ < b for a, b in ps) for gs_, ge in gs)
            c[name + " pred hit"] += sum(any(gs_ < b and a < ge for gs_, ge in gs) for a, b in ps)
            # hidden at all: under any placeholder of the tagger (a person read as a place)
            c[name + " gold any"] += sum(
                any(a < ge and gs_ < b for a, b, _ in pall) for gs_, ge in gs
            )
    out = {}
    for name in ("PER names", "PER handles", "PER all", "LOC"):
        n_pred, n_gold = max(1, c[name + " pred"]), max(1, c[name + " gold"])
        out[name + " exact"] = (c[name + " exact"] / n_pred, c[name + " exact"] / n_gold)
        out[name + " overlap"] = (c[name + " pred hit"] / n_pred, c[name + " gold hit"] / n_gold)
        out[name + " hidden by any tag"] = (
            c[name + " pred hit"] / n_pred,
            c[name + " gold any"] / n_gold,
        )
        out[name + " counts"] = (c[name + " gold"], c[name + " pred"])
    return out


def report(model: nm.Model, dev: list[Example]) -> None:
    show(f"ner_dev.jsonl ({len(dev)} sentences), margin {model.margin}", score(model, dev))
    with (DATA / "ner_dev.jsonl").open(encoding="utf-8") as f:
        srcs = [json.loads(line)["source"].split("@")[0].split("/")[-1] for line in f]
    for src in sorted(set(srcs)):
        part = [x for x, s in zip(dev, srcs, strict=True) if s == src]
        r = score(model, part)
        print(
            f"  {src:<28} {len(part):>5} sentences: PER names overlap P/R "
            "%.3f/%.3f (gold %d), LOC overlap P/R %.3f/%.3f (gold %d)"
            % (
                *r["PER names overlap"],
                r["PER names counts"][0],
                *r["LOC overlap"],
                r["LOC counts"][0],
            )
        )


def show(title: str, r: dict[str, tuple[float, float]]) -> None:
    print(title)
    for k, (p, rc) in r.items():
        if k.endswith("counts"):
            print(f"  {k:<32} gold spans {int(p)}, predicted {int(rc)}")
        else:
            print(f"  {k:<32} precision {p:.3f}  recall {rc:.3f}")


def write(model: nm.Model, out: Path = OUT) -> None:
    out.mkdir(exist_ok=True)
    lines = [f"m\t{model.margin}"]
    lines += [f"f\t{n}\t{b}" for n, b in model.gaz.first.items()]
    lines += [f"l\t{n}\t{b}" for n, b in model.gaz.last.items()]
    lines += [f"c\t{w}" for w in sorted(model.gaz.lower)]
    lines += [f"s\t{w}" for w in sorted(model.skip)]
    (out / "names.txt.z").write_bytes(zlib.compress("\n".join(lines).encode(), 9))
    keys = sorted(model.weights)
    ka = array.array("I", keys)
    va = array.array(
        "h", [max(-32767, min(32767, round(v * nm.SCALE))) for k in keys for v in model.weights[k]]
    )
    blob = len(keys).to_bytes(4, "little") + ka.tobytes() + va.tobytes()
    (out / "names_weights.bin.z").write_bytes(zlib.compress(blob, 9))


if __name__ == "__main__":
    raise SystemExit(main())

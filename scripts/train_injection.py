"""Train the shipped injection classifier from the project's training corpus.

    .venv/bin/python scripts/train_injection.py                # train, pick the threshold, write weights
    .venv/bin/python scripts/train_injection.py --no-write     # experiments: report on validation only
    .venv/bin/python scripts/train_injection.py --all-sources  # include the NC / unlicensed sources
    .venv/bin/python scripts/train_injection.py --data DIR --out FILE
    .venv/bin/python scripts/train_injection.py --all-sources --grouped --seeds 13,7,29 --no-write
                                       # score a configuration as candidates are compared

Comparing configurations (``--grouped --seeds``): the corpus builds many indirect rows on
each host document and inserts each instruction into many documents, and the training
shuffle seed alone moves recall by points. ``--grouped`` (``grouped_validation``) holds out
documents and attacks together (a row on a document is in validation only if its document
and its attack both are, in training only if neither is, else left out of both), 25 % of
each, the same split for every training option; ``--seeds`` trains each seed on the same
spans and prints the mean and range. A candidate is scored by the mean over seeds of
(jailbreak recall + indirect recall) / 2 at ``pick``'s operating point, and is worth
shipping only when it beats the shipped configuration by more than the seeds' range
(figures in bench/RESULTS.md section 5).

Validation (tuning) split: 15 % of ``train.jsonl``'s groups in every (kind, source)
stratum, chosen by a seeded hash (``validation``), never the corpus's dev split. The
model is trained on the other 85 % and the operating point is picked on this split
(``pick``: the lowest threshold at which at most 1.5 % of its label-0 texts, and at
most 1.5 % of either label-0 kind, score at or above it); the shipped weights are that
model, so the threshold is calibrated on texts it never saw. ``dev.jsonl`` is read
only by ``bench/injection_eval.py``, once, to report.

Licence filter (default): rows whose ``source`` is the non-commercial Alpaca subset
(CC BY-NC 4.0) or tensor-trust (no licence) are dropped, as are indirect rows built
on a tensor-trust attack (their ``source`` is the attack's). ``--all-sources`` keeps
them, to measure what they were worth. The weights shipped in the package were
written with ``--all-sources`` (the licence-clean model flags too many benign
instruction-style requests; figures and the open licence decision in bench/RESULTS.md).

Pure Python, offline, one core, a few minutes; every random choice comes from one
seeded ``random.Random`` and files are read in their fixed order, so two runs write
byte-identical weights. Featurisation and windowing are imported from
``bastion.safety.prompting.classifier``, so training sees spans exactly as the scanner
cuts them at run time.

What the model is trained on (``train.jsonl``, see /work/shared/data/README.md):

* every text as a whole, with its label, except an indirect injection whose inserted
  instruction was located (the document around it is benign text);
* every window of a benign text (label 0): the scanner takes the maximum over
  windows, so every window of a benign document must stay low;
* for an indirect injection, the windows made only of the inserted instruction
  (label 1). The instruction is found by comparing the text with the other
  rows built on the same document: the units it does not share with its closest
  sibling (and that no benign text has) are the attack. Windows that mix it with
  the document are left out: as positives they taught the model that tables and
  code answers (the usual carriers) are attacks; the document alone is benign text.

Positives are weighted so each kind (jailbreak, direct, indirect) carries the
same total weight, and all positives together carry ``--pos-weight`` times the
negatives' weight. Optimiser: logistic loss, AdaGrad, a few epochs over a
seeded shuffle, then features seen in fewer than ``--min-df`` training texts are
dropped and the weights are quantised to int8 (see ``InjectionClassifier.to_json``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from bastion.safety.prompting.classifier import (
    MODEL_RESOURCE,
    PACK_RESOURCE,
    WINDOW,
    InjectionClassifier,
    features,
    tokens,
    units,
    windows,
)

ROOT = Path(__file__).resolve().parents[1]
DATA = Path("/work/shared/data/injection")
OUT = ROOT / "src" / "bastion" / "safety" / "prompting" / "data" / MODEL_RESOURCE
VERSION = "injection-lr-2026.12.04b"
# sources that may not ship in a commercial product (see /work/shared/data/README.md caveats)
RESTRICTED = ("tatsu-lab/stanford_alpaca@", "HumanCompatibleAI/tensor-trust-data@")
VAL_SHARE = 0.15
KINDS = ("jailbreak", "direct", "indirect", "benign", "hard_negative")
# Template families: many rows share one template (adaptive-attack / random-search prompts,
# AutoDAN, GPTFuzz), and the corpus's dev split keeps a template on one side, so whole files
# go to dev. With ``--family-split`` the validation split does the same: for these the file is
# the group, drawn from the family (the folder up to the marker) as its stratum.
FAMILIES = (
    "jailbreak_artifacts/",
    "prompt_with_random_search/",
    "adaptive_attacks/",
    "autodan/",
    "GPTFuzz",
)

Example = tuple[list[tuple[str, float]], int, float]


def load(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def vector(unit_feats: list[Counter[str]]) -> list[tuple[str, float]]:
    total: Counter[str] = Counter()
    for c in unit_feats:
        total.update(c)
    n = sum(total.values())
    if not n:
        return []
    norm = 1.0 / math.sqrt(n)
    return [(f, k * norm) for f, k in sorted(total.items())]


def attack_units(
    rows: list[dict[str, Any]], benign: set[str], blocks: bool = False
) -> dict[int, set[int]]:
    """Row index -> indices of its units that are the inserted instruction (indirect rows).

    By its closest sibling (the row built on the same document that shares most units): the
    units it does not share, and that no benign text has, are the attack (at most 6). With
    ``blocks`` (``--locate-blocks``), a constructed row (``context_source``) left over is then
    located when the units no benign text has form one block of at most ``_BLOCK`` units and
    everything around the block is benign text (a multi-line code attack), and last by the
    attack units already located in other rows (one instruction is inserted into many
    documents): 3,489 of the 3,605 indirect train rows instead of 2,979."""
    ind = [i for i, r in enumerate(rows) if r["kind"] == "indirect"]
    unit_lists = {i: [u.strip() for u in units(rows[i]["text"])] for i in ind}
    postings: dict[str, list[int]] = defaultdict(list)
    for i in ind:
        for u in set(unit_lists[i]):
            postings[u].append(i)
    out: dict[int, set[int]] = {}
    for i in ind:
        mine = unit_lists[i]
        shared: Counter[int] = Counter()
        for u in set(mine):
            if len(postings[u]) <= 400:
                for j in postings[u]:
                    if j != i:
                        shared[j] += 1
        distinct = len(set(mine))
        partner_units: set[str] = set()
        if shared:
            j, k = max(shared.items(), key=lambda kv: (kv[1], -kv[0]))
            if k >= 0.5 * distinct and distinct >= 3:
                partner_units = set(unit_lists[j])
        idx = {
            n
            for n, u in enumerate(mine)
            if u not in benign and (not partner_units or u not in partner_units)
        }
        if (partner_units or len(mine) <= WINDOW) and idx and len(idx) <= 6:
            out[i] = idx
        elif blocks and idx and "context_source" in rows[i]:
            block = _block(idx, len(mine))
            rest = [u for n, u in enumerate(mine) if n not in block]
            if block and all(u in benign or u in partner_units for u in rest):
                out[i] = block
    seen = {unit_lists[i][n] for i, idx in out.items() for n in idx} - benign if blocks else set()
    for i in ind:
        if seen and i not in out and "context_source" in rows[i]:
            block = _block(
                {n for n, u in enumerate(unit_lists[i]) if u in seen}, len(unit_lists[i])
            )
            if block:
                out[i] = block
    return out


_BLOCK = 24


def _block(idx: set[int], n: int) -> set[int]:
    """The run of units from the first to the last of ``idx``, if short and not the whole text."""
    if not idx:
        return set()
    lo, hi = min(idx), max(idx) + 1
    return set(range(lo, hi)) if hi - lo <= _BLOCK and hi - lo < n else set()


def examples(
    rows: list[dict[str, Any]],
    attacks: dict[int, set[int]],
    pos_weight: float,
    start: bool,
) -> list[Example]:
    raw: list[tuple[list[tuple[str, float]], int, str]] = []
    for i, r in enumerate(rows):
        parts = units(r["text"])
        feats = [Counter(features(tokens(p), start)) for p in parts]
        label = int(r["label"])
        if i not in attacks or len(parts) <= WINDOW:
            # a located instruction's document is not itself evidence: as a positive, it taught
            # the model that tables and code answers (the usual carriers) are attacks
            raw.append((vector(feats), label, r["kind"]))
        if len(parts) <= 1:
            continue
        if label == 0:
            for a, b in windows(len(parts)):
                raw.append((vector(feats[a:b]), 0, r["kind"]))
        elif i in attacks:
            hit = attacks[i]
            for a, b in windows(len(parts)):
                if all(n in hit for n in range(a, b)):
                    raw.append((vector(feats[a:b]), 1, r["kind"]))
    neg = sum(1 for _, y, _ in raw if y == 0)
    pos_kinds = Counter(k for _, y, k in raw if y == 1)
    per_kind = pos_weight * neg / max(len(pos_kinds), 1)
    out: list[Example] = []
    for x, y, k in raw:
        if not x:
            continue
        w = 1.0 if y == 0 else per_kind / pos_kinds[k]
        out.append((x, y, w))
    return out


def train(data: list[Example], epochs: int, lr: float, seed: int) -> tuple[dict[str, float], float]:
    rng = random.Random(seed)
    w: dict[str, float] = {}
    g: dict[str, float] = {}
    bias, gb = 0.0, 1e-8
    order = list(range(len(data)))
    for epoch in range(epochs):
        rng.shuffle(order)
        loss = 0.0
        for i in order:
            x, y, sw = data[i]
            z = bias
            for f, v in x:
                z += w.get(f, 0.0) * v
            p = 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))
            loss += sw * -math.log(max(p if y else 1.0 - p, 1e-12))
            err = sw * (p - y)
            if abs(err) < 1e-4:
                continue
            gb += err * err
            bias -= lr * err / math.sqrt(gb)
            for f, v in x:
                gf = err * v
                acc = g.get(f, 1e-8) + gf * gf
                g[f] = acc
                w[f] = w.get(f, 0.0) - lr * gf / math.sqrt(acc)
        print(f"  epoch {epoch + 1}: weighted loss {loss / len(data):.4f}", flush=True)
    return w, bias


def family(source: str) -> str | None:
    """The family stratum of a template-family source (its path up to the marker), else None."""
    for mark in FAMILIES:
        at = source.find(mark)
        if at >= 0:
            return source[: at + len(mark)]
    return None


def group(r: dict[str, Any], attacks: dict[int, set[int]], i: int, families: bool = False) -> str:
    """What must not straddle the split: the inserted instruction for indirect rows, the file
    for a template family (with ``families``), else the text."""
    if families and family(str(r["source"])) is not None:
        return str(r["source"])
    if i in attacks:
        parts = units(r["text"])
        return "\n".join(parts[n].strip() for n in sorted(attacks[i]))
    return str(r["text"])


def validation(
    rows: list[dict[str, Any]], attacks: dict[int, set[int]], seed: int, families: bool = False
) -> set[int]:
    """Row indices of the validation split: ``VAL_SHARE`` of the groups of each (kind, source);
    with ``families``, a template family's files are the groups of one stratum."""
    strata: dict[tuple[str, str], dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, r in enumerate(rows):
        source = str(r["source"])
        stratum = (family(source) if families else None) or source
        strata[(r["kind"], stratum)][group(r, attacks, i, families)].append(i)
    out: set[int] = set()
    taken: set[str] = set()
    for key in sorted(strata):
        groups = strata[key]
        order = sorted(groups, key=lambda g: hashlib.sha1(f"{seed}|{g}".encode()).hexdigest())
        n = round(VAL_SHARE * len(order))
        for g in order[:n]:
            out.update(groups[g])
            taken.add(g)
    # a group that also sits in another stratum goes wholly to validation
    for key in sorted(strata):
        for g, idx in strata[key].items():
            if g in taken:
                out.update(idx)
    return out


# ---- the grouped validation split (``--grouped``) ----------------------------------------------
# Every BIPIA-style document carries many indirect rows (14 attacks per email or code answer, 2
# per table) and its clean version (a benign row). Split by attack string alone, a validation
# document had its siblings and its clean self in training, so a model that memorised carrier
# documents was rewarded. The grouped split holds out documents and attacks at once: a
# constructed row is in validation when its document and its attack are both drawn for it,
# in training when neither is, and in neither when only one is (it would leak the other).
GROUPED_SHARE = 0.25
_LINK_POSTINGS = 60  # a unit in more rows than this (a table header, a blank cell) links nothing


def _draw(seed: int, key: str, share: float) -> bool:
    h = hashlib.sha1(f"{seed}|{key}".encode()).digest()
    return int.from_bytes(h[:8], "big") < share * 2**64


def documents(rows: list[dict[str, Any]], attacks: dict[int, set[int]]) -> dict[int, str]:
    """Row index -> its host document's key, for indirect rows and the label-0 rows they share a
    document with. Two rows share one when at least half the document units of the smaller
    (its units, minus the located attack) are in the other, and one of them is indirect; the
    key is the same for every row of a connected group (its smallest text)."""
    doc_units: dict[int, set[str]] = {}
    for i, r in enumerate(rows):
        if r["label"] == 0 or r["kind"] == "indirect":
            parts = [u.strip() for u in units(r["text"])]
            hit = attacks.get(i, set())
            doc_units[i] = {u for n, u in enumerate(parts) if n not in hit and u}
    postings: dict[str, list[int]] = defaultdict(list)
    for i, us in doc_units.items():
        for u in us:
            postings[u].append(i)
    parent = {i: i for i in doc_units}

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, us in doc_units.items():
        if rows[i]["kind"] != "indirect":
            continue
        shared: Counter[int] = Counter()
        for u in us:
            if len(postings[u]) <= _LINK_POSTINGS:
                shared.update(j for j in postings[u] if j != i)
        for j, k in shared.items():
            if k >= 2 and 2 * k >= min(len(us), len(doc_units[j])):
                parent[root(i)] = root(j)
    members: dict[int, list[int]] = defaultdict(list)
    for i in doc_units:
        members[root(i)].append(i)
    out: dict[int, str] = {}
    for idx in members.values():
        if len(idx) > 1:
            key = min(str(rows[i]["text"]) for i in idx)
            out.update((i, key) for i in idx)
    return out


def grouped_validation(
    rows: list[dict[str, Any]], seed: int, share: float = GROUPED_SHARE
) -> tuple[set[int], set[int]]:
    """(validation rows, rows left out of both sides). An attack (the located instruction, a
    template family's file, else the text) and a host document (``documents``) are each drawn
    for validation with probability ``share``, by a seeded hash of their key. A row on a
    document: validation if both its attack and its document are drawn (a label-0 row: its
    document), training if neither, else left out. Any other row: as its attack. The attack
    and document keys do not depend on the training options (the instructions are located
    with ``blocks``), so every candidate is scored on the same split."""
    benign = {u.strip() for r in rows if r["label"] == 0 for u in units(r["text"])}
    located = attack_units(rows, benign, blocks=True)
    docs = documents(rows, located)
    val: set[int] = set()
    out: set[int] = set()
    for i, r in enumerate(rows):
        in_a = _draw(seed, "a|" + group(r, located, i, families=True), share)
        d = docs.get(i)
        if d is None:
            side: bool | None = in_a
        else:
            in_d = _draw(seed, "d|" + d, share)
            side = in_d if r["label"] == 0 else (in_a if in_a == in_d else None)
        if side is None:
            out.add(i)
        elif side:
            val.add(i)
    return val, out


def pick(scores: list[float], rows: list[dict[str, Any]], cap: float = 0.015) -> float:
    """Lowest threshold with at most ``cap`` of label-0 texts, and of each label-0 kind, at or above it."""
    neg = [(r["kind"], s) for s, r in zip(scores, rows, strict=True) if r["label"] == 0]
    n_kind = Counter(k for k, _ in neg)
    above: Counter[str] = Counter()
    # walk down from the top: each step flags one more label-0 text; stop just above the first
    # one that would break a cap (ties with it stay unflagged too, so the cap always holds)
    for total, (k, s) in enumerate(sorted(neg, key=lambda ks: -ks[1]), start=1):
        above[k] += 1
        if total / len(neg) > cap or above[k] / n_kind[k] > cap:
            return min(1.0, math.nextafter(s, 2.0))
    return 0.0


def report(
    model: InjectionClassifier, rows: list[dict[str, Any]]
) -> tuple[float, dict[str, float]]:
    """The picked operating point and the share of each kind at or above it (printed)."""
    scores = [model.score(r["text"]) for r in rows]
    t = pick(scores, rows)
    rates: dict[str, float] = {}
    line = [f"picked operating point p >= {t:.6f}:"]
    for kind in KINDS:
        ks = [s for s, r in zip(scores, rows, strict=True) if r["kind"] == kind]
        if ks:
            rates[kind] = sum(s >= t for s in ks) / len(ks)
            line.append(f"{kind} {rates[kind]:.1%} (n={len(ks)})")
    print("  " + "  ".join(line), flush=True)
    return t, rates


def summary(runs: list[dict[str, float]]) -> str:
    """Mean and range over training seeds of each kind's rate and of the selection score (the
    mean of jailbreak and indirect recall)."""
    cols = [*KINDS, "score"]
    runs = [{**r, "score": (r["jailbreak"] + r["indirect"]) / 2} for r in runs]
    out = []
    for c in cols:
        v = [r[c] for r in runs if c in r]
        if v:
            out.append(f"{c} {sum(v) / len(v):.1%} [{min(v):.1%}-{max(v):.1%}]")
    return f"mean over {len(runs)} seeds: " + "  ".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--no-write", action="store_true", help="report on validation, write nothing")
    ap.add_argument("--all-sources", action="store_true", help="keep NC / unlicensed sources")
    ap.add_argument("--no-start", action="store_true", help="no start-of-unit marker feature")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--lr", type=float, default=0.5)
    ap.add_argument("--pos-weight", type=float, default=0.5)
    ap.add_argument("--min-df", type=int, default=2)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--shuffle-seed", type=int, help="training shuffle seed (default: --seed)")
    ap.add_argument(
        "--seeds",
        help="comma-separated training shuffle seeds: each is trained and scored, then the mean "
        "and range are printed; the first one's model is the one written",
    )
    ap.add_argument(
        "--grouped",
        action="store_true",
        help="validation split holding out host documents and attacks at once (grouped_validation)",
    )
    ap.add_argument(
        "--family-split", action="store_true", help="template families split by file, as dev"
    )
    ap.add_argument(
        "--locate-blocks", action="store_true", help="also locate multi-unit inserted blocks"
    )
    args = ap.parse_args()
    start = not args.no_start
    t0 = time.perf_counter()
    rows = load(args.data / "train.jsonl")
    if not args.all_sources:
        rows = [r for r in rows if not str(r["source"]).startswith(RESTRICTED)]
    benign = {u.strip() for r in rows if r["label"] == 0 for u in units(r["text"])}
    attacks = attack_units(rows, benign, args.locate_blocks)
    print(f"{len(rows)} rows; inserted instruction located in {len(attacks)} indirect rows")
    if args.grouped:
        val, left_out = grouped_validation(rows, args.seed)
    else:
        val, left_out = validation(rows, attacks, args.seed, args.family_split), set()
    test = [r for i, r in enumerate(rows) if i in val]
    index = [i for i in range(len(rows)) if i not in val and i not in left_out]
    rows = [rows[i] for i in index]
    attacks = {n: attacks[i] for n, i in enumerate(index) if i in attacks}
    print(
        f"train {len(rows)} rows, validation {len(test)} rows, left out {len(left_out)}", flush=True
    )
    df: Counter[str] = Counter()
    for r in rows:
        df.update(set(features(tokens(r["text"]), start)))
    data = examples(rows, attacks, args.pos_weight, start)
    print(f"{len(data)} training spans ({time.perf_counter() - t0:.0f} s)", flush=True)
    shuffle = args.seed if args.shuffle_seed is None else args.shuffle_seed
    seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else [shuffle]
    models: list[InjectionClassifier] = []
    runs: list[dict[str, float]] = []
    for seed in seeds:
        w, bias = train(data, args.epochs, args.lr, seed)
        kept = {f: v for f, v in w.items() if df[f] >= args.min_df and abs(v) >= 1e-3}
        model = InjectionClassifier(kept, bias, version=VERSION, start=start)
        blob = model.to_json()
        model = InjectionClassifier.from_json(blob)
        print(
            f"seed {seed}: {len(kept)} features kept, {len(blob) / 1e6:.2f} MB "
            f"({time.perf_counter() - t0:.0f} s)"
        )
        model.threshold, rates = report(model, test)
        models.append(model)
        runs.append(rates)
    if len(runs) > 1:
        print(summary(runs), flush=True)
    model = models[0]
    if args.no_write:
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(model.to_json())
    print(f"wrote {args.out} (operating point {model.threshold:.6f} stored with the weights)")
    # the process loads the packed arrays, not the JSON (scripts/pack_injection.py, deterministic)
    pack = args.out.with_name(PACK_RESOURCE)
    pack.write_bytes(InjectionClassifier.from_json(args.out.read_bytes()).to_pack())
    print(f"wrote {pack}")


if __name__ == "__main__":
    main()

"""Injection detection on the shipped labeled sets: detection rate, false-positive rate, speed.

    .venv/bin/python bench/injection_eval.py            # tables for the dev and holdout sets
    .venv/bin/python bench/injection_eval.py --misses   # also list every miss and false positive
    .venv/bin/python bench/injection_eval.py --dev-only --model FILE   # another weights file on dev

The scanner is measured as shipped: rules plus the classifier (``classifier.py``). If the
project corpus is present (``/work/shared/data/injection/dev.jsonl``, see its README; it is
not needed at run time and is not shipped), its dev split is scored too: precision, recall
and false-positive rate per kind (jailbreak, direct, indirect, benign, hard_negative), for
rules alone, the model alone and both. Every dev text is scanned as a retrieved document
(``source="doc"``, the stricter setting). ``--pick-threshold`` prints the lowest model
threshold at which at most 1.5 % of dev's label-0 texts, and at most 2 % of either
label-0 kind, are flagged by rules-or-model; it picked the first model's operating
point. Models since carry their own, picked by ``scripts/train_injection.py`` on a
validation split of train, and dev is only read here to report (``--model`` scores a
weights file other than the shipped one, e.g. one trained with ``--all-sources``).

``attacks.jsonl``/``benign.jsonl`` are the development set (the rules were tuned on it);
``attacks_holdout.jsonl``/``benign_holdout.jsonl`` were written afterwards and never tuned
on, so their numbers are the honest estimate for attacks nobody has seen. Speed is
measured on ``typical_5kb.txt`` (a support email thread plus knowledge-base text) and on
5 KB slices of the benign set (dense with trigger words, emoji, RTL and encoded samples).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from itertools import chain, pairwise, repeat
from operator import add
from pathlib import Path
from typing import Any

from bastion.safety.prompting import InjectionScanner
from bastion.safety.prompting.classifier import InjectionClassifier, shipped, tokens, units

DATA = Path(__file__).resolve().parent / "data" / "injection"
CORPUS = Path("/work/shared/data/injection")
KINDS = ("jailbreak", "direct", "indirect", "benign", "hard_negative")


def load(name: str) -> list[dict[str, Any]]:
    with (DATA / name).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def by(rows: list[dict[str, Any]], flags: list[bool], key: str) -> list[tuple[str, int, int]]:
    n: dict[str, int] = defaultdict(int)
    hits: dict[str, int] = defaultdict(int)
    for r, f in zip(rows, flags, strict=True):
        n[r[key]] += 1
        hits[r[key]] += int(f)
    return [(g, n[g], hits[g]) for g in sorted(n)] + [("ALL", len(rows), sum(flags))]


def table(title: str, rows: list[tuple[str, int, int]], rate: str) -> None:
    print(f"\n{title}")
    print(f"  {'group':<22} {'n':>5} {'hits':>5} {rate:>8}")
    for group, n, hits in rows:
        print(f"  {group:<22} {n:>5} {hits:>5} {100.0 * hits / max(n, 1):>7.1f}%")


def evaluate(
    scanner: InjectionScanner, suffix: str, title: str, misses: bool
) -> tuple[float, float]:
    attacks, benign = load(f"attacks{suffix}.jsonl"), load(f"benign{suffix}.jsonl")
    a_res = [scanner.scan(r["text"], r["source"]) for r in attacks]
    b_res = [scanner.scan(r["text"], r["source"]) for r in benign]
    a_flag = [r.flagged for r in a_res]
    b_flag = [r.flagged for r in b_res]
    print(f"\n=== {title}: {len(attacks)} attacks, {len(benign)} benign texts ===")
    table("Detection (attacks flagged) by category", by(attacks, a_flag, "category"), "detect")
    table("Detection by source", by(attacks, a_flag, "source"), "detect")
    table("False positives (benign flagged) by category", by(benign, b_flag, "category"), "FP")
    det, fp = sum(a_flag) / len(attacks), sum(b_flag) / len(benign)
    print(f"\n  DETECTION {100 * det:.1f}%   FALSE POSITIVES {100 * fp:.1f}% (target <= 2%)")
    if misses:
        print("\n  Misses:")
        for r, res in zip(attacks, a_res, strict=True):
            if not res.flagged:
                print(
                    f"    {r['id']} [{r['category']}] {res.score:.2f} {res.reasons} {r['text'][:80]!r}"
                )
        print("  False positives:")
        for r, res in zip(benign, b_res, strict=True):
            if res.flagged:
                print(
                    f"    {r['id']} [{r['category']}] {res.score:.2f} {res.reasons} {r['text'][:80]!r}"
                )
    return det, fp


def timed(fn: Callable[[], object], reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e6)
    return sorted(out)


def slices(corpus: list[str], size: int = 5000, count: int = 40) -> list[str]:
    texts: list[str] = []
    i = 0
    while len(texts) < count:
        chunk: list[str] = []
        while sum(len(c) + 2 for c in chunk) < size:
            chunk.append(corpus[i % len(corpus)])
            i += 1
        texts.append("\n\n".join(chunk)[:size])
    return texts


def speed(scanner: InjectionScanner) -> None:
    typical = (DATA / "typical_5kb.txt").read_text(encoding="utf-8")[:5000]
    benign = [r["text"] for r in load("benign.jsonl")]
    mixed = slices(benign)
    for _ in range(20):
        scanner.scan(typical)
    t = timed(lambda: scanner.scan(typical), 400)
    m: list[float] = []
    for text in mixed:
        m += timed(lambda text=text: scanner.scan(text), 10)  # type: ignore[misc]
    m.sort()
    blob = sum(len(x.encode()) for x in benign)
    t0 = time.perf_counter()
    for _ in range(10):
        for x in benign:
            scanner.scan(x)
    mbs = 10 * blob / (time.perf_counter() - t0) / 1e6
    base = timed(lambda: sum(range(1000)), 400)
    print("\n=== Speed ===")
    print(
        f"  typical 5 KB text     p50 {statistics.median(t):7.0f} us   p95 {t[int(0.95 * len(t))]:7.0f} us"
    )
    print(
        f"  benign-set 5 KB slice p50 {statistics.median(m):7.0f} us   p95 {m[int(0.95 * len(m))]:7.0f} us"
    )
    print(f"  throughput over the benign set (short texts): {mbs:.2f} MB/s")
    print(f"  machine yardstick: sum(range(1000)) p50 {statistics.median(base):.1f} us")


def dev_table(title: str, rows: list[dict[str, Any]], flags: list[bool]) -> None:
    """Recall for attack kinds, false-positive rate for label-0 kinds, precision against all of dev."""
    fp = sum(f for r, f in zip(rows, flags, strict=True) if r["label"] == 0)
    neg = sum(1 for r in rows if r["label"] == 0)
    print(f"\n{title}")
    print(f"  {'kind':<14} {'n':>5} {'flagged':>7} {'precision':>9} {'recall':>7} {'FPR':>6}")
    for kind in (*KINDS, "ALL"):
        sel = [(r, f) for r, f in zip(rows, flags, strict=True) if kind in ("ALL", r["kind"])]
        hits = sum(f for _, f in sel)
        tp = sum(f for r, f in sel if r["label"] == 1)
        pos = sum(1 for r, _ in sel if r["label"] == 1)
        prec = f"{100 * tp / (tp + fp):8.1f}%" if pos and tp + fp else f"{'-':>9}"
        rec = f"{100 * tp / pos:6.1f}%" if pos else f"{'-':>7}"
        kneg = len(sel) - pos
        kfp = hits - tp
        fpr = f"{'-':>6}"
        if kneg:
            fpr = f"{100 * (fp if kind == 'ALL' else kfp) / (neg if kind == 'ALL' else kneg):5.1f}%"
        print(f"  {kind:<14} {len(sel):>5} {hits:>7} {prec} {rec} {fpr}")
    print(
        "  (precision of a kind = its flagged attacks over those plus every false positive on dev)"
    )


def dev(pick: bool, misses: bool, weights: InjectionClassifier | None = None) -> None:
    path = CORPUS / "dev.jsonl"
    if not path.exists():
        print(f"\n=== Project dev split: {path} is absent here; skipped ===")
        return
    with path.open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    rules = InjectionScanner(classifier=None)
    both = InjectionScanner() if weights is None else InjectionScanner(classifier=weights)
    assert isinstance(both.classifier, InjectionClassifier)
    point = both.classifier.threshold
    rule_scores = [rules.scan(r["text"], "doc").score for r in rows]
    results = [both.scan(r["text"], "doc") for r in rows]
    model = [res.model_score or 0.0 for res in results]
    print(f"\n=== Project dev split ({path}, {len(rows)} texts, read-only, not shipped) ===")
    print(f"  model {both.classifier.version}, operating point p >= {point}")
    if pick:
        neg = [
            (r["kind"], s, p)
            for r, s, p in zip(rows, rule_scores, model, strict=True)
            if r["label"] == 0
        ]
        for t in sorted({round(p, 4) for _, _, p in neg} | {1.0}):
            flagged = [k for k, s, p in neg if s >= 0.5 or p >= t]
            rate = len(flagged) / len(neg)
            per = {
                k: flagged.count(k) / sum(1 for n in neg if n[0] == k)
                for k in ("benign", "hard_negative")
            }
            if rate <= 0.015 and max(per.values()) <= 0.02:
                print(f"  PICKED operating point {t} (label-0 FPR {100 * rate:.2f}%, {per})")
                break
        return
    dev_table("Rules alone (score >= 0.5)", rows, [s >= 0.5 for s in rule_scores])
    dev_table(f"Model alone (p >= {point})", rows, [p >= point for p in model])
    dev_table(
        "Shipped scanner: rules + model (max, score >= 0.5)", rows, [r.flagged for r in results]
    )
    if misses:
        for r, res in zip(rows, results, strict=True):
            if res.flagged != bool(r["label"]):
                print(f"    [{r['kind']}] {res.score:.2f} {res.reasons[:3]} {r['text'][:90]!r}")


def joined_bigram_sums(model: InjectionClassifier, text: str, weights: dict[str, float]) -> float:
    """Baseline: the previous inference's inner loop (one joined string per bigram look-up)."""
    get = weights.get
    toks: list[str] = []
    lead = ["<s>"] if model.start else []
    for part in units(text.lower()):
        toks += lead + tokens(part) + [" "]
    zero = repeat(0.0)
    grams = chain(map(get, map(" ".join, pairwise(toks)), zero), (0.0,))
    return float(sum(map(add, map(get, toks, zero), grams)))


def pair_bigram_sums(model: InjectionClassifier, text: str) -> float:
    """This tree's inner loop: tokens to int ids, bigrams looked up by ``id_a * K + id_b``."""
    _, ps, _ = model.sums(text)
    return float(ps[-1])


def model_speed() -> None:
    model = shipped()
    typical = (DATA / "typical_5kb.txt").read_text(encoding="utf-8")[:5000]
    for _ in range(20):
        model.score(typical)
    weights = model.weights  # string-keyed, built once
    assert (
        abs(joined_bigram_sums(model, typical, weights) - pair_bigram_sums(model, typical)) < 1e-9
    )
    old: list[float] = []
    new: list[float] = []
    for _ in range(30):  # interleaved rounds, best of each round
        old.append(timed(lambda: joined_bigram_sums(model, typical, weights), 20)[0])
        new.append(timed(lambda: pair_bigram_sums(model, typical), 20)[0])
    print(
        f"  feature sums, typical 5 KB: joined-string bigrams {statistics.median(old):6.0f} us, "
        f"pair-keyed {statistics.median(new):6.0f} us, ratio {statistics.median(new) / statistics.median(old):.2f}"
        " (median of 30 interleaved best-of-20 rounds)"
    )
    t = timed(lambda: model.score(typical), 400)
    rules = InjectionScanner(classifier=None)
    r = timed(lambda: rules.scan(typical), 400)
    print(
        f"  model alone, typical 5 KB  p50 {statistics.median(t):7.0f} us   p95 {t[int(0.95 * len(t))]:7.0f} us"
    )
    print(
        f"  rules alone, typical 5 KB  p50 {statistics.median(r):7.0f} us   p95 {r[int(0.95 * len(r))]:7.0f} us"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--misses", action="store_true", help="list every miss and false positive")
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument(
        "--pick-threshold", action="store_true", help="print the model's operating point"
    )
    ap.add_argument("--model", type=Path, help="score this weights file instead of the shipped one")
    ap.add_argument("--dev-only", action="store_true", help="only the project dev split")
    args = ap.parse_args()
    if args.pick_threshold:
        dev(True, False)
        return
    if args.dev_only:
        alt = InjectionClassifier.from_json(args.model.read_bytes()) if args.model else None
        dev(False, args.misses, alt)
        return
    scanner = InjectionScanner(threshold=args.threshold)
    evaluate(scanner, "", "Development set (rules tuned on it)", args.misses)
    evaluate(scanner, "_holdout", "Holdout set (never tuned on)", args.misses)
    dev(False, args.misses)
    speed(scanner)
    model_speed()


if __name__ == "__main__":
    main()

"""Injection detection on the shipped labeled sets: detection rate, false-positive rate, speed.

    .venv/bin/python bench/injection_eval.py            # tables for the dev and holdout sets
    .venv/bin/python bench/injection_eval.py --misses   # also list every miss and false positive

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
from pathlib import Path
from typing import Any

from bastion.safety.prompting import InjectionScanner

DATA = Path(__file__).resolve().parent / "data" / "injection"


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
    texts, i = [], 0
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--misses", action="store_true", help="list every miss and false positive")
    ap.add_argument("--threshold", type=float, default=0.5)
    args = ap.parse_args()
    scanner = InjectionScanner(threshold=args.threshold)
    evaluate(scanner, "", "Development set (rules tuned on it)", args.misses)
    evaluate(scanner, "_holdout", "Holdout set (never tuned on)", args.misses)
    speed(scanner)


if __name__ == "__main__":
    main()

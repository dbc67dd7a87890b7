"""PII scrubber: precision/recall per type on the shipped labeled corpus, hard negatives, speed.

    .venv/bin/python bench/pii_eval.py                 # tables + speed
    .venv/bin/python bench/pii_eval.py --misses        # also list every miss and false positive
    .venv/bin/python bench/pii_eval.py --seed 7 --n 3000   # score a freshly generated corpus
    .venv/bin/python bench/pii_eval.py --write         # regenerate bench/data/pii/corpus.jsonl

Speed: p50 of one ``Scrubber.scrub`` call on 5 KB of typical support text (the same file
the injection benchmark uses, so the two figures add up to the per-call guard cost), on
5 KB of PII-dense corpus text, throughput in MB/s over the whole corpus, and the cost
of streaming the typical text through a ``StreamScrubber`` in 4-character deltas.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from bastion.safety.pii import Scrubber
from bastion.safety.pii.corpus import Report, Sample, dump, evaluate, generate, load

DATA = Path(__file__).resolve().parent / "data"
CORPUS = DATA / "pii" / "corpus.jsonl"
TYPICAL = DATA / "injection" / "typical_5kb.txt"
SEED, SIZE = 759, 1000
TARGET = 0.98


def table(report: Report) -> bool:
    ok = True
    print(f"\n{'type':<8} {'gold':>6} {'found':>6} {'pred':>6} {'precision':>10} {'recall':>8}")
    for t, s in sorted(report.by_type.items()):
        passed = s.precision >= TARGET and s.recall >= TARGET
        ok &= passed
        mark = "" if passed else "  < target"
        print(
            f"{t:<8} {s.gold:>6} {s.found:>6} {s.predicted:>6} "
            f"{s.precision:>10.4f} {s.recall:>8.4f}{mark}"
        )
    print(f"\ngold characters left visible: {report.leaked_chars} of {report.gold_chars}")
    print(f"\n{'hard negative':<14} {'redacted':>9} {'of':>6}")
    for kind, (hit, total) in sorted(report.negatives.items()):
        print(f"{kind:<14} {hit:>9} {total:>6}")
    print(f"\nticket numbers redacted: {report.tickets_redacted}")
    return ok and report.tickets_redacted == 0


def misses(scrubber: Scrubber, samples: list[Sample]) -> None:
    print("\nmisses and false positives:")
    for smp in samples:
        findings = scrubber.scrub(smp.text).findings
        for g in smp.pii:
            if not any(
                f.type.value == g.label and f.start < g.end and g.start < f.end for f in findings
            ):
                print(f"  MISS {g.label:<7} {smp.text[max(0, g.start - 30) : g.end + 10]!r}")
        for f in findings:
            if not any(
                g.label == f.type.value and f.start < g.end and g.start < f.end for g in smp.pii
            ):
                print(f"  FP   {f.type.value:<7} {smp.text[max(0, f.start - 30) : f.end + 10]!r}")


def p50_us(fn: Callable[[], object], runs: int = 2000) -> float:
    for _ in range(min(200, runs)):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def speed(scrubber: Scrubber, samples: list[Sample]) -> None:
    typical = TYPICAL.read_text(encoding="utf-8")[:5000]
    dense = ""
    for s in samples:
        if len(dense) + len(s.text) > 5000:
            break
        dense += s.text + "\n"
    print("\nspeed (one core, shared machine; medians):")
    t_typ = p50_us(lambda: scrubber.scrub(typical))
    print(f"  scrub 5 KB typical support text    p50 {t_typ:8.1f} µs")
    print(
        f"  scrub {len(dense) / 1000:.1f} KB PII-dense corpus text p50 {p50_us(lambda: scrubber.scrub(dense)):8.1f} µs"
    )
    texts = [s.text for s in samples]
    total = sum(len(t) for t in texts)
    t0 = time.perf_counter()
    for t in texts:
        scrubber.scrub(t)
    dt = time.perf_counter() - t0
    print(
        f"  throughput, corpus one sample per call   {total / dt / 1e6:8.2f} MB/s ({len(texts)} calls)"
    )
    big = typical * 200
    t0 = time.perf_counter()
    scrubber.scrub(big)
    print(
        f"  throughput, 1 MB typical text in one call {len(big) / (time.perf_counter() - t0) / 1e6:8.2f} MB/s"
    )

    def stream() -> None:
        s = scrubber.stream()
        for i in range(0, len(typical), 4):
            s.feed(typical[i : i + 4])
        s.flush()

    t_stream = p50_us(stream, runs=200)
    print(
        f"  stream 5 KB in 4-char deltas        p50 {t_stream:8.1f} µs ({t_stream / (len(typical) / 4):.2f} µs/delta)"
    )
    try:
        from bastion.safety.prompting import InjectionScanner
    except ImportError:
        return
    scanner = InjectionScanner()
    t_inj = p50_us(lambda: scanner.scan(typical))
    both = p50_us(lambda: (scrubber.scrub(typical), scanner.scan(typical)))
    print(
        f"  with the injection scanner (5 KB)   p50 {both:8.1f} µs (scanner alone {t_inj:.1f} µs)"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, help="score a fresh corpus with this seed instead")
    ap.add_argument("--n", type=int, default=SIZE)
    ap.add_argument("--write", action="store_true", help=f"regenerate {CORPUS}")
    ap.add_argument("--misses", action="store_true")
    ap.add_argument("--no-speed", action="store_true")
    args = ap.parse_args()
    if args.write:
        dump(generate(SEED, args.n), CORPUS)
        print(f"wrote {args.n} samples (seed {SEED}) to {CORPUS}")
    samples = generate(args.seed, args.n) if args.seed is not None else load(CORPUS)
    origin = f"generated, seed {args.seed}" if args.seed is not None else str(CORPUS)
    print(f"PII corpus: {len(samples)} samples ({origin})")
    scrubber = Scrubber()
    ok = table(evaluate(scrubber, samples))
    if args.misses:
        misses(scrubber, samples)
    if not args.no_speed:
        speed(scrubber, samples)
    print(f"\ntargets (precision and recall >= {TARGET} per type, no ticket redacted): "
          f"{'PASS' if ok else 'MISS'}")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

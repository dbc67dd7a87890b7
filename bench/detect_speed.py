"""PII + injection detection per 5 KB: p50 of each detector and of both, on the same texts.

Issue 13 asks for PII + injection together <= 1 ms p50 per 5 KB. This prints one table:
``Scrubber.scrub`` (default config: patterns and the name tagger), ``InjectionScanner.scan``
(rules and the shipped classifier), the classifier alone, and the two detectors one after
the other, on three kinds of 5 KB text: the typical support text both benchmarks use, a
slice of the PII corpus (dense in findings) and slices of the benign injection set. Runs are
interleaved per round (PII, injection, both, ...) so the shared machine's load moves every
column alike; every loop is bounded by a count.

    .venv/bin/python bench/detect_speed.py            # 15 rounds x 100 calls per cell
    .venv/bin/python bench/detect_speed.py --quick    # 5 rounds x 40 calls
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from bastion.safety.pii import Scrubber, ScrubberConfig
from bastion.safety.prompting import InjectionScanner
from bastion.safety.prompting.classifier import shipped

DATA = Path(__file__).resolve().parent / "data"
TYPICAL = DATA / "injection" / "typical_5kb.txt"
PII_CORPUS = DATA / "pii" / "corpus.jsonl"
BENIGN = DATA / "injection" / "benign.jsonl"
SIZE = 5000


def texts() -> dict[str, str]:
    """Three 5 KB texts: typical support text, PII-dense corpus text, benign injection-set text."""
    typical = TYPICAL.read_text(encoding="utf-8")[:SIZE]
    dense = ""
    for line in PII_CORPUS.read_text(encoding="utf-8").splitlines():
        t = json.loads(line)["text"]
        if len(dense) + len(t) > SIZE:
            break
        dense += t + "\n"
    benign = ""
    for line in BENIGN.read_text(encoding="utf-8").splitlines():
        t = json.loads(line)["text"]
        if len(benign) + len(t) > SIZE:
            break
        benign += t + "\n\n"
    return {"typical": typical, "pii-dense": dense, "benign": benign}


def bench(cells: dict[str, Callable[[], object]], rounds: int, calls: int) -> dict[str, float]:
    """p50 in microseconds per cell, cells interleaved round by round."""
    times: dict[str, list[float]] = {k: [] for k in cells}
    for fn in cells.values():  # warm-up
        for _ in range(20):
            fn()
    perf = time.perf_counter
    for _ in range(rounds):
        for name, fn in cells.items():
            out = times[name]
            for _ in range(calls):
                t0 = perf()
                fn()
                out.append(perf() - t0)
    return {k: statistics.median(v) * 1e6 for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    rounds, calls = (5, 40) if args.quick else (15, 100)
    scrubber = Scrubber(ScrubberConfig())
    scanner = InjectionScanner()
    model = shipped()
    print(
        f"p50 per call in µs ({rounds} rounds x {calls} calls, interleaved; one core, shared box)"
    )
    print(f"{'text':<12}{'chars':>7}{'PII':>9}{'injection':>11}{'(model)':>9}{'both':>9}")
    for name, text in texts().items():
        r = bench(
            {
                "pii": lambda text=text: scrubber.scrub(text),  # type: ignore[misc]
                "inj": lambda text=text: scanner.scan(text),  # type: ignore[misc]
                "model": lambda text=text: model.verdict(text),  # type: ignore[misc]
                "both": lambda text=text: (scrubber.scrub(text), scanner.scan(text)),  # type: ignore[misc]
            },
            rounds,
            calls,
        )
        print(
            f"{name:<12}{len(text):>7}{r['pii']:>9.0f}{r['inj']:>11.0f}{r['model']:>9.0f}{r['both']:>9.0f}"
        )


if __name__ == "__main__":
    main()

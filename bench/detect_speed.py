"""PII + injection detection per 5 KB: p50 of each detector and of both, on the same texts.

Issue 13 asks for PII + injection together <= 1 ms p50 per 5 KB. This prints one table:
``Scrubber.scrub`` (default config: patterns and the name tagger), ``InjectionScanner.scan``
(rules and the shipped classifier), the classifier alone, and the two detectors one after
the other; with ``--parts`` also the pattern passes alone (``ner="off"``) and the rules alone
(``classifier=None``), the share that is neither model; on three kinds of 5 KB text: the typical support text both benchmarks use, a
slice of the PII corpus (dense in findings) and slices of the benign injection set. Runs are
interleaved per round (PII, injection, both, ...) so the shared machine's load moves every
column alike; every loop is bounded by a count.

    .venv/bin/python bench/detect_speed.py            # 60 rounds x 25 calls per cell
    .venv/bin/python bench/detect_speed.py --quick    # 20 rounds x 10 calls
    .venv/bin/python bench/detect_speed.py --parts    # + patterns alone, rules alone
    .venv/bin/python bench/detect_speed.py --rounds 30 --calls 10   # any bounded count

Before/after on a shared box: run the old tree and the new one in turn, several times
(``git archive <commit> | tar -x -C /tmp/before``, then ``PYTHONPATH=/tmp/before/src``
for the old), and compare the ranges.
"""

from __future__ import annotations

import argparse
import dataclasses
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


def native_loops() -> str:
    """Which of the detectors' C loops this tree runs (an old tree, or a build without a C
    compiler, runs the Python loops: the same results, 2-3x the CPU)."""
    import importlib

    names = {"classifier": "prompting.classifier", "name tagger": "pii._names"}
    have = []
    for label, module in names.items():
        mod = importlib.import_module(f"bastion.safety.{module}")
        built = getattr(mod, "_native_sums", None) or getattr(mod, "_native_scores", None)
        have.append(f"{label} {'C' if built is not None else 'Python'}")
    return ", ".join(have)


def bench(
    cells: dict[str, Callable[[], object]], rounds: int, calls: int
) -> tuple[dict[str, float], dict[str, float]]:
    """p50 in microseconds per cell, wall clock and this thread's CPU time, cells interleaved
    round by round. On a loaded box the wall clock counts the time other processes held the
    core; the thread's CPU time does not, so it is the steadier figure for a code change."""
    wall: dict[str, list[float]] = {k: [] for k in cells}
    cpu: dict[str, list[float]] = {k: [] for k in cells}
    for fn in cells.values():  # warm-up
        for _ in range(20):
            fn()
    perf, thread = time.perf_counter, time.thread_time
    for _ in range(rounds):
        for name, fn in cells.items():
            w, c = wall[name], cpu[name]
            for _ in range(calls):
                t0, c0 = perf(), thread()
                fn()
                c.append(thread() - c0)
                w.append(perf() - t0)
    p50 = statistics.median
    return {k: p50(v) * 1e6 for k, v in wall.items()}, {k: p50(v) * 1e6 for k, v in cpu.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="20 rounds x 10 calls per cell")
    ap.add_argument("--json", type=Path, help="write the p50s here")
    ap.add_argument("--rounds", type=int, help="rounds (default 60, --quick 20)")
    ap.add_argument("--calls", type=int, help="calls per cell and round (default 25, --quick 10)")
    ap.add_argument(
        "--parts", action="store_true", help="also the pattern passes and the rules alone"
    )
    args = ap.parse_args()
    out: dict[str, dict[str, dict[str, float]]] = {}
    rounds, calls = (20, 10) if args.quick else (60, 25)
    rounds = min(max(args.rounds or rounds, 1), 1000)
    calls = min(max(args.calls or calls, 1), 1000)
    scrubber = Scrubber(ScrubberConfig())
    scanner = InjectionScanner()
    model = shipped()
    patterns = Scrubber(dataclasses.replace(ScrubberConfig(), ner="off"))
    rules = InjectionScanner(classifier=None)
    print(
        f"p50 per call in µs ({rounds} rounds x {calls} calls, interleaved; one core, shared box)"
    )
    print(f"C loops: {native_loops()}")
    head = f"{'PII':>7}{'injection':>11}{'(model)':>9}{'both':>7}"
    if args.parts:
        head += f"{'(patt.)':>9}{'(rules)':>9}"
    width = len(head)
    print(f"{'':<19}{'--- thread CPU time ---':^{width}}  {'--- wall clock ---':^{width}}")
    print(f"{'text':<12}{'chars':>7}{head}  {head}")
    for name, text in texts().items():
        cells: dict[str, Callable[[], object]] = {
            "pii": lambda text=text: scrubber.scrub(text),  # type: ignore[misc]
            "inj": lambda text=text: scanner.scan(text),  # type: ignore[misc]
            "model": lambda text=text: model.verdict(text),  # type: ignore[misc]
            "both": lambda text=text: (scrubber.scrub(text), scanner.scan(text)),  # type: ignore[misc]
        }
        if args.parts:
            cells["patterns"] = lambda text=text: patterns.scrub(text)  # type: ignore[misc]
            cells["rules"] = lambda text=text: rules.scan(text)  # type: ignore[misc]
        wall, cpu = bench(cells, rounds, calls)
        cols = [
            f"{r['pii']:>7.0f}{r['inj']:>11.0f}{r['model']:>9.0f}{r['both']:>7.0f}"
            + (f"{r['patterns']:>9.0f}{r['rules']:>9.0f}" if args.parts else "")
            for r in (cpu, wall)
        ]
        print(f"{name:<12}{len(text):>7}{cols[0]}  {cols[1]}")
        out[name] = {"cpu_us": cpu, "wall_us": wall}
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

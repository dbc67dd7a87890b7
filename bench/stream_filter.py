"""The streamed PII filter per 32-chunk stream: thread CPU time p50, by text and mode.

The gateway registers one ``StreamScrubber`` per call as an output filter and feeds it each
text delta (``bastion.output``); this times exactly that, without the wire around it: a fresh
session, 32 deltas fed one by one, then ``flush``. Texts: the simulator's own prose (what
``bench/overhead.py`` streams), the first 32 words of the typical support text, and 32 words
of the PII corpus (dense in findings). Deltas are words with their leading space, the shape
providers send. Modes: ``sensitive`` (the default output policy), ``redact``, ``flag``.
Cells are interleaved round by round; every loop is bounded by a count.

    .venv/bin/python bench/stream_filter.py            # 40 rounds x 25 streams per cell
    .venv/bin/python bench/stream_filter.py --quick    # 10 rounds x 10 streams

Run it against another checkout's code with ``PYTHONPATH=<that checkout>/src`` to compare,
or, on a shared box, in the same process: ``--baseline <checkout>/src/bastion/safety/pii/_stream.py``
loads that version of the stream filter beside this one (over this checkout's detectors) and
times both stream by stream, alternating, with the ratio per cell (new / baseline, < 1 is faster).

    .venv/bin/python bench/stream_filter.py --quick --baseline /tmp/before/src/bastion/safety/pii/_stream.py
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import statistics
import time
from pathlib import Path

from bastion.providers.sim.answers import generate_words
from bastion.safety.pii import Scrubber, ScrubberConfig, ScrubSession

DATA = Path(__file__).resolve().parent / "data"
CHUNKS = 32
MODES = ("sensitive", "redact", "flag")


def deltas() -> dict[str, list[str]]:
    """Three 32-delta answers, split into words with their leading whitespace."""
    words = re.compile(r"\s*\S+")
    typical = (DATA / "injection" / "typical_5kb.txt").read_text(encoding="utf-8")
    dense = " ".join(
        json.loads(line)["text"]
        for line in (DATA / "pii" / "corpus.jsonl").read_text(encoding="utf-8").splitlines()[:8]
    )
    return {
        "sim prose": generate_words(b"bench", CHUNKS),
        "support text": words.findall(typical)[:CHUNKS],
        "pii-dense": words.findall(dense)[:CHUNKS],
    }


def load_baseline(path: str) -> type:
    """Another version's ``_stream.py`` as ``bastion.safety.pii._stream_baseline``."""
    spec = importlib.util.spec_from_file_location("bastion.safety.pii._stream_baseline", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.StreamScrubber  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="10 rounds x 10 streams per cell")
    ap.add_argument("--baseline", help="another version's _stream.py, timed alternately")
    args = ap.parse_args()
    if args.baseline:
        compare(load_baseline(args.baseline), args.quick)
        return
    rounds, calls = (10, 10) if args.quick else (40, 25)
    scrubbers = {
        "names on": Scrubber(ScrubberConfig()),
        "names off": Scrubber(ScrubberConfig(ner="off")),
    }
    cells = [
        (text, ner, mode, chunks)
        for text, chunks in deltas().items()
        for ner in scrubbers
        for mode in MODES
    ]
    samples: dict[tuple[str, str, str], list[float]] = {c[:3]: [] for c in cells}

    def one(scrubber: Scrubber, mode: str, chunks: list[str]) -> float:
        c0 = time.thread_time()
        s = scrubber.session().stream(mode=mode)  # type: ignore[arg-type]
        for d in chunks:
            s.feed(d)
        s.flush()
        return time.thread_time() - c0

    for _text, ner, mode, chunks in cells:  # warm-up
        for _ in range(5):
            one(scrubbers[ner], mode, chunks)
    for _ in range(rounds):
        for text, ner, mode, chunks in cells:
            for _ in range(calls):
                samples[(text, ner, mode)].append(one(scrubbers[ner], mode, chunks))
    print(f"thread CPU per {CHUNKS}-chunk stream, p50 in µs ({rounds} rounds x {calls} streams)")
    print(f"{'text':<14}{'tagger':<11}" + "".join(f"{m:>11}" for m in MODES))
    for text in deltas():
        for ner in scrubbers:
            row = "".join(
                f"{statistics.median(samples[(text, ner, m)]) * 1e6:>11.0f}" for m in MODES
            )
            print(f"{text:<14}{ner:<11}{row}")


def compare(base: type, quick: bool) -> None:
    """This version and ``base`` stream by stream, alternating: p50s and their ratio."""
    rounds, calls = (10, 10) if quick else (40, 25)
    scrubbers = {
        "names on": Scrubber(ScrubberConfig()),
        "names off": Scrubber(ScrubberConfig(ner="off")),
    }
    texts = deltas()
    cells = [(t, ner, mode) for t in texts for ner in scrubbers for mode in MODES]
    new_s: dict[tuple[str, str, str], list[float]] = {c: [] for c in cells}
    old_s: dict[tuple[str, str, str], list[float]] = {c: [] for c in cells}

    def one(make: object, scrubber: Scrubber, mode: str, chunks: list[str]) -> float:
        c0 = time.thread_time()
        s = make(ScrubSession(scrubber), mode=mode)  # type: ignore[operator]
        for d in chunks:
            s.feed(d)
        s.flush()
        return time.thread_time() - c0

    new = scrubbers["names on"].session().stream().__class__
    for r in range(rounds + 1):  # the first round warms up
        for text, ner, mode in cells:
            for _ in range(calls):
                a = one(new, scrubbers[ner], mode, texts[text])
                b = one(base, scrubbers[ner], mode, texts[text])
                if r:
                    new_s[(text, ner, mode)].append(a)
                    old_s[(text, ner, mode)].append(b)
    print(f"thread CPU per {CHUNKS}-chunk stream, p50 in µs, this / baseline = ratio")
    print(f"({rounds} rounds x {calls} streams, alternating stream by stream)")
    print(f"{'text':<14}{'tagger':<11}" + "".join(f"{m:>24}" for m in MODES))
    for text in texts:
        for ner in scrubbers:
            row = ""
            for m in MODES:
                a = statistics.median(new_s[(text, ner, m)]) * 1e6
                b = statistics.median(old_s[(text, ner, m)]) * 1e6
                row += f"{a:>9.0f} /{b:>6.0f} = {a / b:4.2f}"
            print(f"{text:<14}{ner:<11}{row}")


if __name__ == "__main__":
    main()

"""PII scrubber: precision/recall per type on the shipped labeled corpus, hard negatives, speed.

    .venv/bin/python bench/pii_eval.py                 # tables + speed
    .venv/bin/python bench/pii_eval.py --misses        # also list every miss and false positive
    .venv/bin/python bench/pii_eval.py --seed 7 --n 3000   # score a freshly generated corpus
    .venv/bin/python bench/pii_eval.py --write         # regenerate bench/data/pii/corpus.jsonl

Also: the name tagger on ner_dev.jsonl (person and location precision/recall, when
/work/shared/data/pii is present; see bench/train_ner.py), and recall on generated
examples of the harder number formats (extensions, cue-less phones, short national
forms, 12-19 digit cards after a card word, lower-case IBANs) with look-alikes.

Speed: p50 of one ``Scrubber.scrub`` call on 5 KB of typical support text (the same file
the injection benchmark uses, so the two figures add up to the per-call guard cost), on
5 KB of PII-dense corpus text, throughput in MB/s over the whole corpus, and the cost
of streaming the typical text through a ``StreamScrubber`` in 4-character deltas.
"""

from __future__ import annotations

import argparse
import random
import statistics
import string
import time
from collections.abc import Callable
from pathlib import Path

from bastion.safety.pii import Scrubber, ScrubberConfig
from bastion.safety.pii._validators import IBAN_LENGTHS, luhn_ok
from bastion.safety.pii.corpus import Report, Sample, dump, evaluate, generate, load

DATA = Path(__file__).resolve().parent / "data"
CORPUS = DATA / "pii" / "corpus.jsonl"
TYPICAL = DATA / "injection" / "typical_5kb.txt"
SEED, SIZE = 759, 1000
TARGET = 0.98
FORMAT_TARGET = 0.95
NER_TYPES = ("PERSON", "LOCATION", "ADDRESS")  # not labelled in the corpus: see the NER table


def table(report: Report) -> bool:
    ok = True
    print(f"\n{'type':<8} {'gold':>6} {'found':>6} {'pred':>6} {'precision':>10} {'recall':>8}")
    for t, s in sorted(report.by_type.items()):
        if t in NER_TYPES:
            print(
                f"{t:<8} {'-':>6} {'-':>6} {s.predicted:>6}  (names are not labelled in this corpus)"
            )
            continue
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
    patterns = Scrubber(ScrubberConfig(ner="off"))
    t_pat = p50_us(lambda: patterns.scrub(typical))
    print(
        f"    of which names (vs ner='off')    p50 {t_typ - t_pat:8.1f} µs ({t_pat:.1f} µs without)"
    )
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


def _luhn(rng: random.Random, prefix: str, length: int) -> str:
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    return next(body + d for d in string.digits if luhn_ok(body + d))


def _iban(rng: random.Random) -> str:
    country = rng.choice(["DE", "GB", "FR", "NL", "ES", "IT", "CH", "AT"])
    n = IBAN_LENGTHS[country] - 4
    letters = {"GB": 4, "NL": 4, "IT": 1}.get(country, 0)
    bban = "".join(rng.choice(string.ascii_uppercase) for _ in range(letters))
    bban += "".join(rng.choice(string.digits) for _ in range(n - letters))
    check = 98 - int("".join(str(int(c, 36)) for c in bban + country + "00")) % 97
    value = f"{country}{check:02d}{bban}".lower()
    return (
        " ".join(value[i : i + 4] for i in range(0, len(value), 4)) if rng.random() < 0.5 else value
    )


def format_checks(scrubber: Scrubber, seed: int = 1313, n: int = 200) -> bool:
    """Recall on generated examples of the harder formats (values unseen by the tests)."""
    rng = random.Random(seed)
    d = string.digits

    def digits(k: int, first: str = "23456789") -> str:
        return rng.choice(first) + "".join(rng.choice(d) for _ in range(k - 1))

    def nanp() -> str:
        return f"{digits(3)}-{digits(3)}-{digits(4, d)}"

    def nanp_dots() -> str:
        return f"{digits(3)}.{digits(3)}.{digits(4, d)}"

    gens: dict[str, Callable[[], tuple[str, str, str]]] = {
        "phone, extension": lambda: (rng.choice(["", "call "]), f"{nanp()}{rng.choice(['x', ' ext. ', ' x'])}{digits(rng.randint(2, 5), d)}", ""),
        "phone, label before": lambda: (rng.choice(["Desk: ", "Office: ", "Direct: ", "Landline "]), digits(10), ""),
        "phone, word after": lambda: ("", rng.choice([nanp_dots(), nanp()]), rng.choice([" fax", " (mobile)", " cell", " tel"])),
        "phone, (dd) ddd-ddd": lambda: ("", f"({digits(2)}) {digits(3, d)}-{digits(3, d)}", ""),
        "phone, dd-dd-dd-dd": lambda: ("", "-".join(digits(2, "123456789") for _ in range(4)), ""),
        "card, Maestro 12-19": lambda: (rng.choice(["Maestro ", "card: ", "debit card "]), _luhn(rng, rng.choice(["5018", "5020", "6304", "6759"]), rng.randint(12, 19)), ""),
        "card, JCB 1800/2131": lambda: (rng.choice(["JCB ", "", "paid with "]), _luhn(rng, rng.choice(["1800", "2131"]), 15), ""),
        "iban, lower case": lambda: ("iban ", _iban(rng), ""),
    }  # fmt: skip
    ok = True
    print(f"\nharder formats, generated (seed {seed}, {n} each): recall, target {FORMAT_TARGET}")
    for name, gen in gens.items():
        found = 0
        missed: list[str] = []
        for _ in range(n):
            before, value, after = gen()
            text = f"Hello, {before}{value}{after} thanks."
            start = len("Hello, ") + len(before)
            fs = scrubber.scrub(text).findings
            if any(f.start <= start and f.end >= start + len(value) for f in fs):
                found += 1
            elif len(missed) < 3:
                missed.append(f"{before}{value}{after}")
        ok &= found / n >= FORMAT_TARGET
        print(f"  {name:<22} {found / n:6.3f}  {'misses: ' + '; '.join(missed) if missed else ''}")
    negatives: list[Callable[[], str]] = [
        lambda: f"order {digits(10)} shipped",
        lambda: f"order id {_luhn(rng, digits(2), 12)} shipped",
        lambda: f"see TICKET-{digits(5, d)} and ORD-2024-{digits(6, d)}",
        lambda: f"released 2024-0{rng.randint(1, 9)}-1{rng.randint(0, 9)} as v{rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 99)}",
        lambda: f"iban {_iban(rng)[:-1]}{rng.choice('0123456789')} typo",
    ]  # fmt: skip
    redacted = 0
    total = 0
    for gen_neg in negatives:
        for _ in range(n):
            text = gen_neg()
            if text.endswith(" typo"):
                compact = text[5:-5].replace(" ", "").upper()
                moved = compact[4:] + compact[:4]
                if int("".join(str(int(c, 36)) for c in moved)) % 97 == 1:
                    continue  # the random last digit happened to be right
            total += 1
            if scrubber.scrub(text).found:
                redacted += 1
                print(f"  look-alike redacted: {text!r}")
    print(
        f"  look-alikes redacted (orders, Luhn-valid order ids, tickets, dates, versions, bad IBANs): {redacted} of {total}"
    )
    return ok and redacted == 0


def ner_dev() -> None:
    """The name tagger on the held-out NER corpus (bench/train_ner.py --eval)."""
    try:
        import train_ner  # bench/ is on sys.path when this file runs as a script
    except ImportError:
        return
    if not (train_ner.DATA / "ner_dev.jsonl").exists():
        print("\nname tagger: /work/shared/data/pii not present, skipped")
        return
    from bastion.safety.pii._names import load_model

    print()
    train_ner.report(load_model(), train_ner.read(train_ner.DATA / "ner_dev.jsonl"))


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
    ok &= format_checks(scrubber)
    ner_dev()
    if args.misses:
        misses(scrubber, samples)
    if not args.no_speed:
        speed(scrubber, samples)
    print(f"\ntargets (precision and recall >= {TARGET} per corpus type, harder formats >= "
          f"{FORMAT_TARGET}, no ticket or look-alike redacted): "
          f"{'PASS' if ok else 'MISS'}")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

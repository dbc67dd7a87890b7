"""Leak watcher on the leak dev set: precision and recall per kind, before and after shingles, speed.

    .venv/bin/python bench/leak_eval.py           # tables for the dev part (and train)
    .venv/bin/python bench/leak_eval.py --misses  # also list dev misses and false positives
    .venv/bin/python bench/leak_eval.py --tune    # once: pick the shingle policy on train

The set is ``bench/data/leak/{train,dev}.jsonl`` (built by ``scripts/build_leak_dev.py`` from
the prompt-extraction material in the project corpus; see that script for what is in it).
Each output is checked whole against its own system prompt, as the gateway checks an answer,
and again fed in random chunks (1-40 characters) through a stream watcher: the stream column
counts pairs whose streamed verdict differs from the whole one (it should be 0).

Two detectors: ``before`` is the watcher as it was (canary and 60-character verbatim runs,
no shingles); ``shipped`` adds the default ``ShinglePolicy``. ``--tune`` searches shingle
policies on the train part only and prints the one with the highest train recall at train
precision >= 0.98 (a margin above the 0.95 goal); the defaults in ``leak.py`` are its answer.
Speed: checks per second on the dev outputs for both detectors, measured in the same run,
interleaved, with the ratio.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.safety.prompting import LeakIndex, extract_canaries
from bastion.safety.prompting._fold import fold_text
from bastion.safety.prompting.leak import ShingleIndex, ShinglePolicy

DATA = Path(__file__).resolve().parent / "data" / "leak"


@dataclass(frozen=True, slots=True)
class Pair:
    system: str
    output: str
    label: int
    kind: str
    origin: str


def load(part: str) -> list[Pair]:
    prompts: dict[int, dict[str, Any]] = {}
    pairs: list[Pair] = []
    with (DATA / f"{part}.jsonl").open(encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if "system" in r:
                prompts[r["id"]] = r
            else:
                p = prompts[r["prompt"]]
                pairs.append(Pair(p["system"], r["output"], r["label"], r["kind"], p["origin"]))
    return pairs


def index(p: Pair, policy: ShinglePolicy | None) -> LeakIndex:
    return LeakIndex(extract_canaries(p.system), p.system, shingles=policy)


def streamed(idx: LeakIndex, text: str, rng: random.Random) -> bool:
    w = idx.watcher("flag")
    pos = 0
    while pos < len(text):
        step = rng.randint(1, 40)
        w.feed(text[pos : pos + step])
        pos += step
    return bool(w.finish().leaked)


def prf(pairs: list[Pair], flags: list[bool]) -> tuple[int, int, int, float, float]:
    tp = sum(1 for p, f in zip(pairs, flags, strict=True) if f and p.label)
    fp = sum(1 for p, f in zip(pairs, flags, strict=True) if f and not p.label)
    pos = sum(p.label for p in pairs)
    return tp, fp, pos, tp / max(1, tp + fp), tp / max(1, pos)


def report(name: str, pairs: list[Pair], misses: bool) -> dict[str, Any]:
    rng = random.Random(5)
    sides = {"before": None, "shipped": ShinglePolicy()}
    flags: dict[str, list[bool]] = {}
    scores: list[float] = []
    disagree = 0
    for side, pol in sides.items():
        out = []
        for p in pairs:
            idx = index(p, pol)
            v = idx.check(p.output, "flag")
            out.append(v.leaked)
            if pol is not None:
                scores.append(v.score)
                disagree += streamed(idx, p.output, rng) != v.leaked
        flags[side] = out
    print(f"\n{name} part: {len(pairs)} pairs ({sum(p.label for p in pairs)} leaks)")
    print(f"  {'kind':<16} {'label':>5} {'n':>4} {'before':>8} {'shipped':>8}   (share flagged)")
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    for i, p in enumerate(pairs):
        groups[(p.kind, p.label)].append(i)
    for (kind, label), ids in sorted(groups.items(), key=lambda kv: (-kv[0][1], kv[0][0])):
        cells = [sum(flags[s][i] for i in ids) / len(ids) for s in sides]
        print(f"  {kind:<16} {label:>5} {len(ids):>4} {cells[0]:>8.3f} {cells[1]:>8.3f}")
    for side in sides:
        tp, fp, pos, prec, rec = prf(pairs, flags[side])
        print(
            f"  {side:<8} precision {prec:.3f}  recall {rec:.3f}  (tp {tp}, fp {fp}, leaks {pos})"
        )
    print(f"  stream verdicts differing from whole-text verdicts: {disagree}")
    figures: dict[str, Any] = {"pairs": len(pairs), "stream_disagree": disagree}
    for side in sides:
        tp, fp, pos, prec, rec = prf(pairs, flags[side])
        figures[side] = {"tp": tp, "fp": fp, "leaks": pos, "precision": prec, "recall": rec}
    if misses:
        for i, p in enumerate(pairs):
            if flags["shipped"][i] != bool(p.label):
                tag = "MISS" if p.label else "FP"
                print(f"  {tag} {p.kind} score={scores[i]:.2f} | {p.system[:70]!r}")
                print(f"       -> {p.output[:160]!r}")
    return figures


def speed(pairs: list[Pair], rounds: int = 5) -> dict[str, float]:
    """Whole-answer checks per second, before vs shipped, interleaved rounds in one run."""
    built = [(index(p, None), index(p, ShinglePolicy()), p.output) for p in pairs]
    sides = {"before": 0, "shipped": 1}
    kb = sum(len(p.output.encode()) for p in pairs) / 1024
    t = {"before": 0.0, "shipped": 0.0}
    for _ in range(rounds):
        for side, k in sides.items():
            t0 = time.perf_counter()
            for before, shipped, text in built:
                (before, shipped)[k].check(text, "flag")
            t[side] += time.perf_counter() - t0
    print(f"\nspeed: {len(pairs)} dev answers ({kb:.0f} KB) checked {rounds} times each")
    print(f"  {'side':<8} {'ms per KB':>10} {'ratio':>7}")
    for side in t:
        print(f"  {side:<8} {t[side] * 1000 / (rounds * kb):>10.3f} {t[side] / t['before']:>7.2f}")
    return {f"{side}_ms_per_kb": t[side] * 1000 / (rounds * kb) for side in t}


def tune(pairs: list[Pair]) -> None:
    """Highest train recall at train precision >= 0.98 over a small grid of policies.

    ``min_span`` starts at 6 by design: a shared phrase of up to five words never counts,
    whatever the train set says. Ties go to the more conservative policy (longer spans and
    shingles).
    """
    best: tuple[Any, ...] | None = None
    for words, min_chars in itertools.product((3, 4, 5), (12, 16, 20)):
        base = ShinglePolicy(words=words, min_chars=min_chars)
        measured = []
        for p in pairs:
            sh = ShingleIndex(p.system, base)
            norm = fold_text(p.output)
            found = {k for k, _, _ in sh.find(norm, 0, len(norm))}
            run = bool(index(p, None).check(p.output, "flag").leaked)
            measured.append((*sh.measure(found), sh.n_words, run))
        for thr, span, abs_span in itertools.product(
            (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5), (6, 8, 10, 12), (12, 16, 20, 30, 40)
        ):
            if abs_span < span:
                continue
            pol = ShinglePolicy(words, min_chars, threshold=thr, min_span=span, abs_span=abs_span)
            flags = [run or (cov > 0 and pol.leaked(c, cov, n)) for c, cov, n, run in measured]
            _, _, _, prec, rec = prf(pairs, flags)
            key = (rec, prec, span, words, min_chars, thr, abs_span)
            if prec >= 0.98 and (best is None or key > best[:-1]):
                best = (*key, pol)
    if best is None:
        print("no policy reaches precision 0.98 on train")
        return
    rec, prec, pol = best[0], best[1], best[-1]
    print(f"train: recall {rec:.3f} at precision {prec:.3f} with {pol}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--misses", action="store_true", help="list dev misses and false positives")
    ap.add_argument("--tune", action="store_true", help="pick the shingle policy on train")
    ap.add_argument("--quick", action="store_true", help="dev part only, one speed round")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    args = ap.parse_args()
    if args.tune:
        tune(load("train"))
        return
    out: dict[str, Any] = {}
    if not args.quick:
        out["train"] = report("train", load("train"), False)
    dev = load("dev")
    out["dev"] = report("dev", dev, args.misses)
    out["speed"] = speed(dev, 1 if args.quick else 5)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

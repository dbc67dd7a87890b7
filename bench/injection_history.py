"""What scanning the whole conversation costs the injection guard, turn after turn.

An app resends the conversation every turn; the guard now scans every document and tool
result in it (so a document withheld once stays withheld), with verdicts cached per content
hash. For a conversation of N turns, each turn a builder user turn with one ~5 KB retrieved
document, then a tool round (the call and an 800-character result), this times the guard's
work on the N-th tool round (the request that used to carry the withheld document upstream),
in this process, three ways measured in the same rounds (their order rotated each round):

- ``last``      the old policy: only what follows the last assistant turn (the baseline; it
                let a withheld document through on the tool round);
- ``cached``    every untrusted text, through the guard's ``ScanCache`` (each text scanned once,
                on the turn it first appears; the earlier turns warmed the cache as a live
                conversation would);
- ``rescan``    every untrusted text, scanned afresh each turn (what the cache saves).

It prints the median over rounds per N and the ratios against ``last``.

    .venv/bin/python bench/injection_history.py [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import time
from typing import Any

import orjson

from bastion.safety.prompting import InjectionPolicy, InjectionScanner, PromptBuilder
from bastion.safety.prompting.guards import ScanCache, inspect_injection

INSTRUCTIONS = "You are the Acme order assistant. Answer questions about the customer's orders."
WORDS = [
    "parcel",
    "shipping",
    "order",
    "refund",
    "invoice",
    "carrier",
    "tracking",
    "delivery",
    "warehouse",
    "customer",
    "address",
    "payment",
    "return",
    "label",
    "weekend",
    "courier",
    "depot",
    "signature",
    "window",
    "schedule",
]


def _doc(rng: random.Random, chars: int = 5000) -> str:
    out: list[str] = []
    n = 0
    while n < chars:
        sentence = " ".join(rng.choice(WORDS) for _ in range(12)).capitalize() + ". "
        out.append(sentence)
        n += len(sentence)
    return "".join(out)


def requests(turns: int, seed: int = 7) -> list[dict[str, Any]]:
    """The OpenAI bodies an app sends over ``turns`` turns: per turn, the user's turn (a builder
    turn with one retrieved document), then the tool round (the call and its result)."""
    rng = random.Random(seed)
    builder = PromptBuilder()
    system = builder.build(INSTRUCTIONS, user_content="hi").to_openai()["messages"][0]
    messages: list[dict[str, Any]] = [system]
    out: list[dict[str, Any]] = []
    for t in range(turns):
        p = builder.build(
            INSTRUCTIONS, user_content=f"Where is order A-{t}?", docs=[("kb", _doc(rng))]
        )
        messages.append(p.to_openai()["messages"][-1])
        out.append({"model": "m", "messages": list(messages)})
        call = {
            "id": f"c{t}",
            "type": "function",
            "function": {"name": "lookup", "arguments": "{}"},
        }
        messages += [
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": f"c{t}", "content": _doc(rng, 800)},
        ]
        out.append({"model": "m", "messages": list(messages)})
        messages.append({"role": "assistant", "content": "It ships tomorrow."})
    return out


def tail(body: dict[str, Any]) -> dict[str, Any]:
    """The old policy's view: the system turn and what follows the last assistant turn."""
    msgs = body["messages"]
    last = max(i for i, m in enumerate(msgs) if m.get("role") == "assistant")
    return {**body, "messages": [msgs[0], *msgs[last + 1 :]]}


def _timed(
    body: dict[str, Any],
    policy: InjectionPolicy,
    scanner: InjectionScanner,
    cache: ScanCache | None,
) -> float:
    body = copy.deepcopy(body)
    t0 = time.perf_counter()
    inspect_injection(body, "openai", policy, scanner, "last", cache=cache)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer sizes and rounds")
    ap.add_argument("--json", metavar="FILE", help="write every sample (seconds) here")
    args = ap.parse_args()
    raw: dict[str, dict[str, list[float]]] = {}
    sizes = (1, 5, 10) if args.quick else (1, 5, 10, 20)
    rounds = 5 if args.quick else 15
    scanner = InjectionScanner()
    policy = InjectionPolicy()
    print(f"injection guard per request, {rounds} rounds, median ms (this process)")
    print(
        f"{'turns':>5} {'last':>9} {'cached':>9} {'rescan':>9} {'cached/last':>12} {'rescan/last':>12}"
    )
    for n in sizes:
        bodies = requests(n)  # the last is the n-th tool round: what is timed
        times: dict[str, list[float]] = {"last": [], "cached": [], "rescan": []}
        for r in range(rounds):
            cache = ScanCache(scanner)
            for b in bodies[:-1]:  # the conversation so far warmed the cache
                inspect_injection(copy.deepcopy(b), "openai", policy, scanner, cache=cache)
            full = bodies[-1]
            runs = [
                ("last", tail(full), None),
                ("cached", full, cache),
                ("rescan", full, None),
            ]
            for name, body, c in runs[r % 3 :] + runs[: r % 3]:  # no order effect
                times[name].append(_timed(body, policy, scanner, c))
        raw[str(n)] = times
        med = {k: statistics.median(v) * 1000 for k, v in times.items()}
        print(
            f"{n:>5} {med['last']:>9.3f} {med['cached']:>9.3f} {med['rescan']:>9.3f} "
            f"{med['cached'] / med['last']:>12.2f} {med['rescan'] / med['last']:>12.2f}"
        )
    if args.json:
        with open(args.json, "wb") as f:
            f.write(orjson.dumps(raw))


if __name__ == "__main__":
    main()

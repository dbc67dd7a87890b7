"""A seeded, labeled corpus of support chats and log lines, and the precision/recall scorer.

Every sample mixes PII of each type (in the formats people actually type: "(415)
555-2671", "+44 20 7946 0958", "4111-1111-1111-1111", grouped IBANs, keys in config
lines) with hard negatives that a greedy scrubber eats: ticket and order numbers, UUIDs,
timestamps, versions, prices, tracking numbers, 16-digit numbers failing Luhn. Gold
spans mark the PII; negative spans mark what must survive. The same seed always gives
the same corpus; ``bench/data/pii/corpus.jsonl`` is a frozen copy that CI scores.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ._corpus_values import NEGATIVES, PII, Piece, name
from ._scrubber import Scrubber

TEMPLATES = (
    "Hi, I'm {name}. You can reach me at {email} or call me at {phone}.",
    "My card {card} was charged twice for order {order}, see ticket {ticket}.",
    "Please refund to IBAN {iban}; the invoice is {order} from {date}.",
    "For the background check my SSN is {ssn} and my phone is {phone}.",
    "Login failed from {ip} at {timestamp} (request {uuid}).",
    "Here is my config, the key is {secret} and it broke after {version}.",
    "Still waiting on {ticket}. Tracking says {tracking} but nothing arrived. Total was {price}.",
    "I tried card {badcard} too but it was declined. Account {account}.",
    "[{timestamp}] user={email} ip={ip} action=login status=ok trace={uuid}",
    "[{timestamp}] ERROR payment failed card={card} amount={price} order={order}",
    "Deployed {sha} ({version}) at {time}; ping {email} if the canary fails.",
    "Call me back on {phone} after {time}, or text {phone}.",
    "Wire it to {iban} please, reference {ticket}.",
    "export {secret}\nthen run the job again (it failed at {timestamp}).",
    "Our office line is {phone} and billing is {email}. Order {order} is still open.",
    "The server at {ip} rejects my token {secret} since {date}.",
    "Can you update my SSN to {ssn}? The old one was wrong. Case {ticket}.",
    "Version {version} shipped; see {ticket} and {uuid} for details. Build time {time}.",
    "Thanks {name}, I received {tracking} today. Price {price}, invoice {order}.",
    "Please charge {card} for {price} and send the receipt to {email}.",
    "My order number is {account} and the reference {refnum}, ISBN on the book says {isbn}.",
    "SNMP walk of {oid} returned {count} rows at epoch {epoch}; host {ip}.",
    "ssh deploy@{ip} failed, key fingerprint {sha}; retry after {time} ({date}).",
    "Hi {name}, your new login is {email}; temporary {secret}. Your order {order} ships {date}.",
    "Contact {name} ({email}, {phone}) about {ticket}; payout IBAN {iban}.",
    "Kunde {name}, Tel. {phone}, IBAN {iban}, Bestellung {order} vom {date}.",
    "We have {count} users; the one at {ip} sent {secret} in a header.",
)


@dataclass(frozen=True, slots=True)
class Span:
    label: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Sample:
    text: str
    pii: tuple[Span, ...]
    negatives: tuple[Span, ...] = field(default=())

    def to_json(self) -> str:
        return json.dumps(
            {
                "text": self.text,
                "pii": [[s.label, s.start, s.end] for s in self.pii],
                "neg": [[s.label, s.start, s.end] for s in self.negatives],
            },
            ensure_ascii=False,
        )

    @staticmethod
    def from_json(line: str) -> Sample:
        obj = json.loads(line)
        return Sample(
            obj["text"],
            tuple(Span(*s) for s in obj["pii"]),
            tuple(Span(*s) for s in obj["neg"]),
        )


def _render(rng: random.Random, template: str) -> Sample:
    pieces: list[Piece] = []
    rest = template
    while "{" in rest:
        before, _, tail = rest.partition("{")
        slot, _, rest = tail.partition("}")
        pieces.append((before, None))
        if slot == "name":
            pieces.append((name(rng), None))
        elif slot in PII:
            pieces.extend(PII[slot](rng))
        else:
            pieces.append((NEGATIVES[slot](rng), "neg:" + slot))
    pieces.append((rest, None))
    text: list[str] = []
    pii: list[Span] = []
    neg: list[Span] = []
    pos = 0
    for value, label in pieces:
        if label is not None:
            (neg if label.startswith("neg:") else pii).append(
                Span(label.removeprefix("neg:"), pos, pos + len(value))
            )
        text.append(value)
        pos += len(value)
    return Sample("".join(text), tuple(pii), tuple(neg))


def generate(seed: int = 759, n: int = 2000) -> list[Sample]:
    """``n`` samples of one to three sentences each; deterministic for a given seed."""
    rng = random.Random(seed)
    samples = []
    for _ in range(n):
        parts = [_render(rng, rng.choice(TEMPLATES)) for _ in range(rng.randint(1, 3))]
        text = ""
        pii: list[Span] = []
        neg: list[Span] = []
        for p in parts:
            off = len(text)
            pii += [Span(s.label, s.start + off, s.end + off) for s in p.pii]
            neg += [Span(s.label, s.start + off, s.end + off) for s in p.negatives]
            text += p.text + " "
        samples.append(Sample(text.rstrip(), tuple(pii), tuple(neg)))
    return samples


def load(path: str | Path) -> list[Sample]:
    with Path(path).open(encoding="utf-8") as f:
        return [Sample.from_json(line) for line in f if line.strip()]


def dump(samples: Iterable[Sample], path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with Path(path).open("w", encoding="utf-8") as f:
        for s in samples:
            f.write(s.to_json() + "\n")


# -- scoring -------------------------------------------------------------------------------


@dataclass(slots=True)
class Score:
    gold: int = 0
    found: int = 0  # gold spans overlapped by a finding of the same type
    predicted: int = 0
    correct: int = 0  # findings overlapping a gold span of the same type

    @property
    def recall(self) -> float:
        return self.found / self.gold if self.gold else 1.0

    @property
    def precision(self) -> float:
        return self.correct / self.predicted if self.predicted else 1.0


@dataclass(slots=True)
class Report:
    by_type: dict[str, Score] = field(default_factory=dict)
    negatives: dict[str, tuple[int, int]] = field(default_factory=dict)  # kind -> (redacted, total)
    leaked_chars: int = 0  # gold characters no finding covers
    gold_chars: int = 0

    @property
    def tickets_redacted(self) -> int:
        return sum(self.negatives.get(k, (0, 0))[0] for k in ("ticket", "order"))


def _overlaps(a: Span, start: int, end: int) -> bool:
    return a.start < end and start < a.end


def evaluate(scrubber: Scrubber, samples: Sequence[Sample]) -> Report:
    """Precision and recall per type, hard negatives redacted, gold characters left visible."""
    report = Report()
    for sample in samples:
        findings = scrubber.scrub(sample.text).findings
        for g in sample.pii:
            score = report.by_type.setdefault(g.label, Score())
            score.gold += 1
            score.found += any(
                f.type.value == g.label and _overlaps(g, f.start, f.end) for f in findings
            )
            covered = sum(max(0, min(g.end, f.end) - max(g.start, f.start)) for f in findings)
            report.gold_chars += g.end - g.start
            report.leaked_chars += max(0, (g.end - g.start) - covered)
        for f in findings:
            score = report.by_type.setdefault(f.type.value, Score())
            score.predicted += 1
            score.correct += any(
                g.label == f.type.value and _overlaps(g, f.start, f.end) for g in sample.pii
            )
        for neg in sample.negatives:
            hit, total = report.negatives.get(neg.label, (0, 0))
            report.negatives[neg.label] = (
                hit + any(_overlaps(neg, f.start, f.end) for f in findings),
                total + 1,
            )
    return report

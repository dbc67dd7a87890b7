"""Model quality in the simulator: answers that differ by model and by prompt, reproducibly.

Switched on per request by an eval directive in the last user message
(``[[sim:facts=a|b]]``, with optional ``[[sim:docs=d1,d2]]`` and ``[[sim:seed=S]]``),
so no other simulated answer changes. The answer states the expected facts, each kept
with the model's ``fact_recall``; it follows the instructions the system prompt gives
(cite documents, a word limit, bullet points), each with the model's
``instruction_follow``, and does none of them when the system prompt does not ask.
Every draw is a hash of (seed, model, request, item), so a run is reproducible and a
different seed is an independent draw, as a new sample from a real model would be.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "DEFAULT_PROFILE",
    "EvalDirective",
    "Instructions",
    "QualityProfile",
    "compose_quality_answer",
    "profile_for",
    "read_directive",
    "read_instructions",
]

_FACTS_RE = re.compile(r"\[\[sim:facts=(.*?)\]\]", re.DOTALL)
_DOCS_RE = re.compile(r"\[\[sim:docs=(.*?)\]\]")
_SEED_RE = re.compile(r"\[\[sim:seed=([^\]]*)\]\]")
_DIRECTIVE_RE = re.compile(r"\[\[sim:[^\]]*\]\]")
_CITE_RE = re.compile(r"\bcit(?:e|es|ing|ation|ations)\b", re.I)
_WORDS_RE = re.compile(
    r"\b(?:at most|no more than|under|within|fewer than|maximum of|max(?:imum)?)\s+(\d{1,4})\s+words\b",
    re.I,
)
_BULLETS_RE = re.compile(r"\bbullet(?:s| points?| list)?\b", re.I)
_FILLER = (
    "Let me know if there is anything else I can help with.",
    "This is a common question and the answer depends on a few details.",
    "I hope this overview is useful for your situation.",
    "Policies like this are reviewed from time to time.",
)


@dataclass(frozen=True, slots=True)
class QualityProfile:
    """How reliably a simulated model states a fact and follows one instruction (0..1)."""

    fact_recall: float
    instruction_follow: float

    def __post_init__(self) -> None:
        for name in ("fact_recall", "instruction_follow"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {v}")


STRONG = QualityProfile(fact_recall=0.98, instruction_follow=0.98)
DEFAULT_PROFILE = QualityProfile(fact_recall=0.9, instruction_follow=0.9)
WEAK = QualityProfile(fact_recall=0.7, instruction_follow=0.65)
_WEAK_MARKS = ("haiku", "mini", "nano", "small", "flash", "lite", "tiny")
_STRONG_MARKS = ("opus", "sonnet", "large", "gpt-4.1", "gpt-4o", "gpt-5", "pro")


def profile_for(
    model: str, overrides: Mapping[str, QualityProfile] | None = None
) -> QualityProfile:
    """The configured profile, else one guessed from the name: small tiers are weaker."""
    if overrides and model in overrides:
        return overrides[model]
    low = model.lower()
    if any(m in low for m in _WEAK_MARKS):
        return WEAK
    if any(m in low for m in _STRONG_MARKS):
        return STRONG
    return DEFAULT_PROFILE


@dataclass(frozen=True, slots=True)
class EvalDirective:
    """What an eval case tells the simulator: the facts a good answer states, citable docs, a seed."""

    facts: tuple[str, ...]
    docs: tuple[str, ...] = ()
    seed: str = "0"


def read_directive(text: str) -> EvalDirective | None:
    """The eval directive in ``text``, or None (then the simulator answers as it always has)."""
    m = _FACTS_RE.search(text)
    if m is None:
        return None
    facts = tuple(f.strip() for f in m.group(1).split("|") if f.strip())
    d = _DOCS_RE.search(text)
    docs = tuple(x.strip() for x in d.group(1).split(",") if x.strip()) if d else ()
    s = _SEED_RE.search(text)
    return EvalDirective(facts, docs, s.group(1).strip() if s else "0")


@dataclass(frozen=True, slots=True)
class Instructions:
    """The instructions a system prompt gives that the simulator knows how to follow."""

    cite: bool = False
    max_words: int | None = None
    bullets: bool = False


def read_instructions(system: str) -> Instructions:
    words = _WORDS_RE.search(system)
    return Instructions(
        cite=_CITE_RE.search(system) is not None,
        max_words=int(words.group(1)) if words else None,
        bullets=_BULLETS_RE.search(system) is not None,
    )


def _draw(*parts: str) -> float:
    digest = hashlib.blake2b("\0".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def _sentence(text: str) -> str:
    t = text.strip()
    if not t:
        return t
    t = t[0].upper() + t[1:]
    return t if t[-1] in ".!?" else t + "."


def compose_quality_answer(
    directive: EvalDirective,
    instructions: Instructions,
    profile: QualityProfile,
    *,
    model: str,
    request_key: str,
) -> str:
    """The answer text: kept facts, followed instructions, filler where no length limit holds it back."""
    base = (directive.seed, model, _DIRECTIVE_RE.sub(" ", request_key))

    def follows(item: str) -> bool:
        return _draw(*base, "instruction", item) < profile.instruction_follow

    kept = [
        f
        for i, f in enumerate(directive.facts)
        if _draw(*base, "fact", str(i)) < profile.fact_recall
    ]
    cite = instructions.cite and follows("cite")
    bullets = instructions.bullets and follows("bullets")
    limit = instructions.max_words if instructions.max_words and follows("length") else None
    docs = directive.docs or ("1",)
    sentences = []
    for i, fact in enumerate(kept):
        s = _sentence(fact)
        if cite:
            s = f"{s[:-1]} [{docs[i % len(docs)]}]{s[-1]}"
        sentences.append(s)
    if limit is None:
        pick = int(_draw(*base, "filler") * len(_FILLER))
        sentences.append(_FILLER[pick])
        if not kept:
            sentences.insert(0, "I am not sure about the details here.")
    if limit is not None:  # keep whole words up to the limit, bullet marks not counted
        kept_words, trimmed = 0, []
        for s in sentences:
            words = s.split()[: max(0, limit - kept_words)]
            kept_words += len(words)
            if words:
                trimmed.append(" ".join(words))
        sentences = trimmed
    text = "\n".join(f"- {s}" for s in sentences) if bullets else " ".join(sentences)
    return text or "I am not sure."

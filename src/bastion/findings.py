"""``Finding``: what one safety detector concluded about one call, typed and kept on its record.

A detector (injection, scope, leak, PII, JSON schema, SQL) that sees something on a call appends
a ``Finding`` to ``call.findings``; the record guard copies them onto the call record, the store
keeps them in their own column, and the review queue, quality sampler, traces and dashboard read
them. Each carries the detector's score, its reasons and its version, so a false positive can be
traced to the rule and the model revision that produced it and tuned per feature.

Reasons are rule ids (``override:ignore_previous``, ``denied:malware``, ``type:/properties/age``),
never the text that matched: a record must not hold the PII or the secret a detector found.
``rule_id`` turns a human-readable message (a SQL validator's, say) into such an id by dropping
quoted values, details after a colon, parentheticals and digits; a ``Finding`` applies it to any
reason that is not already a plain token, so free text cannot reach a record through it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

__all__ = [
    "ACTIONS",
    "PROBLEM_ACTIONS",
    "WHERES",
    "Action",
    "Finding",
    "Where",
    "findings_of",
    "rule_id",
]

Action = Literal["flagged", "blocked", "redacted", "withheld", "repaired", "passed"]
Where = Literal["request", "response", "stream", "tool"]

ACTIONS: Final[tuple[str, ...]] = get_args(Action)
WHERES: Final[tuple[str, ...]] = get_args(Where)
# what still needs a human's eye: a repaired or passing answer does not
PROBLEM_ACTIONS: Final = frozenset({"flagged", "blocked", "redacted", "withheld"})

_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1  # what every store's JSON takes
REASON_MAX: Final = 96
REASONS_MAX: Final = 16
_TOKEN: Final = re.compile(r"[A-Za-z0-9_.:=+\-/\[\]$]{1,96}")
_QUOTED: Final = re.compile(r"""(?<![A-Za-z0-9])(['"`]).*?\1(?![A-Za-z0-9])""", re.S)
_PAREN: Final = re.compile(r"\([^()]*\)")
_WORDS: Final = re.compile(r"[a-z]+")


def rule_id(message: str) -> str:
    """A rule id for a human-readable reason: its words, without the values it quotes.

    ``"function 'pg_sleep' is not allowed"`` becomes ``function_is_not_allowed``; ``"cannot
    parse the SQL: <parser detail>"`` becomes ``cannot_parse_the_sql``.
    """
    text = _QUOTED.sub(" ", message)
    text = text.split(": ", 1)[0]
    text = _PAREN.sub(" ", text)
    words = _WORDS.findall(text.lower())
    out = "_".join(words)[:REASON_MAX].strip("_")
    return out or "other"


def _reason(r: object) -> str:
    """A reason as a rule id; a reason object with a ``code`` (a SQL refusal) gives its code."""
    code = getattr(r, "code", None)
    text = code if isinstance(code, str) else str(r)
    return text if _TOKEN.fullmatch(text) else rule_id(text)


@dataclass(frozen=True, slots=True)
class Finding:
    """One detector's conclusion about one call (``counts`` are per type, e.g. PII ``EMAIL: 2``).

    ``kind`` is the category readers key on (``injection``, ``pii``, ``leak``, ``scope``,
    ``output_invalid``, ``sql_rejected``); ``subject`` says what in ``where`` was looked at
    (``messages[2]/doc:refunds``, ``tool:run_sql``), never its content.
    """

    detector: str
    kind: str
    action: Action
    where: Where
    version: str
    score: float | None = None
    reasons: tuple[str, ...] = ()
    counts: tuple[tuple[str, int], ...] = ()
    subject: str | None = None

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"finding action must be one of {ACTIONS}, not {self.action!r}")
        if self.where not in WHERES:
            raise ValueError(f"finding where must be one of {WHERES}, not {self.where!r}")
        reasons = tuple(dict.fromkeys(_reason(r) for r in self.reasons))[:REASONS_MAX]
        if reasons != self.reasons:
            object.__setattr__(self, "reasons", reasons)
        if self.score is not None and not (
            isinstance(self.score, float) and math.isfinite(self.score)
        ):
            object.__setattr__(self, "score", _score(self.score))
        if self.counts:
            counts = _counts(self.counts)
            if counts != self.counts:
                object.__setattr__(self, "counts", counts)

    @property
    def problem(self) -> bool:
        """Whether this finding still needs attention (not a pass, not a successful repair)."""
        return self.action in PROBLEM_ACTIONS

    def as_dict(self) -> dict[str, Any]:
        """The JSON form stored on the record (``counts`` as an object)."""
        return {
            "detector": self.detector,
            "kind": self.kind,
            "action": self.action,
            "where": self.where,
            "version": self.version,
            "score": self.score,
            "reasons": list(self.reasons),
            "counts": dict(self.counts),
            "subject": self.subject,
        }

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> Finding:
        """Read a stored finding back; a value of an unexpected type is coerced, not fatal."""
        action = str(obj.get("action", "flagged"))
        where = str(obj.get("where", "request"))
        reasons = obj.get("reasons") or ()
        subject = obj.get("subject")
        return cls(
            detector=str(obj.get("detector", "")),
            kind=str(obj.get("kind", "")),
            action=action if action in ACTIONS else "flagged",  # type: ignore[arg-type]
            where=where if where in WHERES else "request",  # type: ignore[arg-type]
            version=str(obj.get("version", "")),
            score=_score(obj.get("score")),
            reasons=tuple(str(r) for r in reasons) if isinstance(reasons, list | tuple) else (),
            counts=_counts(obj.get("counts") or ()),
            subject=None if subject is None else str(subject),
        )


def _score(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return f if math.isfinite(f) else None


def _counts(value: Any) -> tuple[tuple[str, int], ...]:
    """Counts from a mapping or from pairs (a record decoded from a journal line has lists)."""
    items: Iterable[Any] = value.items() if isinstance(value, Mapping) else value
    out: list[tuple[str, int]] = []
    try:
        for pair in items:
            k, v = pair
            out.append((str(k), max(_INT_MIN, min(_INT_MAX, int(v)))))
    except (TypeError, ValueError, OverflowError):
        return tuple(out)
    return tuple(out)


def findings_of(value: Iterable[Any]) -> tuple[Finding, ...]:
    """Findings from what a record holds: ``Finding`` objects, or their dicts after a round trip."""
    out: list[Finding] = []
    for f in value:
        if isinstance(f, Finding):
            out.append(f)
        elif isinstance(f, Mapping):
            out.append(Finding.from_dict(f))
    return tuple(out)

"""The scrubber's value types: entity types, findings, results and the config it is built from."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from ._ner import NerDetector

# redact: every finding becomes a placeholder; flag: counted, text left; sensitive: only the
# types nobody should receive from a model in the clear (SENSITIVE) are replaced, the rest flagged
Mode = Literal["redact", "flag", "sensitive"]
NerChoice = Literal["off", "builtin", "auto", "spacy", "presidio"]


class PiiType(enum.StrEnum):
    """What a finding is; the value is also the placeholder's prefix (``[EMAIL_1]``)."""

    EMAIL = "EMAIL"
    PHONE = "PHONE"
    CARD = "CARD"
    IBAN = "IBAN"
    SSN = "SSN"
    IP = "IP"
    SECRET = "SECRET"
    PERSON = "PERSON"
    LOCATION = "LOCATION"
    ADDRESS = "ADDRESS"


# what ``sensitive`` replaces: payment, bank and government ids, secrets, and contact details
# (an answer that repeats them is how a model leaks another customer's data); names, places,
# addresses and IPs are only flagged, since ordinary answers are full of them
SENSITIVE: frozenset[PiiType] = frozenset(
    {
        PiiType.EMAIL,
        PiiType.PHONE,
        PiiType.CARD,
        PiiType.IBAN,
        PiiType.SSN,
        PiiType.SECRET,
    }
)


PATTERN_TYPES: frozenset[PiiType] = frozenset(
    {
        PiiType.EMAIL,
        PiiType.PHONE,
        PiiType.CARD,
        PiiType.IBAN,
        PiiType.SSN,
        PiiType.IP,
        PiiType.SECRET,
    }
)
NER_TYPES: frozenset[PiiType] = frozenset({PiiType.PERSON, PiiType.LOCATION, PiiType.ADDRESS})


@dataclass(frozen=True, slots=True)
class Finding:
    """Where something sensitive was, never what it was: type, span and replacement only.

    ``source`` names the rule that fired (``"email"``, ``"github_token"``, ``"ner"``...);
    ``start``/``end`` index the text that was scrubbed (for a stream: everything fed so far).
    """

    type: PiiType
    start: int
    end: int
    placeholder: str
    source: str


@dataclass(frozen=True, slots=True)
class ScrubResult:
    """The safe text, the findings (no raw values) and how many of each type were found."""

    text: str
    findings: list[Finding]
    counts: dict[str, int]

    @property
    def found(self) -> bool:
        return bool(self.findings)


# Never redacted: a finding wholly inside one of these spans is dropped. Each pattern is
# tight on purpose (bounded lengths; no trailing "-digits", so "PHONE-555-867-5309" is not
# excused) and led by a literal or a character class with its boundary check *after* the
# first character, which makes ``re`` skip non-candidates fast (4x faster than leading
# lookbehinds). Decision on dotted quads: "1.2.3.4" is an IP address unless it reads as
# a version: "v1.2.3.4", or after a version word ("version 1.2.3.4", "build: 10.0.1.7",
# "firmware 2.1.0.3"). Three-part "1.2.3" is never an IP in the first place.
DEFAULT_ALLOW_PATTERNS: tuple[str, ...] = (
    # ticket keys: TICKET-12345, JIRA-style PROJ-123
    r"[A-Z](?<![\w@.+/-].)[A-Z0-9]{1,9}-[0-9]{1,10}(?![\w@]|[-.][0-9])",
    # "#12345" ticket / PR / order references (up to 8 digits: "#" + a card is not excused)
    r"#(?<![\w&]#)[0-9]{1,8}(?![\w@]|[-.][0-9])",
    # ServiceNow-style records: INC0012345, RITM0001234, CHG0034567
    r"(?:INC|REQ|RITM|CHG|PRB|TASK|SCTASK|CS|KB)[0-9]{7,10}(?![\w@])",
    # order / invoice ids with a year: ORD-2024-000123, INV-2023-0042
    r"[A-Z](?<![\w@.+/-].)[A-Z]{1,5}-(?:19|20)[0-9]{2}-[0-9]{3,10}(?![\w@]|[-.][0-9])",
    # UUIDs
    r"[0-9A-Fa-f](?<![\w-].)[0-9A-Fa-f]{7}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}"
    r"-[0-9A-Fa-f]{12}(?![\w-])",
    # ISO 8601 dates and timestamps: 2024-06-01, 2024-06-01 12:30:45, 2024-06-01T12:30:45.123Z
    r"[12](?<![\w.-].)[09][0-9]{2}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
    r"(?:[T ](?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:[.,][0-9]{1,9})?)?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):?[0-5][0-9])?)?(?![\w-]|\.[0-9])",
    # dotted day-first dates: 01.06.2024
    r"[0-9](?<![\w.].)[0-9]?\.[0-9]{1,2}\.(?:19|20)[0-9]{2}(?![\w]|\.[0-9])",
    # versions: v1.2.3, v1.2.3.4-rc1
    r"v(?<![\w.]v)[0-9]{1,4}(?:\.[0-9]{1,6}){1,3}(?:[-+][0-9A-Za-z.]{1,20})?(?![\w]|\.[0-9])",
    # versions after a version word: "version 1.2.3.4", "build: 10.0.19045.3803", "fw 2.1.0.3"
    r"[VvRrBbFfUu](?<![\w].)(?i:ersion|er|elease|uild|irmware|w|ev|evision|pdate|pgrade)\b"
    r"\.?[ \t]?[:#=]?[ \t]?v?[0-9]{1,5}(?:\.[0-9]{1,6}){1,3}(?![\w]|\.[0-9])",
)


@dataclass(frozen=True, slots=True)
class ScrubberConfig:
    """Everything a ``Scrubber`` is built from; decided once at start-up, never per call.

    ``allow_patterns`` replaces the defaults, ``extra_allow_patterns`` adds to them.
    ``ner="builtin"`` (the default) finds person names and locations with the shipped
    tagger; ``"auto"`` prefers an optional backend (Presidio, then spaCy) when one
    imports; ``"off"`` leaves names alone; ``ner_detector`` plugs in your own.
    ``ignore_local_ips`` leaves loopback and unspecified addresses (127.0.0.1, ::1, 0.0.0.0)
    alone: they identify nobody. ``stream_max_token`` bounds how much of one unbroken
    token a ``StreamScrubber`` holds back before it must let it go.
    """

    entities: frozenset[PiiType] = PATTERN_TYPES | NER_TYPES
    mode: Mode = "redact"
    phone_regions: tuple[str, ...] = ("US", "GB", "DE", "FR", "IN", "BR")
    allow_patterns: tuple[str, ...] = DEFAULT_ALLOW_PATTERNS
    extra_allow_patterns: tuple[str, ...] = ()
    ner: NerChoice = "builtin"
    ner_detector: NerDetector | None = field(default=None, compare=False)
    ignore_local_ips: bool = True
    stream_max_token: int = 4096

    def __post_init__(self) -> None:
        if self.mode not in ("redact", "flag", "sensitive"):
            raise ValueError(
                f"pii.mode: expected 'redact', 'flag' or 'sensitive', got {self.mode!r}"
            )
        if self.ner not in ("off", "builtin", "auto", "spacy", "presidio"):
            raise ValueError(f"pii.ner: expected off|builtin|auto|spacy|presidio, got {self.ner!r}")
        if self.stream_max_token < 256:
            raise ValueError("pii.stream_max_token: must be at least 256")
        object.__setattr__(self, "entities", frozenset(PiiType(e) for e in self.entities))

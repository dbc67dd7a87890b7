"""Per-feature scope: requests plainly outside what a feature is for are refused before any model call.

The default pack is deliberately modest — five topics whose *requests for capability*
no support or product feature should serve: writing malware, writing exploits or
breaking into systems, stealing credentials, making weapons, and methods of self-harm.
Each pattern needs intent plus object ("write ... keylogger", "how do I ... make ...
pipe bomb"), never a keyword alone, so "run a virus scan", "reset my password",
"this update killed my battery" and "what is ransomware?" stay in scope. Features add
their own denied patterns, and may set an allow-list of topics they serve.

Matching runs on a normalised copy of the text: invisible characters stripped,
compatibility forms folded (NFKC), lower-cased, whitespace collapsed, and a second
pass with common leetspeak folded (``m4lw4re``).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field

# the scope rules' revision, carried by every scope finding on a call record
VERSION = "scope-2026.12.04"

_INVISIBLE = re.compile(
    "[\u00ad\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff\U000e0000-\U000e007f]"
)
_WS = re.compile(r"\s+")
_LEET = str.maketrans(
    {"4": "a", "@": "a", "3": "e", "1": "i", "!": "i", "0": "o", "5": "s", "$": "s", "7": "t"}
)
_LEETY = re.compile(r"[a-z][4@31!05$7]|[4@31!05$7][a-z]")

SELF_HARM_MESSAGE = (
    "I can't help with that. If you are thinking about harming yourself, you don't have to face it "
    "alone: please contact local emergency services or a crisis line (in the US, call or text 988)."
)
DEFAULT_MESSAGE = "This request is outside what this assistant can help with."
OFF_TOPIC_MESSAGE = "This assistant can only help with the topics it was set up for."

_ASK = (
    r"(?:how\s+(?:do|can|could|would|should)\s+(?:i|we|you|one)|how\s+to|help\s+me|teach\s+me|"
    r"show\s+me\s+how\s+to|tell\s+me\s+how\s+to|steps\s+to|guide\s+to|instructions\s+(?:for|to|on)|"
    r"(?:best|easiest|quickest|fastest|simplest|painless|cheapest)\s+way\s+to|ways?\s+to|"
    r"methods?\s+(?:to|of|for)|i\s+(?:want|need|would\s+like)\s+to|can\s+you|could\s+you|please)"
)
_MAKE = r"(?:write|create|build|code|develop|make|generate|program|craft|produce|design|give\s+me)"
_GAP = r"(?:\s+[\w'-]+){0,4}?\s+"


@dataclass(frozen=True, slots=True)
class Topic:
    """A named topic: regexes over normalised lower-case text, and what to tell the user."""

    name: str
    patterns: tuple[str, ...]
    message: str | None = None
    compiled: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.patterns:
            raise ValueError(f"topic {self.name!r} has no patterns")
        object.__setattr__(
            self, "compiled", re.compile("|".join(f"(?:{p})" for p in self.patterns))
        )

    def search(self, text: str) -> bool:
        return self.compiled.search(text) is not None


DEFAULT_DENIED: tuple[Topic, ...] = (
    Topic(
        "malware",
        (
            rf"\b{_MAKE}\b{_GAP}(?:malware|ransomware|key\s?logger|trojan|rootkit|botnet|"
            r"(?:computer\s+)?virus|worm|spyware|backdoor|infostealer|info-stealer|cryptominer|"
            r"crypto\s+miner|credential\s+stealer|dropper|remote\s+access\s+trojan)s?\b"
            r"(?!\s*(?:scan|scanner|protection|removal|check|definitions?|alert|warning|report|detection))",
            r"\b(?:malware|ransomware|virus|keylogger|trojan|worm|payload)\s+(?:that|which|to)\s+"
            r"(?:steals?|encrypts?|spreads?|evades?|bypass(?:es)?|infects?|logs?\s+keystrokes|exfiltrates?)\b",
            rf"\b{_ASK}{_GAP}(?:evade|bypass|get\s+past|disable)\s+(?:the\s+)?(?:antivirus|anti-virus|av|edr|"
            r"windows\s+defender|defender)\b",
            r"\bmake\s+(?:it|my\s+(?:code|payload|script|program|exe))\s+(?:fully\s+)?(?:undetectable|fud)\b",
        ),
    ),
    Topic(
        "exploits",
        (
            rf"\b{_MAKE}\b{_GAP}(?:(?:working|functional|weaponi[sz]ed)\s+)?(?:exploit|0-?day|zero[\s-]day|"
            r"shellcode)s?\b(?!\s*(?:mitigation|protection|patch))",
            rf"\b{_ASK}{_GAP}(?:hack|break)\s+into\s+(?:someone|somebody|my\s+(?:ex|neighbou?r|boss|"
            r"partner|wife|husband|girlfriend|boyfriend)|(?:a|an|their|his|her|the)\s+(?:\w+\s+)?"
            r"(?:account|email|phone|computer|server|network|wifi|website|site|database|instagram|"
            r"facebook|snapchat|whatsapp))",
            rf"\b{_ASK}{_GAP}(?:ddos|dos|take\s+down)\s+(?:a|an|the|their|someone'?s|my\s+competitor'?s)\s+"
            r"(?:\w+\s+)?(?:site|website|server|service|network)\b",
            r"\bsql\s+injection\s+(?:payload|attack)\s+(?:against|on|for|to\s+(?:dump|steal))\b",
        ),
    ),
    Topic(
        "credential_theft",
        (
            rf"\b{_ASK}{_GAP}(?:steal|harvest|grab|dump|sniff|intercept|phish)\b(?:\s+[\w'-]+){{0,3}}?\s+"
            r"(?:passwords?|credentials|log-?ins?|cookies|session\s+tokens?|credit\s+cards?|card\s+numbers|"
            r"bank\s+(?:details|logins?)|2fa\s+codes?|otp\s+codes?|api\s+keys)\b",
            rf"\b{_MAKE}\b{_GAP}phishing\s+(?:page|site|website|e-?mail|kit|campaign|link|message)s?\b",
            rf"\b{_ASK}{_GAP}(?:crack|guess|bypass|get\s+around)\s+(?:someone'?s|somebody'?s|their|his|her|"
            r"my\s+(?:ex|neighbou?r|boss|partner|wife|husband)'?s?)(?:\s+[\w'-]+){0,2}?\s+"
            r"(?:password|wifi|account|2fa|two-factor|phone|pin)\b",
        ),
    ),
    Topic(
        "weapons",
        (
            rf"\b{_ASK}{_GAP}(?:make|build|assemble|construct|manufacture|3d[\s-]?print|synthesi[sz]e|"
            r"produce|cook|mix)\s+(?:[\w'-]+\s+){0,3}?(?:(?<!bath\s)(?<!photo\s)(?<!seed\s)(?<!glitter\s)"
            r"bombs?|pipe\s+bombs?|explosives?|ieds?|grenades?|molotovs?|napalm|thermite|ghost\s+guns?|"
            r"untraceable\s+(?:guns?|firearms?)|zip\s+guns?|firearms?|silencers?|suppressors?|"
            r"auto\s+sears?|nerve\s+agents?|sarin|vx\s+(?:gas|nerve)|ricin|anthrax|chemical\s+weapons?|"
            r"bio(?:logical)?[\s-]?weapons?|dirty\s+bombs?|mustard\s+gas|chlorine\s+gas)\b",
            r"\b(?:make|build|assemble)\s+(?:a|an|my\s+own)\s+(?:pipe\s+bomb|ied|molotov(?:\s+cocktail)?|"
            r"explosive\s+device|ghost\s+gun)\b",
        ),
    ),
    Topic(
        "self_harm",
        (
            rf"\b{_ASK}(?:\s+[\w'-]+){{0,2}}?\s+(?:kill\s+myself|end\s+my\s+(?:own\s+)?life|commit\s+suicide|"
            r"take\s+my\s+(?:own\s+)?life|hurt\s+myself|harm\s+myself|cut\s+myself|self[\s-]?harm|"
            r"overdose|hang\s+myself|starve\s+myself)\b",
            r"\bhow\s+many\s+(?:[\w'-]+\s+){0,2}?(?:pills|tablets|mg|milligrams)\s+(?:[\w'-]+\s+){0,4}?"
            r"(?:to|would|will|does\s+it\s+take\s+to)\s+(?:kill|die|overdose|be\s+(?:a\s+)?lethal)\b",
            r"\blethal\s+dose\s+of\b(?:\s+[\w'-]+){0,3}?\s+(?:to\s+(?:kill|die)|for\s+(?:me|myself|a\s+person))",
        ),
        message=SELF_HARM_MESSAGE,
    ),
)


def denied_pack(*names: str) -> tuple[Topic, ...]:
    """A subset of the default pack by topic name (all five when no names are given)."""
    if not names:
        return DEFAULT_DENIED
    known = {t.name: t for t in DEFAULT_DENIED}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown scope topics {unknown}; the default pack has {sorted(known)}")
    return tuple(known[n] for n in names)


@dataclass(frozen=True, slots=True)
class ScopeVerdict:
    """Whether a request is in scope; when not, which rule said so and what the user may be told."""

    allowed: bool
    reason: str | None = None
    topic: str | None = None
    message: str | None = None


ALLOWED = ScopeVerdict(True)


def normalize(text: str) -> str:
    """The form patterns are written against: no invisible characters, NFKC, lower case, one space."""
    if not text.isascii():
        text = unicodedata.normalize("NFKC", _INVISIBLE.sub("", text))
    return _WS.sub(" ", text.lower()).strip()


class ScopeGuard:
    """Decides whether one request is inside a feature's scope; built once per feature."""

    __slots__ = ("allow_short_words", "allowed", "denied", "message")

    def __init__(
        self,
        denied: Iterable[Topic] = DEFAULT_DENIED,
        allowed: Iterable[Topic] | None = None,
        *,
        deny_patterns: Iterable[str] = (),
        message: str = DEFAULT_MESSAGE,
        allow_short_words: int = 4,
    ) -> None:
        topics = list(denied)
        extra = tuple(deny_patterns)
        if extra:
            topics.append(Topic("custom", extra))
        self.denied: tuple[Topic, ...] = tuple(topics)
        self.allowed: tuple[Topic, ...] | None = tuple(allowed) if allowed is not None else None
        self.message = message
        self.allow_short_words = allow_short_words

    def check(self, text: str) -> ScopeVerdict:
        """Refuse denied topics; with an allow-list, also refuse what matches none of its topics."""
        norm = normalize(text)
        variants = [norm]
        if _LEETY.search(norm):
            variants.append(norm.translate(_LEET))
        for topic in self.denied:
            if any(topic.search(v) for v in variants):
                return ScopeVerdict(
                    False, f"denied:{topic.name}", topic.name, topic.message or self.message
                )
        if self.allowed is None:
            return ALLOWED
        if len(norm.split()) <= self.allow_short_words:
            return ALLOWED  # greetings and thanks are not off-topic
        if any(t.search(v) for t in self.allowed for v in variants):
            return ALLOWED
        return ScopeVerdict(False, "off_topic", None, OFF_TOPIC_MESSAGE)

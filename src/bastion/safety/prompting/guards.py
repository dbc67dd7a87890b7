"""The gateway guards of this package: injection scan, scope check, system-prompt leak watch, and
which prompt versions a caller may name.

Each follows ``bastion.pipeline``'s protocol and takes per-feature policies (with a
``"default"`` fallback) built once at start-up. The work is done by plain functions
(``inspect_injection``) that tests and library users call directly; the guards only
map a ``Call`` onto them. Leak *blocking and redaction* happen in the stream relay
through ``LeakGuard.watcher``; ``LeakGuard.after`` flags leaks on every call even
where the relay is not wired.

Prompt versions: a caller selects a template by label (a version someone released); a version
number or ``latest`` may be an unreleased draft, so only keys with the ``prompt_drafts`` role
may name one. A ``X-Bastion-Prompt-Version`` claim is recorded only as the registry version it
resolves to; anything else is dropped and flagged, so a record's version cannot be spoofed.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ...call import Call
from ...dialects import Dialect, dialect_for
from ...errors import BastionError, InvalidRequest, PermissionDenied
from ...findings import Finding as CallFinding
from . import canary, scope
from ._messages import last_user_text, replace
from .canary import (
    DEFAULT_SHINGLES,
    LeakAction,
    LeakIndex,
    LeakVerdict,
    LeakWatcher,
    extract_canaries,
)
from .injection import InjectionPolicy, InjectionScanner, ScanResult, Source
from .leak import ShinglePolicy
from .parse import WITHHELD, parse_user_turn, readable, spotlight_of, withhold_docs
from .scope import ScopeGuard
from .templates import Template, is_label, is_template_name

DRAFTS_ROLE = "prompt_drafts"
UNRESOLVED_FLAG = "prompt_version_unresolved"
_REF_MAX = 100
_DIGITS_MAX = 9  # a version number the store can take (no overflow in a lookup)


@dataclass(frozen=True, slots=True)
class Finding:
    """One flagged text: where it was, what it was, and what the policy did about it."""

    where: str
    source: str
    score: float
    reasons: tuple[str, ...]
    action: str
    doc_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "where": self.where,
            "source": self.source,
            "score": self.score,
            "reasons": list(self.reasons),
            "action": self.action,
        }
        if self.doc_id is not None:
            d["doc_id"] = self.doc_id
        return d


@dataclass(slots=True)
class InjectionReport:
    findings: list[Finding] = field(default_factory=list)
    refused: Finding | None = None
    rewritten: bool = False


def inspect_injection(
    body: dict[str, Any],
    fmt: str | Dialect,
    policy: InjectionPolicy,
    scanner: InjectionScanner,
    scope: Literal["last", "all"] = "last",
    *,
    cache: ScanCache | None = None,
) -> InjectionReport:
    """Scan a request's untrusted texts; withhold flagged documents in ``body`` when told to drop.

    Documents and tool results are scanned wherever they sit: an app resends the whole
    conversation each turn, so a document withheld once is found and withheld again (with a
    ``cache``, a text seen before is a lookup, and an earlier turn found clean is not even
    parsed again). A user's own words are judged in the turns after the last assistant turn
    (``scope="last"``; earlier ones were judged when they were last), or everywhere (``all``).
    """
    report = InjectionReport()
    scan = cache.scan if cache is not None else scanner.scan
    dialect = dialect_for(fmt)
    mode, marker = spotlight_of(dialect.system_text(body))
    for slot in list(dialect.untrusted_texts(body, "all")):
        words = scope == "all" or not slot.earlier  # judge the user's own words here?
        if slot.source == "user" and not words and '<doc id="' not in slot.text:
            continue  # an earlier user turn without documents: nothing to scan
        seen = None  # an earlier turn's documents: known clean under this policy and spotlight?
        if cache is not None and slot.source == "user" and not words:
            seen = cache.turn_key(slot.text, f"{policy.threshold}|{mode}|{marker}")
            if cache.clean_turn(seen):
                continue
        found = len(report.findings)
        turn = parse_user_turn(slot.text) if slot.source == "user" else None
        units: list[tuple[str, str, int | None, str | None]] = []
        if turn is None:
            if slot.source != "user" or words:
                units.append((slot.source, slot.text, None, None))
        else:
            for i, d in enumerate(turn.docs):
                units.append(("doc", readable(d.body, mode, marker), i, d.id))
            if turn.user is not None and words:
                units.append(("user", readable(turn.user, mode, marker), None, None))
        drop: set[int] = set()
        for source, text, index, doc_id in units:
            res = scan(text, "user" if source == "user" else "doc")
            if res.score < policy.threshold:
                continue
            action = policy.user_action if source == "user" else policy.doc_action
            f = Finding(slot.where, source, res.score, tuple(res.reasons), action, doc_id)
            report.findings.append(f)
            if action == "block" and report.refused is None:
                report.refused = f
            elif action == "drop":
                if index is not None:
                    drop.add(index)
                else:
                    replace(body, slot.path, WITHHELD)
                    report.rewritten = True
        if turn is not None and drop:
            replace(body, slot.path, withhold_docs(slot.text, turn, drop))
            report.rewritten = True
        if cache is not None and seen is not None and len(report.findings) == found:
            cache.mark_clean(seen)
    return report


_ACTED: Mapping[str, Literal["flagged", "blocked", "withheld"]] = {
    "flag": "flagged",
    "block": "blocked",
    "drop": "withheld",
}


def injection_finding(f: Finding, version: str) -> CallFinding:
    """The call record's form of one flagged text: where, score, rule ids, scanner version."""
    subject = f"{f.where}/{f.source}" + (f":{f.doc_id}" if f.doc_id is not None else "")
    return CallFinding(
        "injection",
        "injection",
        _ACTED.get(f.action, "flagged"),
        "request",
        version,
        score=f.score,
        reasons=f.reasons,
        subject=subject,
    )


def leak_finding(
    reasons: Iterable[str],
    action: Literal["flagged", "blocked", "redacted"],
    where: Literal["response", "stream"],
    score: float | None = None,
) -> CallFinding:
    """A leak of the system prompt or its canary, as the call record keeps it."""
    return CallFinding(
        "leak", "leak", action, where, canary.VERSION, score=score, reasons=tuple(reasons)
    )


class ScanCache:
    """Scan verdicts by content hash, in a bounded LRU: a conversation resends its history each
    turn, so each document (and tool result) costs one scan, not one per turn.

    The key is a 128-bit BLAKE2b of the source and the text, so the cache holds no untrusted
    text and a text cannot pass as another; the verdict is the scanner's, before any policy.
    Earlier user turns whose documents were all clean under a policy are remembered by digest
    too (``clean_turn``), so a long history is hashed, not parsed, on each turn.
    """

    __slots__ = ("_clean", "_lru", "_scanner", "_size", "hits", "misses")

    def __init__(self, scanner: InjectionScanner, size: int = 4096) -> None:
        if size < 1:
            raise ValueError("the scan cache needs room for at least one verdict")
        self._scanner = scanner
        self._size = size
        self._lru: OrderedDict[bytes, ScanResult] = OrderedDict()
        self._clean: OrderedDict[bytes, None] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._lru)

    @staticmethod
    def _digest(kind: str, text: str) -> bytes:
        h = hashlib.blake2b(kind.encode(), digest_size=16)
        h.update(b"\0")
        h.update(text.encode("utf-8", "surrogatepass"))
        return h.digest()

    def turn_key(self, text: str, context: str) -> bytes:
        """The digest an earlier user turn is remembered by (``context``: policy and spotlight)."""
        return self._digest("turn|" + context, text)

    def clean_turn(self, key: bytes) -> bool:
        if key in self._clean:
            self._clean.move_to_end(key)
            return True
        return False

    def mark_clean(self, key: bytes) -> None:
        self._clean[key] = None
        if len(self._clean) > self._size:
            self._clean.popitem(last=False)

    def scan(self, text: str, source: Source = "doc") -> ScanResult:
        key = self._digest(source, text)
        res = self._lru.get(key)
        if res is not None:
            self._lru.move_to_end(key)
            self.hits += 1
            return res
        self.misses += 1
        res = self._scanner.scan(text, source)
        self._lru[key] = res
        if len(self._lru) > self._size:
            self._lru.popitem(last=False)
        return res


class InjectionGuard:
    """Refuses, flags, or withholds documents per feature, before the call goes upstream."""

    name = "injection"

    def __init__(
        self,
        policies: Mapping[str, InjectionPolicy | None],
        *,
        scanner: InjectionScanner | None = None,
        scope: Literal["last", "all"] = "last",
        cache_size: int = 4096,
    ) -> None:
        self._policies = dict(policies)
        self._scanner = scanner or InjectionScanner()
        self._scope: Literal["last", "all"] = scope
        self.cache = ScanCache(self._scanner, cache_size)
        # None: a configured feature that turned the scan off (unknown features use "default")
        self.active = any(p is not None for p in self._policies.values())

    async def before(self, call: Call) -> None:
        policy = self._policies.get(call.feature or "default", self._policies.get("default"))
        if policy is None:
            return
        report = inspect_injection(
            call.body,
            call.dialect,
            policy,
            self._scanner,
            self._scope,
            cache=self.cache,
        )
        for f in report.findings:
            call.add_finding(injection_finding(f, self._scanner.version))
        if report.refused is not None:
            r = report.refused
            raise InvalidRequest(
                f"request refused: its {r.source} content looks like a prompt-injection attempt "
                f"({', '.join(r.reasons[:3])})",
                param="messages",
            )


class ScopeRequestGuard:
    """Refuses requests outside a feature's scope without calling the model."""

    name = "scope"

    def __init__(self, scopes: Mapping[str, ScopeGuard | None]) -> None:
        self._scopes = dict(scopes)
        self.active = any(g is not None for g in self._scopes.values())

    async def before(self, call: Call) -> None:
        guard = self._scopes.get(call.feature or "default", self._scopes.get("default"))
        if guard is None:
            return
        text = last_user_text(call.body)
        turn = parse_user_turn(text)
        if turn is not None:  # a builder prompt: judge the user's words, not the documents
            mode, marker = spotlight_of(call.dialect.system_text(call.body))
            text = readable(turn.user or "", mode, marker)
        verdict = guard.check(text)
        if not verdict.allowed:
            reasons = (verdict.reason or "out_of_scope",)
            finding = CallFinding(
                "scope", "scope", "blocked", "request", scope.VERSION, reasons=reasons
            )
            call.add_finding(finding)
            raise PermissionDenied(verdict.message or "out of scope", param="messages")


@dataclass(frozen=True, slots=True)
class LeakPolicy:
    """What a feature does when output leaks its canary or its system prompt."""

    action: LeakAction = "block"
    min_run: int = 60
    watch_system_prompt: bool = True
    replacement: str = "[redacted]"
    shingles: ShinglePolicy | None = DEFAULT_SHINGLES  # partial reproductions; None: off


class LeakGuard:
    """Builds a leak watcher per call from the call's own system prompt (and the canaries in it)."""

    name = "leak"

    def __init__(self, policies: Mapping[str, LeakPolicy | None], *, cache_size: int = 256) -> None:
        self._policies = dict(policies)
        self._cache: OrderedDict[tuple[str, int, ShinglePolicy | None], LeakIndex] = OrderedDict()
        self._cache_size = cache_size
        self.active = any(p is not None for p in self._policies.values())

    def _policy(self, call: Call) -> LeakPolicy | None:
        return self._policies.get(call.feature or "default", self._policies.get("default"))

    def index(self, call: Call, policy: LeakPolicy) -> LeakIndex | None:
        """The (cached) index for this call's system prompt; None when there is nothing to watch."""
        system = call.dialect.system_text(call.body)
        if not system:
            return None
        min_run = policy.min_run if policy.watch_system_prompt else 0
        shingles = policy.shingles if policy.watch_system_prompt else None
        key = (system, min_run, shingles)
        idx = self._cache.get(key)
        if idx is None:
            idx = LeakIndex(extract_canaries(system), system, min_run=min_run, shingles=shingles)
            self._cache[key] = idx
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return idx

    def watcher(self, call: Call) -> LeakWatcher | None:
        """A watcher for this call's output stream, or None if its feature has no leak policy."""
        policy = self._policy(call)
        idx = self.index(call, policy) if policy else None
        if policy is None or idx is None:
            return None
        return idx.watcher(policy.action, replacement=policy.replacement)

    def check(self, call: Call, text: str) -> LeakVerdict | None:
        """A whole (non-streamed) answer: the verdict, with ``emit`` the text to send."""
        policy = self._policy(call)
        idx = self.index(call, policy) if policy else None
        if policy is None or idx is None:
            return None
        return idx.check(text, policy.action)

    async def after(self, call: Call, error: BaseException | None) -> None:
        if not call.output_text or call.has_finding("leak"):
            return
        verdict = self.check(call, "".join(call.output_text))
        if verdict is not None and verdict.leaked:
            call.add_finding(leak_finding(verdict.reasons, "flagged", "response", verdict.score))


def delta_text(fmt: str | Dialect, data: bytes) -> str | None:
    """The text a stream event adds (Anthropic text_delta, OpenAI choices[0].delta.content)."""
    return dialect_for(fmt).delta_text(data)


def with_delta_text(fmt: str | Dialect, data: bytes, text: str) -> bytes:
    """The same stream event carrying ``text`` instead (what a redacting relay sends)."""
    return dialect_for(fmt).with_delta_text(data, text)


# -- prompt versions -----------------------------------------------------------------------


class TemplateSource(Protocol):
    """Where templates are looked up by name and version or label (the store-backed service)."""

    async def template(self, name: str, ref: str) -> Template: ...


def require_selectable(name: str, ref: str, roles: Iterable[str]) -> None:
    """Refuse a version a caller may not pick: anything but a label needs ``prompt_drafts``."""
    if is_label(ref) or DRAFTS_ROLE in roles:
        return
    raise PermissionDenied(
        f"prompt {name!r}: {ref!r} may be an unreleased draft; name a label (such as "
        f"'production'), or use a key with the {DRAFTS_ROLE!r} role",
        param="bastion.version",
    )


async def record_prompt_version(source: TemplateSource, call: Call, claimed: str | None) -> None:
    """Record a ``name@version`` (or ``name@label``) claim as the registry version it names.

    A claim that names no registry version, or cannot be checked now, is dropped and the call
    flagged: a record must only ever name a version that exists. Lookups never fail the call.
    """
    call.prompt_version = None
    if not claimed:
        return
    name, sep, ref = claimed.strip().partition("@")
    plausible = 0 < len(ref) <= (_DIGITS_MAX if ref.isdigit() else _REF_MAX)
    if sep and is_template_name(name) and plausible:
        try:
            t = await source.template(name, ref)
        except (BastionError, LookupError, ValueError):
            pass
        else:
            call.prompt_version = t.ref
            call.flags["prompt_name"] = t.name
            return
    call.flags[UNRESOLVED_FLAG] = True

"""Leak detection: a canary per prompt version, and a stream watcher that catches it — or long verbatim
runs of the system prompt — in model output, across any chunk boundary.

The canary is an HMAC of (template name, version) under a secret: stable across
restarts and replicas, unguessable, and recognisable in a request body
(``extract_canaries``) so the gateway can watch for it without a registry lookup.

``LeakWatcher.feed`` compares text with whitespace removed, so re-wrapped or re-spaced
quotes still match and ``min_run`` counts visible characters. Every window of ``min_run``
characters of the system prompt is indexed once (``LeakIndex``, shareable across
calls); each new output position is checked against that set, so a run of
``min_run`` or more verbatim characters is found wherever the chunks split it. With
``hold`` on, the watcher keeps back only the last ``max(min_run, canary length) - 1``
visible characters — the only text a later chunk could still turn into a leak —
so a blocked or redacted leak never reaches the client even in part. Written by hand:
no library watches a stream for verbatim runs with a bounded hold-back.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

# the leak watcher's revision, carried by every leak finding on a call record
VERSION = "leak-2026.12.04"
CANARY_PREFIX = "bstn-cnry-"
_CANARY = re.compile(r"bstn-cnry-([0-9a-f]{20})")
_WS = re.compile(r"\s+")

LeakAction = Literal["block", "redact", "flag"]
LEAK_ACTIONS: tuple[LeakAction, ...] = ("block", "redact", "flag")


def canary_token(secret: bytes | str, name: str, version: int | str) -> str:
    """The canary for one prompt version: deterministic, and useless to anyone without the secret."""
    key = secret.encode() if isinstance(secret, str) else secret
    msg = f"bastion-canary\x00{name}\x00{version}".encode()
    return CANARY_PREFIX + hmac.new(key, msg, hashlib.sha256).hexdigest()[:20]


def extract_canaries(text: str) -> tuple[str, ...]:
    """The canaries planted in a system prompt, so a gateway can watch for them per call."""
    if CANARY_PREFIX not in text:
        return ()
    return tuple(dict.fromkeys(m.group() for m in _CANARY.finditer(text)))


def normalize_ws(text: str) -> str:
    """Text as compared: whitespace removed (quotes survive re-wrapping and re-spacing)."""
    return _WS.sub("", text)


@dataclass(frozen=True, slots=True)
class LeakVerdict:
    """What to send now, and whether (and how) the output has leaked so far."""

    leaked: bool
    emit: str
    reasons: tuple[str, ...] = ()
    blocked: bool = False


class LeakIndex:
    """What to look for, built once per system prompt and shared by every watcher of it."""

    __slots__ = ("_canary_re", "_grams", "_sys", "hold", "min_run")

    def __init__(
        self, canaries: Iterable[str] = (), system_prompt: str | None = None, *, min_run: int = 60
    ) -> None:
        needles: set[str] = set()
        for c in canaries:
            if not c:
                continue
            needles.add(c)
            m = _CANARY.fullmatch(c)
            if m:
                needles.add(m.group(1))  # the secret part alone is a leak too
        longest = max((len(n) for n in needles), default=0)
        self._canary_re = (
            re.compile("|".join(re.escape(n) for n in sorted(needles, key=len, reverse=True)), re.I)
            if needles
            else None
        )
        self.min_run = max(0, min_run)
        self._sys = normalize_ws(system_prompt or "")
        n = self.min_run
        self._grams: frozenset[int] = (
            frozenset(hash(self._sys[i : i + n]) for i in range(len(self._sys) - n + 1))
            if n > 0 and len(self._sys) >= n
            else frozenset()
        )
        window = n if self._grams else 0
        self.hold = max(window, longest, 1) - 1

    def canary_spans(self, norm: str) -> list[tuple[int, int]]:
        if self._canary_re is None:
            return []
        return [m.span() for m in self._canary_re.finditer(norm)]

    def run_spans(self, norm: str, start: int) -> list[tuple[int, int]]:
        """Windows starting at ``start`` or later that appear verbatim in the system prompt."""
        grams, n, sys_text = self._grams, self.min_run, self._sys
        if not grams:
            return []
        found: list[tuple[int, int]] = []
        for i in range(max(0, start), len(norm) - n + 1):
            w = norm[i : i + n]
            if hash(w) in grams and w in sys_text:
                found.append((i, i + n))
        return found

    def watcher(
        self, action: LeakAction = "block", *, hold: bool = True, replacement: str = "[redacted]"
    ) -> LeakWatcher:
        return LeakWatcher(index=self, action=action, hold=hold, replacement=replacement)

    def check(self, text: str, action: LeakAction = "redact") -> LeakVerdict:
        """A whole (non-streamed) response: the verdict, with ``emit`` the full text to send."""
        w = self.watcher(action)
        first = w.feed(text)
        last = w.finish()
        return LeakVerdict(last.leaked, first.emit + last.emit, last.reasons, last.blocked)


class LeakWatcher:
    """Watches one response stream; ``feed`` each text delta, send ``verdict.emit``, then ``finish``."""

    __slots__ = (
        "_base",
        "_blocked",
        "_checked",
        "_index",
        "_intervals",
        "_marked",
        "_pending",
        "_reasons",
        "_sent",
        "action",
        "hold",
        "replacement",
    )

    def __init__(
        self,
        canaries: Iterable[str] = (),
        system_prompt: str | None = None,
        *,
        min_run: int = 60,
        action: LeakAction = "block",
        hold: bool = True,
        replacement: str = "[redacted]",
        index: LeakIndex | None = None,
    ) -> None:
        if action not in LEAK_ACTIONS:
            raise ValueError(f"unknown leak action {action!r}; expected one of {LEAK_ACTIONS}")
        if action == "redact" and not hold:
            raise ValueError("redaction needs hold=True: text already sent cannot be redacted")
        self._index = index or LeakIndex(canaries, system_prompt, min_run=min_run)
        self.action: LeakAction = action
        self.hold = hold and action != "flag"
        self.replacement = replacement
        self._pending = ""  # raw text still needed for detection, starting at absolute offset _base
        self._base = 0
        self._sent = 0  # absolute offset up to which text has been emitted
        self._checked = 0  # normalised positions of _pending whose windows were checked
        self._intervals: list[tuple[int, int]] = []  # leaked raw spans, absolute, merged
        self._marked: set[int] = set()  # starts of intervals whose replacement was emitted
        self._reasons: set[str] = set()
        self._blocked = False

    @property
    def leaked(self) -> bool:
        return bool(self._reasons)

    def feed(self, delta: str) -> LeakVerdict:
        """Take the next chunk of output; return what may be sent now."""
        if self._blocked:
            return self._verdict("")
        self._pending += delta
        self._detect()
        if self._reasons and self.action == "block":
            self._blocked = True
            return self._verdict("")
        cut = self._cut() if self.hold else len(self._pending)
        emit = self._emit_upto(self._base + cut)
        self._trim(self._cut())
        return self._verdict(emit)

    def finish(self) -> LeakVerdict:
        """End of output: release the held tail (redacted as needed)."""
        if self._blocked:
            return self._verdict("")
        emit = self._emit_upto(self._base + len(self._pending))
        self._trim(len(self._pending))
        return self._verdict(emit)

    def _verdict(self, emit: str) -> LeakVerdict:
        return LeakVerdict(bool(self._reasons), emit, tuple(sorted(self._reasons)), self._blocked)

    def _detect(self) -> None:
        idx = self._index
        norm = normalize_ws(self._pending)
        spans = idx.canary_spans(norm)
        if spans:
            self._reasons.add("canary")
        runs = idx.run_spans(norm, self._checked)
        if runs:
            self._reasons.add("system_prompt")
            spans.extend(runs)
        self._checked = max(self._checked, len(norm) - idx.min_run + 1)
        if spans:
            self._add_intervals(spans)

    def _add_intervals(self, norm_spans: list[tuple[int, int]]) -> None:
        starts, ends = _norm_map(self._pending)
        merged = list(self._intervals)
        for a, b in norm_spans:
            merged.append((self._base + starts[a], self._base + ends[b - 1]))
        merged.sort()
        out: list[tuple[int, int]] = []
        for s, e in merged:
            if out and s <= out[-1][1]:
                out[-1] = (out[-1][0], max(out[-1][1], e))
            else:
                out.append((s, e))
        self._intervals = out

    def _cut(self) -> int:
        """How much of ``_pending`` no later chunk can turn into a leak (ends on a non-space)."""
        p, hold = self._pending, self._index.hold
        cut = len(p) - hold
        while cut > 0:
            short = hold - len(normalize_ws(p[cut:]))
            if short <= 0:
                break
            cut -= short
        return max(cut, 0)

    def _emit_upto(self, end: int) -> str:
        start = self._sent
        if end <= start:
            return ""
        self._sent = end
        out: list[str] = []
        pos = start
        for s, e in self._intervals:
            if e <= pos or s >= end:
                continue
            if s > pos:
                out.append(self._text(pos, s))
            if self.action == "redact":
                if s not in self._marked:
                    self._marked.add(s)
                    out.append(self.replacement)
            else:
                out.append(self._text(max(s, pos), min(e, end)))
            pos = min(e, end)
        if pos < end:
            out.append(self._text(pos, end))
        return "".join(out)

    def _text(self, a: int, b: int) -> str:
        return self._pending[a - self._base : b - self._base]

    def _trim(self, cut: int) -> None:
        """Forget raw text before ``cut`` that is both sent and no longer needed for detection."""
        cut = min(cut, self._sent - self._base)
        if cut <= 0:
            return
        dropped = len(normalize_ws(self._pending[:cut]))
        self._pending = self._pending[cut:]
        self._base += cut
        self._checked = max(0, self._checked - dropped)
        self._intervals = [(s, e) for s, e in self._intervals if e > self._base]
        self._marked = {s for s in self._marked if any(s == i[0] for i in self._intervals)}


def _norm_map(raw: str) -> tuple[list[int], list[int]]:
    """For each compared (visible) character: the raw offset where it starts and where it ends."""
    starts: list[int] = []
    for m in re.finditer(r"\S+", raw):
        a, b = m.span()
        starts.extend(range(a, b))
    return starts, [i + 1 for i in starts]

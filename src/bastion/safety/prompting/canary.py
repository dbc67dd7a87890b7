"""Leak detection: a canary per prompt version, and a stream watcher that catches it, long verbatim
runs of the system prompt, or a partial reproduction of it in model output, across any chunk split.

The canary is an HMAC of (template name, version) under a secret: stable across
restarts and replicas, unguessable, and recognisable in a request body
(``extract_canaries``) so the gateway can watch for it without a registry lookup.

Canaries, the system prompt and the output are all compared in one folded form (``_fold``:
whitespace, case, look-alike letters, zero-width characters and quote or markdown decoration
removed), so a canary with a space in it matches, and re-spaced or re-cased quotes still do.
Three signals: the canary (or its secret part); any ``min_run`` folded characters of the
system prompt verbatim (``LeakIndex`` indexes every such window once); and the prompt's word
shingles (``leak.ShingleIndex``), whose containment catches partial and near-verbatim
reproductions. With ``hold`` on, the watcher keeps back only the last
``max(min_run, canary, longest shingle) - 1`` folded characters — the only text a later chunk
could still turn into a match — so a canary or verbatim run never reaches the client even in
part; and from the first prompt phrase it finds, up to ``suspect_hold`` more raw characters,
so a partial reproduction that crosses the threshold later is redacted or withheld whole.
Written by hand: no library watches a stream for these with a bounded hold-back.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from ._fold import fold, fold_text, is_decoration
from .leak import ShingleIndex, ShinglePolicy, ShingleScore

# the leak watcher's revision, carried by every leak finding on a call record
VERSION = "leak-shingles-2026.12.04"
CANARY_PREFIX = "bstn-cnry-"
_CANARY = re.compile(r"bstn-cnry-([0-9a-f]{20})")

LeakAction = Literal["block", "redact", "flag"]
LEAK_ACTIONS: tuple[LeakAction, ...] = ("block", "redact", "flag")
DEFAULT_SHINGLES = ShinglePolicy()


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


def normalize(text: str) -> str:
    """Text as compared (canaries, prompts and output alike); see ``_fold``."""
    return fold_text(text)


@dataclass(frozen=True, slots=True)
class LeakVerdict:
    """What to send now, whether (and how) the output has leaked so far, and how much of it.

    ``score`` is 1.0 for a canary, else the share of the prompt's shingles reproduced;
    ``reasons`` name the signals ("canary", "system_prompt" for a verbatim run, "shingle:0.62").
    """

    leaked: bool
    emit: str
    reasons: tuple[str, ...] = ()
    blocked: bool = False
    score: float = 0.0


class LeakIndex:
    """What to look for, built once per system prompt and shared by every watcher of it."""

    __slots__ = ("_canary_re", "_grams", "_sys", "hold", "min_run", "shingles", "suspect_hold")

    def __init__(
        self,
        canaries: Iterable[str] = (),
        system_prompt: str | None = None,
        *,
        min_run: int = 60,
        shingles: ShinglePolicy | None = DEFAULT_SHINGLES,
        suspect_hold: int = 600,
    ) -> None:
        needles: set[str] = set()
        self.suspect_hold = max(0, suspect_hold)
        for c in canaries:
            m = _CANARY.fullmatch(c)
            for raw in (c, m.group(1) if m else ""):  # the secret part alone is a leak too
                folded = fold_text(raw)
                if folded:
                    needles.add(folded)
        longest = max((len(n) for n in needles), default=0)
        self._canary_re = (
            re.compile("|".join(re.escape(n) for n in sorted(needles, key=len, reverse=True)))
            if needles
            else None
        )
        self.min_run = max(0, min_run)
        self._sys = fold_text(system_prompt or "")
        n = self.min_run
        self._grams: frozenset[int] = (
            frozenset(hash(self._sys[i : i + n]) for i in range(len(self._sys) - n + 1))
            if n > 0 and len(self._sys) >= n
            else frozenset()
        )
        self.shingles = ShingleIndex(system_prompt or "", shingles) if shingles else None
        window = n if self._grams else 0
        self.hold = max(window, longest, self.shingles.longest if self.shingles else 0, 1) - 1

    def canary_spans(self, norm: str, start: int) -> list[tuple[int, int]]:
        """Canaries starting at ``start`` or later (found as soon as they are complete)."""
        if self._canary_re is None:
            return []
        return [m.span() for m in self._canary_re.finditer(norm, start)]

    def run_spans(self, norm: str, start: int) -> list[tuple[int, int]]:
        """Complete windows starting at ``start`` or later that appear verbatim in the prompt."""
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
        first = w.feed(text, final=True)
        last = w.finish()
        return LeakVerdict(
            last.leaked, first.emit + last.emit, last.reasons, last.blocked, last.score
        )


class LeakWatcher:
    """Watches one response stream; ``feed`` each text delta, send ``verdict.emit``, then ``finish``."""

    __slots__ = (
        "_base",
        "_blocked",
        "_checked",
        "_index",
        "_intervals",
        "_marked",
        "_matched",
        "_pending",
        "_reasons",
        "_score",
        "_sent",
        "_suspect",
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
        shingles: ShinglePolicy | None = DEFAULT_SHINGLES,
        action: LeakAction = "block",
        hold: bool = True,
        replacement: str = "[redacted]",
        index: LeakIndex | None = None,
    ) -> None:
        if action not in LEAK_ACTIONS:
            raise ValueError(f"unknown leak action {action!r}; expected one of {LEAK_ACTIONS}")
        if action == "redact" and not hold:
            raise ValueError("redaction needs hold=True: text already sent cannot be redacted")
        self._index = index or LeakIndex(
            canaries, system_prompt, min_run=min_run, shingles=shingles
        )
        self.action: LeakAction = action
        self.hold = hold and action != "flag"
        self.replacement = replacement
        self._pending = ""  # raw text still needed for detection, starting at absolute offset _base
        self._base = 0
        self._sent = 0  # absolute offset up to which text has been emitted
        self._checked = 0  # folded positions of _pending already searched
        self._intervals: list[tuple[int, int]] = []  # leaked raw spans, absolute, merged
        self._suspect: list[tuple[int, int]] = []  # shingle matches before the shingle verdict
        self._marked: set[int] = set()  # starts of intervals whose replacement was emitted
        self._matched: set[int] = set()  # prompt shingles seen anywhere in the output so far
        self._reasons: set[str] = set()
        self._score = ShingleScore(0.0, 0, False)
        self._blocked = False

    @property
    def leaked(self) -> bool:
        return bool(self._reasons)

    @property
    def score(self) -> float:
        return 1.0 if "canary" in self._reasons else self._score.containment

    def feed(self, delta: str, *, final: bool = False) -> LeakVerdict:
        """Take the next chunk of output; return what may be sent now (``final``: no more follows)."""
        if self._blocked:
            return self._verdict("")
        self._pending += delta
        self._detect(final)
        if self._reasons and self.action == "block":
            self._blocked = True
            return self._verdict("")
        cut = self._emit_cut() if self.hold and not final else len(self._pending)
        emit = self._emit_upto(self._base + cut)
        self._trim(self._cut())
        return self._verdict(emit)

    def finish(self) -> LeakVerdict:
        """End of output: search the tail, then release it (redacted as needed)."""
        if self._blocked:
            return self._verdict("")
        self._detect(True)
        if self._reasons and self.action == "block":
            self._blocked = True
            return self._verdict("")
        emit = self._emit_upto(self._base + len(self._pending))
        self._trim(len(self._pending))
        return self._verdict(emit)

    def _verdict(self, emit: str) -> LeakVerdict:
        reasons = {r for r in self._reasons if r != "shingle"}
        if "shingle" in self._reasons:
            reasons.add(self._score.reason)
        return LeakVerdict(
            bool(self._reasons), emit, tuple(sorted(reasons)), self._blocked, self.score
        )

    def _detect(self, final: bool) -> None:
        idx = self._index
        norm = fold_text(self._pending)
        start = self._checked
        stop = len(norm) if final else max(start, len(norm) - idx.hold)
        self._checked = stop
        # canaries and verbatim runs are caught the moment they are complete (a later call may
        # find them again: merging is idempotent); shingles once the longest one could be
        spans = idx.canary_spans(norm, start)
        if spans:
            self._reasons.add("canary")
        runs = idx.run_spans(norm, start)
        if runs:
            self._reasons.add("system_prompt")
            spans.extend(runs)
        sh = idx.shingles
        if sh and stop > start:
            found = sh.find(norm, start, stop)
            if found:
                self._matched.update(k for k, _, _ in found)
                self._score = sh.score(self._matched)
                suspect = self._raw_spans([(a, b) for _, a, b in found])
                if "shingle" in self._reasons:
                    self._merge(suspect)
                elif self._score.leaked:
                    self._reasons.add("shingle")
                    self._merge(self._suspect + suspect)
                    self._suspect = []
                else:
                    self._suspect.extend(suspect)
        if spans:
            self._merge(self._raw_spans(spans))

    def _raw_spans(self, norm_spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Raw spans of folded matches, widened over the quote or markdown marks hugging them."""
        p, starts = self._pending, fold(self._pending)[1]
        low = max(0, self._sent - self._base)
        out = []
        for a, b in norm_spans:
            s, e = starts[a], starts[b - 1] + 1
            while s > low and is_decoration(p[s - 1]):
                s -= 1
            while e < len(p) and is_decoration(p[e]):
                e += 1
            out.append((self._base + s, self._base + e))
        return out

    def _merge(self, spans: list[tuple[int, int]]) -> None:
        merged = sorted([*self._intervals, *spans])
        out: list[tuple[int, int]] = []
        for s, e in merged:
            if out and s <= out[-1][1]:
                out[-1] = (out[-1][0], max(out[-1][1], e))
            else:
                out.append((s, e))
        self._intervals = out

    def _cut(self) -> int:
        """How much of ``_pending`` no later chunk can turn into a leak (ends on a kept char)."""
        p, hold = self._pending, self._index.hold
        cut = len(p) - hold
        while cut > 0:
            short = hold - len(fold_text(p[cut:]))
            if short <= 0:
                break
            cut -= short
        return max(cut, 0)

    def _emit_cut(self) -> int:
        """``_cut``, but a prompt phrase not yet judged is held too, for at most ``suspect_hold``
        raw characters: a reproduction that crosses the threshold a sentence later is still
        redacted or withheld whole, and an answer that merely shares a phrase is only delayed."""
        cut = self._cut()
        if not self._suspect or "shingle" in self._reasons:
            return cut
        floor = self._base + len(self._pending) - self._index.suspect_hold
        self._suspect = [(s, e) for s, e in self._suspect if s >= floor]
        if self._suspect:
            cut = min(cut, max(0, min(s for s, _ in self._suspect) - self._base))
        return cut

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
        dropped = len(fold_text(self._pending[:cut]))
        self._pending = self._pending[cut:]
        self._base += cut
        self._checked = max(0, self._checked - dropped)
        self._intervals = [(s, e) for s, e in self._intervals if e > self._base]
        self._suspect = [(s, e) for s, e in self._suspect if e > self._sent]
        self._marked = {s for s in self._marked if any(s == i[0] for i in self._intervals)}

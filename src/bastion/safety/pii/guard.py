"""Wiring the scrubber into the call path: a request guard and the output-side rewriters.

``PiiGuard`` opens one ``ScrubSession`` per call (so the prompt, the output and the
record share placeholder numbers), scrubs what goes to the provider for features whose
policy says so, and records what it found as findings on the call: the types and their
counts, never a value (one for the request, one for the answer).
The answer is filtered by the session's ``StreamScrubber``, registered as the call's
output filter (``bastion.output`` applies it to streams and whole replies alike); tool-call
arguments are JSON fragments and are left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ...call import Call
from ...findings import Finding
from ._scrubber import Scrubber, ScrubSession
from ._types import SENSITIVE

OutputMode = Literal["off", "flag", "sensitive", "redact"]

# the PII detectors' revision (patterns, validators, name tagger), carried by every PII finding
VERSION = "pii-2026.12.04"
SENSITIVE_NAMES = frozenset(t.value for t in SENSITIVE)  # the type names session counts use


@dataclass(frozen=True, slots=True)
class PiiPolicy:
    """Per feature: scrub what the provider sees? what the client sees (stream and unary)?

    Call records and logs are always scrubbed (``Scrubber.redact`` in the record guard);
    this policy covers the two boundaries a feature may legitimately need raw.
    """

    provider: bool = False
    output: OutputMode = "sensitive"
    include_system: bool = False  # the system prompt is the app's own text, usually safe


class PiiGuard:
    """Request guard: one session per call, provider-side scrubbing per feature, counts as findings."""

    name = "pii"

    def __init__(
        self,
        scrubber: Scrubber,
        policies: Mapping[str, PiiPolicy] | None = None,
        default: PiiPolicy | None = None,
    ) -> None:
        self.scrubber = scrubber
        self._policies = dict(policies or {})
        self._default = default or PiiPolicy()
        # keyed by the Call object's identity: request ids come from clients and may repeat
        self._sessions: dict[int, ScrubSession] = {}
        # what each session had counted when the request was scrubbed (the rest is the answer's)
        self._request_counts: dict[int, dict[str, int]] = {}
        self.version = VERSION + ("+ner" if scrubber.ner_active else "")

    def policy(self, call: Call) -> PiiPolicy:
        return self._policies.get(call.feature or "default", self._default)

    def session(self, call: Call) -> ScrubSession:
        """This call's session (opened by ``before``; a fresh one if the guard did not run)."""
        s = self._sessions.get(id(call))
        if s is None:
            s = self._sessions[id(call)] = self.scrubber.session()
        return s

    async def before(self, call: Call) -> None:
        session = self.session(call)
        policy = self.policy(call)
        if policy.output != "off":
            # text filter over the answer, streamed or whole (see bastion.output)
            call.output_filters.append(session.stream(mode=policy.output))
        if policy.provider:
            scrub_request(call.body, session, include_system=policy.include_system)
            if session.counts:
                self._request_counts[id(call)] = dict(session.counts)
                call.add_finding(self._finding(session.counts, "redacted", "request"))

    async def after(self, call: Call, error: BaseException | None) -> None:
        session = self._sessions.pop(id(call), None)
        before = self._request_counts.pop(id(call), {})
        if session is None:
            return
        answer = {t: n - before.get(t, 0) for t, n in session.counts.items()}
        answer = {t: n for t, n in answer.items() if n > 0}
        if answer:
            mode = self.policy(call).output
            redacted = mode == "redact" or (
                mode == "sensitive" and any(t in SENSITIVE_NAMES for t in answer)
            )
            call.add_finding(
                self._finding(
                    answer,
                    "redacted" if redacted else "flagged",
                    "stream" if call.stream else "response",
                )
            )

    def _finding(
        self,
        counts: Mapping[str, int],
        action: Literal["redacted", "flagged"],
        where: Literal["request", "response", "stream"],
    ) -> Finding:
        """Types and counts only: the values never leave the session (it keeps only digests)."""
        return Finding(
            "pii",
            "pii",
            action,
            where,
            self.version,
            reasons=tuple(sorted(counts)),
            counts=tuple(sorted(counts.items())),
        )


class PiiLogFilter(logging.Filter):
    """Scrubs every log record a handler emits (message, arguments, traceback text).

    Attach it to *handlers* (a logger's filters do not see records propagated from its
    children): ``for h in logging.getLogger().handlers: h.addFilter(PiiLogFilter(s))``.
    """

    def __init__(self, scrubber: Scrubber) -> None:
        super().__init__()
        self._redact = scrubber.redact

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "bastion_scrubbed", False) is True:
            return True  # scrubbed value by value where it was made (observability/access.py)
        msg = record.getMessage()
        safe = self._redact(msg)
        if safe != msg:
            record.msg, record.args = safe, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self._redact(record.stack_info)
        return True


def _scrub_content(content: Any, scrub: Callable[[str], str]) -> Any:
    if isinstance(content, str):
        return scrub(content)
    if isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            if isinstance(part.get("text"), str):
                part["text"] = scrub(part["text"])
            elif part.get("type") == "tool_result" and "content" in part:
                part["content"] = _scrub_content(part["content"], scrub)
    return content


def scrub_request(
    body: dict[str, Any], session: ScrubSession, *, include_system: bool = False
) -> None:
    """Scrub the message texts of an Anthropic or OpenAI request body in place."""

    def scrub(text: str) -> str:
        return session.scrub(text, mode="redact").text

    if include_system and "system" in body:
        body["system"] = _scrub_content(body["system"], scrub)
    for msg in body.get("messages") or ():
        if not isinstance(msg, dict) or "content" not in msg:
            continue
        if msg.get("role") in ("system", "developer") and not include_system:
            continue
        msg["content"] = _scrub_content(msg["content"], scrub)

"""The ``Call``: everything about one call, carried from the server through every guard."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .findings import Finding
from .providers.base import Format
from .usage import Usage as Usage  # re-exported: callers import it from here

if TYPE_CHECKING:
    from .after_send import AfterSend
    from .dialects import Dialect
    from .store.models import KeyLimits


def _fork(f: Any) -> Any:
    """An output filter for a concurrent attempt: a fresh one where the filter can make it."""
    fork = getattr(f, "fork", None)
    return fork() if callable(fork) else f


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a virtual key (never its secret) and what it may do."""

    key_id: str
    name: str
    feature: str | None = None
    user: str | None = None
    roles: tuple[str, ...] = ()
    limits: KeyLimits | None = None  # the key's own budgets, rates, models and expiry
    team: str | None = None


@dataclass(slots=True)
class ToolCallOut:
    """A tool call in the answer, as the provider sent or streamed it (arguments: JSON text)."""

    id: str
    name: str
    arguments: str = ""


@dataclass(slots=True)
class Attempt:
    """One upstream request: reserved before it is sent, priced at its own model, settled alone.

    ``usage`` is what this attempt's provider reported, or None while unknown (a timeout, a
    cancelled hedge, a stream cut before its final usage): an unknown outcome is settled at
    the attempt's reservation, since the provider may have billed all of it.
    """

    deployment: str
    provider: str
    model: str
    status: int | None = None
    error: str | None = None
    started: float = 0.0
    ended: float = 0.0
    kind: str = "first"  # first | retry | failover | hedge | continuation | repair
    provider_kind: str = ""
    reservation_id: str | None = None
    reserved_usd: float = 0.0
    usage: Usage | None = None
    cost_usd: float = 0.0
    sent: bool = False
    conversation_tokens: int = 0  # held on the conversation's token cap for this attempt
    provider_request_id: str | None = None  # the provider's id of its answer, for support tickets


@dataclass(slots=True)
class Call:
    """One call. Guards read and rewrite ``body``; the router fills attempts, usage and timings;
    safety detectors append ``findings``."""

    request_id: str  # minted by Bastion: the key of the record, reservations and counters
    trace_id: str
    span_id: str
    client_format: Format
    principal: Principal
    body: dict[str, Any]
    requested_model: str
    stream: bool
    user_id: str | None = None
    parent_span_id: str | None = None
    trace_flags: str = "01"
    finish_reason: str | None = None  # as the provider said it (end_turn, stop, tool_calls...)
    response_id: str | None = None  # the provider's id of its answer (msg_..., chatcmpl-...)
    feature: str | None = None
    conversation_id: str | None = None
    prompt_version: str | None = None
    include_usage: bool = False
    started: float = field(default_factory=time.monotonic)
    wall_started: float = field(default_factory=time.time)
    deadline: float = 0.0
    first_byte: float | None = None
    ended: float | None = None
    attempts: list[Attempt] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    served_model: str | None = None
    deployment: str | None = None
    provider: str | None = None
    provider_kind: str | None = None
    status: int = 0
    error_type: str | None = None
    output_text: list[str] = field(default_factory=list)
    tool_calls: list[ToolCallOut] = field(default_factory=list)  # of the answer, for traces
    flags: dict[str, Any] = field(default_factory=dict)  # operational marks, not safety verdicts
    findings: list[Finding] = field(default_factory=list)  # what safety detectors concluded
    stages: dict[str, float] = field(default_factory=dict)
    cost_usd: float = 0.0
    body_bytes: int = 0
    stable_messages: int = 0
    hedge_delay: float | None = None
    output_filters: list[Any] = field(default_factory=list)
    prompt_caching: bool = True
    reservation_id: str | None = None
    client_request_id: str | None = (
        None  # the client's X-Request-Id: stored and echoed, never a key
    )
    cap_subject: str = ""  # who per-user caps and limits count: decided by the key (identity.py)
    budget_caps: tuple[Any, ...] = ()  # the caps every attempt of this call reserves against
    state_plan: Any = None  # counter-store operations planned by guards, sent once per phase
    repairing: bool = False
    # where the server collects work to run once the response is out (after_send.py); None
    # for library calls, which finish before they return
    after_send: AfterSend | None = field(default=None, repr=False, compare=False)
    # the client format's dialect, resolved once here: guards ask it, never the format
    dialect: Dialect = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.dialect = _dialects.dialect_for(self.client_format)

    def shadow(self) -> Call:
        """A copy for one of several concurrent attempts: same request, its own results."""
        return replace(
            self,
            attempts=[],
            usage=Usage(),
            output_text=[],
            tool_calls=[],
            flags={},
            findings=[],
            stages={},
            first_byte=None,
            served_model=None,
            # each concurrent stream gets its own filter state: two hedged answers must never
            # mix in one filter (one's held word released into the other's text)
            output_filters=[_fork(f) for f in self.output_filters],
        )

    def adopt(self, winner: Call) -> None:
        """Take over the results of the shadow whose attempt won."""
        self.output_filters = winner.output_filters
        self.usage = winner.usage
        self.output_text = winner.output_text
        self.tool_calls = winner.tool_calls
        self.served_model = winner.served_model
        self.first_byte = winner.first_byte
        self.response_id = winner.response_id or self.response_id
        self.finish_reason = winner.finish_reason or self.finish_reason
        for k, v in winner.flags.items():
            self.flags.setdefault(k, v)
        for f in winner.findings:
            self.add_finding(f)

    def add_finding(self, finding: Finding) -> None:
        """Record a detector's conclusion (append-only; the same finding twice is kept once)."""
        if finding not in self.findings:
            self.findings.append(finding)

    def has_finding(self, kind: str) -> bool:
        """Whether any detector recorded a finding of this kind on the call."""
        return any(f.kind == kind for f in self.findings)

    def remaining(self) -> float:
        """Seconds left before the call's overall deadline."""
        return self.deadline - time.monotonic()

    @property
    def ttft_ms(self) -> float | None:
        return None if self.first_byte is None else (self.first_byte - self.started) * 1000.0

    @property
    def latency_ms(self) -> float | None:
        return None if self.ended is None else (self.ended - self.started) * 1000.0


# the dialects read calls (their usage and tool calls), so they load after this module's classes
from . import dialects as _dialects  # noqa: E402

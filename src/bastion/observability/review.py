"""Human review: a deterministic 1% sample of calls plus every call a guard flagged.

The sample is a hash of the request id against the feature's rate, so every replica (and a
replay of the same request) makes the same decision without coordination. Text is scrubbed
by the injected scrubber when an item enters the queue and again when it leaves as an eval
case, so a scrubber fixed after the fact still protects the eval set. Scrubbing covers every
field, not just the conversation: a feature name, model, prompt version or trace id is
client-influenced and can carry an email as easily as a prompt can. The request id alone is
kept as written inside the queue (it is the key reviewers look items up by) and is scrubbed
like the rest on export, where it is only a label.

The queue lives in memory for now, behind an async interface the record store can implement.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal, Protocol

from ..call import Call
from ..errors import NotFound
from .recording import prompt_text

__all__ = [
    "DEFAULT_REVIEW_FLAGS",
    "InMemoryReviewQueue",
    "ReviewGuard",
    "ReviewItem",
    "ReviewQueue",
    "ReviewSampler",
    "Verdict",
    "scrub_all",
]

log = logging.getLogger("bastion.review")

Scrub = Callable[[str], str]
Verdict = Literal["good", "bad"]
Status = Literal["pending", "good", "bad"]

# Guard verdicts that put a call in front of a human whenever they are set (truthy).
DEFAULT_REVIEW_FLAGS: Final = frozenset(
    {
        "pii",
        "pii_found",
        "pii_leak",
        "injection",
        "injection_detected",
        "leak",
        "canary_leak",
        "system_prompt_leak",
        "output_invalid",
        "sql_rejected",
        "stream_error",
        "degraded",
    }
)


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str | list | tuple | dict | set):
        return len(value) > 0
    return value is not None


@dataclass(frozen=True, slots=True)
class ReviewSampler:
    """Which calls go to review: the hash sample at each feature's rate, plus flagged calls."""

    default_rate: float = 0.01
    rates: Mapping[str, float] = field(default_factory=dict)
    flags: frozenset[str] = DEFAULT_REVIEW_FLAGS
    score_thresholds: Mapping[str, float] = field(default_factory=lambda: {"injection_score": 0.5})
    salt: str = ""

    def __post_init__(self) -> None:
        for name, rate in {"default": self.default_rate, **self.rates}.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"review rate for {name!r} must be within [0, 1], got {rate!r}")

    def rate(self, feature: str | None) -> float:
        return self.rates.get(feature or "default", self.default_rate)

    def sampled(self, request_id: str, feature: str | None = None) -> bool:
        """Deterministic: the first 64 bits of sha256(salt + request_id) below rate * 2**64."""
        rate = self.rate(feature)
        if rate <= 0.0:
            return False
        digest = hashlib.sha256((self.salt + request_id).encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") < rate * 2.0**64

    def reasons(self, call: Call) -> tuple[str, ...]:
        """Why this call needs review ("sample", "flag:<name>"); empty when it does not."""
        out = [
            f"flag:{k}"
            for k, v in call.flags.items()
            if (k in self.flags and _truthy(v))
            or (
                k in self.score_thresholds
                and isinstance(v, int | float)
                and not isinstance(v, bool)
                and v >= self.score_thresholds[k]
            )
        ]
        for f in call.findings:  # a detector's finding counts under its kind, as a flag did
            reason = f"flag:{f.kind}"
            if f.problem and f.kind in self.flags and reason not in out:
                out.append(reason)
            limit = self.score_thresholds.get(f"{f.kind}_score")
            reason = f"flag:{f.kind}_score"
            if limit is not None and f.score is not None and f.score >= limit and reason not in out:
                out.append(reason)
        if self.sampled(call.request_id, call.feature):
            out.insert(0, "sample")
        return tuple(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReviewItem:
    """One call waiting for (or given) a human verdict; its text is already scrubbed."""

    request_id: str
    trace_id: str
    ts: float
    feature: str | None
    model: str
    prompt_version: str | None
    reasons: tuple[str, ...]
    input_text: str
    output_text: str
    status: Status = "pending"
    note: str = ""
    reviewed_at: float | None = None


class ReviewQueue(Protocol):
    """Where review items wait; async so a store-backed queue can replace the in-memory one."""

    async def add(self, item: ReviewItem) -> bool:
        """Queue an item; False (and nothing changes) if its request_id is already queued."""
        ...

    async def get(self, request_id: str) -> ReviewItem | None: ...

    async def list(
        self, status: Status | None = None, feature: str | None = None, limit: int = 100
    ) -> list[ReviewItem]:
        """Newest first."""
        ...

    async def mark(self, request_id: str, verdict: Verdict, note: str = "") -> ReviewItem:
        """Record a reviewer's verdict; raises ``NotFound`` for an unknown request_id."""
        ...

    async def export_as_eval_case(self, request_id: str) -> dict[str, Any]:
        """The item as an eval case, text scrubbed once more on the way out."""
        ...


def scrub_all(value: Any, scrub: Scrub) -> Any:
    """Every string inside ``value`` through ``scrub``, so no field leaves unscrubbed by omission."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, Mapping):
        return {k: scrub_all(v, scrub) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_all(v, scrub) for v in value]
    return value


class InMemoryReviewQueue:
    """A bounded in-process queue; when full, the oldest item makes room."""

    def __init__(self, scrub: Scrub, *, max_items: int = 10_000) -> None:
        if max_items < 1:
            raise ValueError("max_items must be >= 1")
        self._scrub = scrub
        self._max = max_items
        self._items: OrderedDict[str, ReviewItem] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    async def add(self, item: ReviewItem) -> bool:
        if item.request_id in self._items:
            return False
        while len(self._items) >= self._max:
            self._items.popitem(last=False)
        self._items[item.request_id] = item
        return True

    async def get(self, request_id: str) -> ReviewItem | None:
        return self._items.get(request_id)

    async def list(
        self, status: Status | None = None, feature: str | None = None, limit: int = 100
    ) -> list[ReviewItem]:
        out: list[ReviewItem] = []
        for item in reversed(self._items.values()):
            if len(out) >= limit:
                break
            if (status is None or item.status == status) and (
                feature is None or item.feature == feature
            ):
                out.append(item)
        return out

    async def mark(self, request_id: str, verdict: Verdict, note: str = "") -> ReviewItem:
        if verdict not in ("good", "bad"):
            raise ValueError(f"verdict must be 'good' or 'bad', not {verdict!r}")
        item = self._items.get(request_id)
        if item is None:
            raise NotFound(f"no review item for request {request_id!r}")
        marked = replace(item, status=verdict, note=self._scrub(note), reviewed_at=time.time())
        self._items[request_id] = marked
        return marked

    async def export_as_eval_case(self, request_id: str) -> dict[str, Any]:
        item = self._items.get(request_id)
        if item is None:
            raise NotFound(f"no review item for request {request_id!r}")
        case = {
            "id": item.request_id,
            "input": item.input_text,
            # a good answer is the expected one; a bad one is kept as what must not be produced
            "expected": item.output_text if item.status == "good" else None,
            "rejected": item.output_text if item.status == "bad" else None,
            "label": item.status,
            "note": item.note,
            "metadata": {
                "feature": item.feature,
                "model": item.model,
                "prompt_version": item.prompt_version,
                "reasons": list(item.reasons),
                "trace_id": item.trace_id,
            },
        }
        # the whole case, identifiers included: a field added above is scrubbed without a thought
        scrubbed: dict[str, Any] = scrub_all(case, self._scrub)
        return scrubbed


class ReviewGuard:
    """Queues each sampled or flagged call once, its text scrubbed and truncated first."""

    name = "review"
    after_send = True  # only reads the finished call: may run once the response is out

    def __init__(
        self,
        sampler: ReviewSampler,
        queue: ReviewQueue,
        scrub: Scrub,
        *,
        body_max_chars: int = 4000,
    ) -> None:
        self._sampler = sampler
        self._queue = queue
        self._scrub = scrub
        self._max = body_max_chars

    def _text(self, s: str) -> str:
        s = self._scrub(s)
        return s if len(s) <= self._max else s[: self._max] + "…"

    def item_for(self, call: Call, reasons: tuple[str, ...]) -> ReviewItem:
        s = self._scrub
        return ReviewItem(
            request_id=call.request_id,  # the key reviewers look items up by; scrubbed on export
            trace_id=s(call.trace_id),
            ts=call.wall_started,
            feature=None if call.feature is None else s(call.feature),
            model=s(call.served_model or call.requested_model),
            prompt_version=None if call.prompt_version is None else s(call.prompt_version),
            reasons=tuple(s(r) for r in reasons),
            input_text=self._text(prompt_text(call.body)),
            output_text=self._text("".join(call.output_text)),
        )

    async def after(self, call: Call, error: BaseException | None) -> None:
        try:
            reasons = self._sampler.reasons(call)
            if reasons:
                await self._queue.add(self.item_for(call, reasons))
        except Exception:
            log.exception("review: could not queue call %s", call.request_id)

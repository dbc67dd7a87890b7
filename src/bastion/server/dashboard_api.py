"""The dashboard's latency-budget and review-queue answers, and the helpers its endpoints share.

Functions of the gateway and the parsed request only: the transport (admin key, body, JSON,
errors) stays in :mod:`bastion.server.dashboard`, which routes to these.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from ..errors import Conflict, InvalidRequest, NotFound
from ..gateway import Gateway
from ..observability.review import ReviewItem, Status, Verdict
from ..store import CallRecord, GroupBy

__all__ = [
    "MAX_MINUTES",
    "SCAN_LIMIT",
    "SPEND_GROUPS",
    "STAGES",
    "Query",
    "Window",
    "int_param",
    "percentile",
    "review_export",
    "review_list",
    "review_mark",
    "spend_breakdown",
    "stage_budgets",
    "window",
]

Query = dict[str, list[str]]

SCAN_LIMIT: Final = 5000  # calls read per request for rates and percentiles: bounds a refresh
STAGES: Final = ("auth_routing", "guards", "retrieval", "first_token", "total")
REVIEW_PREVIEW_CHARS: Final = 600
NOTE_MAX_CHARS: Final = 2000
REQUEST_ID_MAX_CHARS: Final = 256
REVIEW_STATUSES: Final[dict[str, Status | None]] = {
    "all": None,
    "pending": "pending",
    "good": "good",
    "bad": "bad",
}
PENDING_COUNT_LIMIT: Final = 1000
MAX_MINUTES: Final = 7 * 24 * 60
# what the spend panel breaks spend down by: the answer's name for it, and the ledger column
SPEND_GROUPS: Final[dict[str, GroupBy]] = {
    "key": "key_id",
    "user": "user_id",
    "model": "model",
    "feature": "feature",
}
SPEND_ROWS: Final = 25  # rows per breakdown; the rest are summed into one "others" row


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile: always a value that was really observed."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100.0 * len(ordered)) - 1)]


def int_param(q: Query, name: str, default: int, lo: int, hi: int) -> int:
    raw = q.get(name, [str(default)])[-1]
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"{name}: must be an integer", param=name) from None
    if not lo <= value <= hi:
        raise InvalidRequest(f"{name}: must be between {lo} and {hi}", param=name)
    return value


@dataclass(frozen=True, slots=True)
class Window:
    """The time range a request asked for: the last ``minutes`` before ``end``."""

    minutes: int
    start: float
    end: float

    def holds(self, ts: float) -> bool:
        return self.start <= ts <= self.end

    def as_dict(self) -> dict[str, Any]:
        return {"minutes": self.minutes, "start": self.start, "end": self.end}


def window(q: Query, default: int = 60, now: float | None = None) -> Window:
    """The range every tile, chart and table of one page refresh is computed over."""
    minutes = int_param(q, "minutes", default, 1, MAX_MINUTES)
    end = time.time() if now is None else now
    return Window(minutes, end - minutes * 60.0, end)


# -- spend by key, user, model and feature -----------------------------------------------------


async def spend_breakdown(gw: Gateway, q: Query, now: float | None = None) -> dict[str, Any]:
    """The ledger's spend over the range, grouped four ways, largest first.

    The ledger (not the call log) is read, so retention never hides money that was spent; a
    key is labelled with its name, revoked keys included.
    """
    w = window(q, now=now)
    # entries are stamped when the call settles; ``end`` is inclusive for one just written
    end = w.end + 1e-6
    names = {k.id: k.name for k in await gw.store.list_keys(include_revoked=True)}
    by: dict[str, Any] = {}
    total = (await gw.store.spend_between(w.start, end)).get(None, 0.0)
    for name, column in SPEND_GROUPS.items():
        sums = await gw.store.spend_between(w.start, end, column)
        if column == "feature" and None in sums:
            # calls without a feature are capped by the ``default`` feature's budget
            sums["default"] = sums.get("default", 0.0) + sums.pop(None)
        rows = sorted(sums.items(), key=lambda kv: (-kv[1], kv[0] or ""))
        shown = [_spend_row(name, g, usd, names) for g, usd in rows[:SPEND_ROWS]]
        rest = rows[SPEND_ROWS:]
        if rest:
            shown.append(
                {
                    "group": None,
                    "label": f"{len(rest)} more",
                    "spend_usd": sum(usd for _, usd in rest),
                    "others": len(rest),
                }
            )
        by[name] = shown
    return {"window": w.as_dict(), "total_usd": total, "by": by}


def _spend_row(by: str, group: str | None, usd: float, names: dict[str, str]) -> dict[str, Any]:
    if group is None:
        label = f"(no {by})"
    elif by == "key" and group in names:
        label = names[group]
    else:
        label = group
    return {"group": group, "label": label, "spend_usd": usd}


# -- latency budget per stage ------------------------------------------------------------------


def _stage_ms(c: CallRecord, stage: str) -> float | None:
    v = c.stages.get(stage)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _over(c: CallRecord) -> set[str]:
    """The stages the gateway flagged over the feature's budget when it finished the call."""
    flagged = c.flags.get("over_budget")
    return {s for s in flagged if isinstance(s, str)} if isinstance(flagged, list) else set()


def _feature_stages(gw: Gateway, name: str, calls: Sequence[CallRecord]) -> dict[str, Any]:
    budget = gw.config.feature(name).latency_budget
    seen = {s for c in calls for s in c.stages}
    stages = []
    for stage in (*STAGES, *sorted(seen - set(STAGES))):
        values = [v for c in calls if (v := _stage_ms(c, stage)) is not None]
        limit = getattr(budget, f"{stage}_ms", None)
        over = sum(1 for c in calls if stage in _over(c))
        p95 = percentile(values, 95)
        stages.append(
            {
                "stage": stage,
                "samples": len(values),
                "p50": percentile(values, 50),
                "p95": p95,
                "budget_ms": limit,
                "p95_over_budget": p95 is not None and limit is not None and p95 > limit,
                "over_budget_calls": over,
                # the share of the calls that measured this stage (retrieval is app-reported)
                "over_budget_rate": over / len(values) if values else None,
            }
        )
    any_over = sum(1 for c in calls if _over(c))
    return {
        "feature": name,
        "requests": len(calls),
        "over_budget_calls": any_over,
        "over_budget_rate": any_over / len(calls) if calls else None,
        "stages": stages,
    }


async def stage_budgets(gw: Gateway, q: Query) -> dict[str, Any]:
    """Per feature, each stage's p50/p95 against the feature's budget and the share flagged."""
    w = window(q)
    groups: dict[str, list[CallRecord]] = {}
    for c in await gw.store.recent_calls(SCAN_LIMIT):
        if w.holds(c.ts):
            # calls without a feature run under the ``default`` feature's budget
            groups.setdefault(c.feature if c.feature is not None else "default", []).append(c)
    return {
        "minutes": w.minutes,
        "window": w.as_dict(),
        "sample_limit": SCAN_LIMIT,
        "stages": list(STAGES),
        "features": [_feature_stages(gw, name, groups[name]) for name in sorted(groups)],
    }


# -- review queue ------------------------------------------------------------------------------


def _preview(text: str) -> str:
    return text if len(text) <= REVIEW_PREVIEW_CHARS else text[:REVIEW_PREVIEW_CHARS] + "…"


def _review_row(item: ReviewItem) -> dict[str, Any]:
    """One item as the page shows it; the text was scrubbed when the item was queued."""
    return {
        "request_id": item.request_id,
        "trace_id": item.trace_id,
        "ts": item.ts,
        "feature": item.feature,
        "model": item.model,
        "prompt_version": item.prompt_version,
        "reasons": list(item.reasons),
        "input_text": _preview(item.input_text),
        "output_text": _preview(item.output_text),
        "input_chars": len(item.input_text),
        "output_chars": len(item.output_text),
        "status": item.status,
        "note": item.note,
        "reviewed_at": item.reviewed_at,
    }


def _request_id(body: dict[str, Any]) -> str:
    rid = body.get("request_id")
    if not isinstance(rid, str) or not 0 < len(rid) <= REQUEST_ID_MAX_CHARS:
        raise InvalidRequest(
            f"request_id: required string of up to {REQUEST_ID_MAX_CHARS} characters",
            param="request_id",
        )
    return rid


async def review_list(gw: Gateway, q: Query) -> dict[str, Any]:
    """Queued items, newest first, optionally of one status or feature."""
    raw = q.get("status", ["all"])[-1] or "all"
    if raw not in REVIEW_STATUSES:
        raise InvalidRequest("status: one of all, pending, good, bad", param="status")
    limit = int_param(q, "limit", 50, 1, 500)
    feature = q.get("feature", [""])[-1] or None
    queue = gw.review_queue
    items = await queue.list(REVIEW_STATUSES[raw], feature, limit)
    pending = len(await queue.list("pending", None, PENDING_COUNT_LIMIT))
    return {
        "status": raw,
        "items": [_review_row(i) for i in items],
        "pending": pending,
        "pending_more": pending >= PENDING_COUNT_LIMIT,
    }


async def review_mark(gw: Gateway, body: dict[str, Any]) -> dict[str, Any]:
    """A reviewer's verdict (good or bad) and note; the note is scrubbed before it is kept."""
    rid = _request_id(body)
    raw = body.get("verdict")
    if raw not in ("good", "bad"):
        raise InvalidRequest("verdict: 'good' or 'bad'", param="verdict")
    verdict: Verdict = "good" if raw == "good" else "bad"
    note = body.get("note", "")
    if note is None:
        note = ""
    if not isinstance(note, str) or len(note) > NOTE_MAX_CHARS:
        raise InvalidRequest(f"note: a string of up to {NOTE_MAX_CHARS} characters", param="note")
    item = await gw.review_queue.mark(rid, verdict, note.strip())
    return {"item": _review_row(item)}


async def review_export(gw: Gateway, body: dict[str, Any]) -> dict[str, Any]:
    """A reviewed item as an eval case; the queue scrubs its text once more on the way out."""
    rid = _request_id(body)
    item = await gw.review_queue.get(rid)
    if item is None:
        raise NotFound(f"no review item for request {rid!r}")
    if item.status == "pending":
        raise Conflict("mark the item good or bad before exporting it as an eval case")
    return await gw.review_queue.export_as_eval_case(rid)

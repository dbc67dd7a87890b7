"""The guard that turns each finished call into a call record and a ledger entry (queued, not written)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..call import Call
from ..clock import DayClock
from ..store import CallRecord, LedgerEntry
from .recorder import Recorder

Scrub = Callable[[str], str]


def prompt_text(body: dict[str, Any]) -> str:
    """The text of the last user turn: what a reviewer needs to see, without the whole history."""
    msgs = body.get("messages")
    if not isinstance(msgs, list):
        texts = body.get("input")  # an embeddings call: the texts it embedded
        if isinstance(texts, str):
            return texts
        if isinstance(texts, list) and all(isinstance(t, str) for t in texts):
            return "\n".join(texts)
        return ""
    for m in reversed(msgs):
        if isinstance(m, dict) and m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, str):
                return c
            if isinstance(c, list):
                return "\n".join(
                    p["text"] for p in c if isinstance(p, dict) and isinstance(p.get("text"), str)
                )
    return ""


class RecordGuard:
    """Builds the record after the call; the recorder writes it in the background."""

    name = "record"

    def __init__(
        self,
        recorder: Recorder,
        clock: DayClock,
        *,
        body_max_chars: int = 4000,
        scrub: Scrub | None = None,
    ) -> None:
        self._recorder = recorder
        self._clock = clock
        self._max = body_max_chars
        self._scrub = scrub

    def _text(self, s: str) -> str:
        if self._scrub is not None:
            s = self._scrub(s)
        return s if len(s) <= self._max else s[: self._max] + "…"

    async def after(self, call: Call, error: BaseException | None) -> None:
        u = call.usage
        ended = call.ended if call.ended is not None else time.monotonic()
        ts = call.wall_started
        status = call.status or (200 if error is None else 500)
        attempts = len(call.attempts)
        deployments = len({a.deployment for a in call.attempts}) if attempts > 1 else attempts
        record = CallRecord(
            request_id=call.request_id,
            trace_id=call.trace_id,
            ts=ts,
            api_format=call.client_format,
            requested_model=call.requested_model,
            key_id=call.principal.key_id,
            user_id=call.user_id,
            feature=call.feature,
            conversation_id=call.conversation_id,
            served_model=call.served_model,
            deployment=call.deployment,
            provider=call.provider,
            prompt_name=call.flags.get("prompt_name"),
            prompt_version=call.prompt_version,
            stream=call.stream,
            status=status,
            error_type=call.error_type,
            input_text=self._text(prompt_text(call.body)),
            output_text=self._text("".join(call.output_text)),
            input_tokens=u.input_tokens,
            output_tokens=u.output_tokens,
            cache_read_tokens=u.cache_read_tokens,
            cache_write_tokens=u.cache_write_tokens,
            cost_usd=call.cost_usd,
            latency_ms=(ended - call.started) * 1000.0,
            ttft_ms=call.ttft_ms,
            attempts=attempts,
            failover=deployments > 1,
            hedged=bool(call.flags.get("hedged")),
            degraded=bool(call.flags.get("degraded")),
            retried=attempts > deployments,
            flags=dict(call.flags),
            stages=dict(call.stages),
            client_request_id=call.client_request_id,
            findings=tuple(call.findings),
        )
        ledger = None
        if call.cost_usd > 0 or u.input_tokens or u.output_tokens:
            ledger = LedgerEntry(
                request_id=call.request_id,
                ts=ts,
                day=self._clock.day(ts),
                model=call.served_model or call.requested_model,
                key_id=call.principal.key_id,
                user_id=call.user_id,
                feature=call.feature,
                input_tokens=u.input_tokens,
                output_tokens=u.output_tokens,
                cache_read_tokens=u.cache_read_tokens,
                cache_write_tokens=u.cache_write_tokens,
                cost_usd=call.cost_usd,
            )
        self._recorder.submit(record, ledger)

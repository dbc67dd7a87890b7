"""Online quality: the reference-free scorers run on sampled production calls, off the request path.

A call that is sampled (a deterministic share per feature) or flagged by a guard is
queued — bounded, dropped and counted when full — and a background task scores it:
no PII in the answer, no system-prompt leak, valid JSON when JSON was asked for, and
whether the model refused. Results feed a metric and a rolling pass rate per feature
and scorer, so the dashboard shows quality over time beside cost and latency. The
answer text lives only in that queue; it is never written anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..call import Call

SCORERS = ("no_pii", "no_leak", "valid_json", "refusal")
# findings that put an answer in front of the scorers whatever the sample rate
_FLAGGED_KINDS = frozenset({"pii", "leak", "injection"})


@dataclass(frozen=True, slots=True)
class Sample:
    feature: str
    model: str
    text: str
    leaked: bool
    wants_json: bool


def _wants_json(body: Mapping[str, Any]) -> bool:
    rf = body.get("response_format")
    return isinstance(rf, dict) and rf.get("type") in ("json_object", "json_schema")


class OnlineQuality:
    """After-hook plus a background scorer; ``summary()`` feeds the dashboard."""

    name = "online_quality"
    after_send = True  # only reads the finished call: may run once the response is out

    def __init__(
        self,
        scrub_findings: Any,
        *,
        rate: float = 0.05,
        rates: Mapping[str, float] | None = None,
        max_queue: int = 1000,
        window: int = 500,
        on_result: Any = None,
    ) -> None:
        self._findings = scrub_findings  # text -> number of PII findings
        self._rate = rate
        self._rates = dict(rates or {})
        self._queue: asyncio.Queue[Sample] = asyncio.Queue(maxsize=max_queue)
        self._window = window
        self._results: dict[tuple[str, str], deque[bool]] = {}
        self._on_result = on_result
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.scored = 0

    def _sampled(self, call: Call) -> bool:
        rate = self._rates.get(call.feature or "default", self._rate)
        if rate <= 0:
            return False
        h = int.from_bytes(hashlib.sha256(call.request_id.encode()).digest()[:8], "big")
        return h / 2**64 < rate

    async def after(self, call: Call, error: BaseException | None) -> None:
        if error is not None or not call.output_text:
            return
        flagged = "stream_error" in call.flags or any(
            f.kind in _FLAGGED_KINDS for f in call.findings
        )
        if not (flagged or self._sampled(call)):
            return
        sample = Sample(
            feature=call.feature or "default",
            model=call.served_model or call.requested_model,
            text="".join(call.output_text),
            leaked=call.has_finding("leak"),
            wants_json=_wants_json(call.body),
        )
        try:
            self._queue.put_nowait(sample)
        except asyncio.QueueFull:
            self.dropped += 1

    def score(self, s: Sample) -> dict[str, bool]:
        """Each scorer's verdict (True = good) for one answer."""
        from ..evals.detectors import (
            is_refusal,  # the eval suites' own detector; lazy: evals imports us
        )

        out = {"no_pii": self._findings(s.text) == 0, "no_leak": not s.leaked}
        if s.wants_json:
            try:
                json.loads(s.text)
                out["valid_json"] = True
            except ValueError:
                out["valid_json"] = False
        out["refusal"] = not is_refusal(s.text)  # True: answered; the rate of refusals is 1 - pass
        return out

    def _record(self, s: Sample, verdicts: Mapping[str, bool]) -> None:
        for scorer, ok in verdicts.items():
            d = self._results.setdefault((s.feature, scorer), deque(maxlen=self._window))
            d.append(ok)
            if self._on_result is not None:
                self._on_result(s.feature, scorer, ok)
        self.scored += 1

    async def drain(self) -> None:
        """Score everything queued now (tests, shutdown)."""
        while not self._queue.empty():
            s = self._queue.get_nowait()
            self._record(s, self.score(s))

    async def _run(self) -> None:
        while True:
            s = await self._queue.get()
            self._record(s, self.score(s))
            await asyncio.sleep(0)  # scoring is CPU work: yield between samples

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="bastion-quality")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def summary(self) -> dict[str, dict[str, dict[str, float]]]:
        """Pass rate and sample count per feature and scorer over the rolling window."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for (feature, scorer), d in sorted(self._results.items()):
            if d:
                out.setdefault(feature, {})[scorer] = {
                    "pass_rate": sum(d) / len(d),
                    "n": float(len(d)),
                }
        return out

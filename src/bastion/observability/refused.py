"""Requests refused before they became calls are observed like calls: counted, logged, recorded.

The gateway refuses some requests before any guard runs: a body that is not JSON, a request
that fails validation, an unknown model (404), ``n`` a deployment cannot serve. Without this,
those 4xx answers appeared nowhere (not in recent calls, not in metrics). A refusal by a caller
who presented a valid key becomes a short call record (the key, the model asked for, the
status and the reason); a request with no valid key, or for no route at all, is counted and
logged but never written to the store, so an unauthenticated flood cannot fill the database.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

from ..call import Call, Principal
from ..dialects import Dialect, dialect_for
from ..errors import BastionError
from ..schema import header_token
from .access import AccessGuard, AccessLog
from .metrics import Metrics, MetricsGuard, refusal_guard
from .recording import RecordGuard


def _status(exc: BaseException) -> int:
    return exc.http_status() if isinstance(exc, BastionError) else 500


class RefusalObservers:
    """The after-phase observers (access line, metrics, record) for a refused request."""

    def __init__(self, access: AccessLog, metrics: Metrics, record: RecordGuard) -> None:
        self._access_log = access
        self._metrics = metrics
        self.access = AccessGuard(access)
        self.metrics = MetricsGuard(metrics)
        self.record = record

    def unauthenticated(self, method: str, path: str, exc: BaseException) -> None:
        """No valid key or no such route: counted and logged, never written to the store."""
        self._metrics.observe_refusal(exc)
        self._access_log.refusal(
            ts=time.time(), method=method, path=path, status=_status(exc), exc=exc
        )

    async def refused(
        self,
        fmt: str | Dialect,
        exc: BaseException,
        principal: Principal,
        body: Mapping[str, Any] | None,
        headers: Mapping[str, str],
        received: float,
        feature: str | None,
    ) -> str:
        """Observe one refused request of an authenticated caller (``fmt``: its format or that
        format's dialect); returns its request id."""
        model = body.get("model") if body is not None else None
        call = Call(
            request_id="req_" + uuid.uuid4().hex,
            trace_id=uuid.uuid4().hex,
            span_id=uuid.uuid4().hex[:16],
            client_format=dialect_for(fmt).format,
            principal=principal,
            body=dict(body) if body is not None else {},
            requested_model=model[:200] if isinstance(model, str) else "",
            stream=body is not None and body.get("stream") is True,
            user_id=principal.user,
            feature=feature,
            client_request_id=header_token(headers.get("x-request-id"), 128),
            started=received,
        )
        call.ended = time.monotonic()
        call.status = _status(exc)
        call.error_type = type(exc).__name__
        call.flags["refused_by"] = refusal_guard(exc)  # the reason, as a category: no content
        for observer in (self.metrics, self.record, self.access):
            await observer.after(call, exc)
        return call.request_id

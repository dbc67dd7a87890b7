"""The record guard counts attempts, failover and retries from one pass over the attempts
(issue 16): the record says what the definitions say, for any sequence of attempts."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.call import Attempt, Call, Principal
from bastion.clock import DayClock
from bastion.observability.recording import RecordGuard
from bastion.providers.base import Format
from bastion.store import CallRecord, LedgerEntry


class _Sink:
    def __init__(self) -> None:
        self.records: list[CallRecord | None] = []

    def submit(self, record: CallRecord | None, ledger: LedgerEntry | None = None) -> None:
        self.records.append(record)


@settings(max_examples=200, deadline=None)
@given(deployments=st.lists(st.sampled_from(["a", "b", "c"]), max_size=5))
def test_attempts_failover_and_retried_follow_their_definitions(deployments: list[str]) -> None:
    call = Call(
        request_id="req_x",
        trace_id="t",
        span_id="s",
        client_format=Format.OPENAI,
        principal=Principal(key_id="k", name="n"),
        body={"messages": [{"role": "user", "content": "hi"}]},
        requested_model="m",
        stream=False,
    )
    call.attempts = [Attempt(deployment=d, provider="p", model="m") for d in deployments]
    sink = _Sink()
    guard: Any = RecordGuard(sink, DayClock("UTC"))
    asyncio.run(guard.after(call, None))
    (record,) = sink.records
    assert record is not None
    distinct = len(set(deployments))
    assert record.attempts == len(deployments)
    assert record.failover is (distinct > 1)
    assert record.retried is (len(deployments) > distinct)

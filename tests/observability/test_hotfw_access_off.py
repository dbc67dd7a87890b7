"""The access guard builds no entry when access lines are off (``log_level`` warning), and
still writes one when they are on (issue 16: no work for a log level that is off)."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.call import Call, Principal
from bastion.observability import access
from bastion.observability.access import AccessGuard, AccessLog
from bastion.providers.base import Format


def _call() -> Call:
    return Call(
        request_id="req_1",
        trace_id="t" * 32,
        span_id="s" * 16,
        client_format=Format.OPENAI,
        principal=Principal(key_id="k", name="key"),
        body={},
        requested_model="m",
        stream=False,
    )


@settings(max_examples=20, deadline=None)
@given(level=st.sampled_from([logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR]))
def test_an_entry_is_built_exactly_when_a_line_is_written(level: int) -> None:
    import asyncio

    logger = logging.getLogger("bastion.test.hotfw.access")
    logger.setLevel(level)
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Keep()
    logger.addHandler(handler)
    built: list[str] = []
    real = access.AccessEntry.of_call

    def counting(call: Call, error: BaseException | None, now: float) -> access.AccessEntry:
        built.append(call.request_id)
        return real(call, error, now)

    mp = pytest.MonkeyPatch()
    mp.setattr(access.AccessEntry, "of_call", staticmethod(counting))
    try:
        asyncio.run(AccessGuard(AccessLog("text", logger)).after(_call(), None))
    finally:
        mp.undo()
        logger.removeHandler(handler)
    on = level <= logging.INFO
    assert len(built) == len(lines) == (1 if on else 0)

"""A failed connection of the store's own Redis client fails every caller in flight on it,
and no caller ever gets another caller's reply, however requests, replies (cut anywhere),
cancellations and the failure interleave. Driven at the protocol level (a fake transport):
the order is the test's, not the scheduler's."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.exceptions import ConnectionError, TimeoutError

from bastion.state._resp import ProtocolError, ReplyParser, _Conn, encode_command


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.aborted, "a write after the connection was dropped"
        self.written += bytes(data)

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


# one step: a new caller, the server answering the oldest unanswered requests (its bytes
# delivered in the given chunks), a caller cancelling, or the connection failing one way
_steps = st.one_of(
    st.tuples(st.just("call"), st.integers(1, 3)),
    st.tuples(st.just("answer"), st.integers(1, 4), st.lists(st.integers(1, 9), max_size=4)),
    st.tuples(st.just("cancel"), st.integers(0, 20)),
    st.tuples(st.sampled_from(["reset", "eof", "garbage", "unasked", "timeout"]), st.none()),
)


def _fail(conn: _Conn, how: str, outstanding: bytes) -> None:
    if how == "reset":
        conn.connection_lost(ConnectionResetError("reset by peer"))
    elif how == "eof":
        conn.eof_received()
        conn.connection_lost(None)
    elif how == "garbage":
        conn.data_received(b"!not resp\r\n")
    elif how == "unasked":  # every outstanding reply, then one nobody asked for
        conn.data_received(outstanding + b":1\r\n")
    else:
        conn.fail(TimeoutError, "Timeout reading from fake")  # what the timer does


def _reply(token: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(token), token)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(_steps, max_size=25))
def test_no_caller_gets_another_callers_reply(steps: list[tuple[Any, ...]]) -> None:
    async def run() -> None:
        conn = _Conn("fake", 60.0)
        transport = FakeTransport()
        conn.connection_made(transport)
        callers: list[tuple[bytes, asyncio.Future[Any]]] = []
        answered = 0  # requests the server has answered, in order
        failed_at: int | None = None  # how many callers existed when the connection failed
        for step in steps:
            kind = step[0]
            if kind == "call":
                for _ in range(step[1]):
                    token = b"caller-%d" % len(callers)
                    callers.append((token, conn.request(encode_command(["ECHO", token]))))
            elif kind == "answer":
                n = min(step[1], len(callers) - answered)
                raw = b"".join(_reply(t) for t, _ in callers[answered : answered + n])
                answered += n
                if failed_at is not None:  # the transport is gone: nothing arrives
                    continue
                start = 0
                for size in [*step[2], len(raw)]:
                    conn.data_received(raw[start : start + size])
                    start += size
                    if start >= len(raw):
                        break
            elif kind == "cancel":
                if callers:
                    callers[step[1] % len(callers)][1].cancel()
            elif failed_at is None:
                failed_at = len(callers)
                outstanding = b"".join(_reply(t) for t, _ in callers[answered:])
                if kind == "unasked":
                    answered = len(callers)
                _fail(conn, kind, outstanding)
            else:
                _fail(conn, kind, b"")  # a failed connection fails again: a no-op
        # what the server saw is exactly the callers' requests, in their order
        sent = ReplyParser().feed(transport.written)
        asked = len(callers) if failed_at is None else failed_at
        assert sent == [[b"ECHO", t] for t, _ in callers[:asked]]
        for i, (token, fut) in enumerate(callers):
            if not fut.done():  # still waiting: only on a live connection, never answered
                assert failed_at is None and i >= answered
                fut.cancel()
                continue
            if fut.cancelled():
                continue
            exc = fut.exception()
            if exc is None:
                assert fut.result() == token  # its own reply, never another's
                assert failed_at is None or i < failed_at
            else:
                # in flight at the failure or asked after it: the connection's error
                assert failed_at is not None
                assert isinstance(exc, ConnectionError | TimeoutError | ProtocolError)
        if failed_at is not None:
            assert conn.failed and transport.aborted

    asyncio.run(run())


def test_a_reply_for_a_cancelled_caller_is_skipped_not_handed_on() -> None:
    async def run() -> None:
        conn = _Conn("fake", 60.0)
        conn.connection_made(FakeTransport())
        first = conn.request(encode_command(["ECHO", "a"]))
        second = conn.request(encode_command(["ECHO", "b"]))
        first.cancel()
        conn.data_received(b"$1\r\na\r\n$1\r\nb\r\n")
        assert await second == b"b"

    asyncio.run(run())

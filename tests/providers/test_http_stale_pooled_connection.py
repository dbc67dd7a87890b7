"""A request whose body could not be written on a pooled connection is sent once more.

A provider (or a proxy before it) closes keep-alive connections that idled past its timeout.
A call that picks such a connection from the pool fails with aiohttp's "Can not write request
body": the provider never had the request. Failing the attempt for that made bursts after an
idle spell fail several in a row, and five in a row open the deployment's breaker (seen in the
side-by-side bench: 1,600 calls answered 503 breaker_open). The transport now sends it once
more; a second such failure is an UpstreamConnectError marked not reached (nothing billed, a
connect failure to the breaker policy). Any other connection error is not retried: the
provider may have acted on the request.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.errors import UpstreamConnectError
from bastion.providers.base import UpstreamRequest
from bastion.providers.http import HttpTransport

_UNSENT = aiohttp.ClientOSError(32, "Can not write request body for http://127.0.0.1:1/v1/x")


class _Answer:
    status = 200
    headers: dict[str, str] = {"x-request-id": "r1"}


class _Session:
    """Stands in for aiohttp's session: raises the scripted errors, then answers."""

    def __init__(self, errors: list[BaseException]) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def request(self, *args: Any, **kwargs: Any) -> object:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return _Answer()


def _transport(session: _Session) -> HttpTransport:
    t = HttpTransport()
    t._session = session  # type: ignore[assignment]
    return t


def _req() -> UpstreamRequest:
    return UpstreamRequest(
        "POST", "http://127.0.0.1:1/v1/x", {"content-type": "application/json"}, b"{}"
    )


async def test_unsent_body_on_a_stale_connection_is_sent_again() -> None:
    s = _Session([_UNSENT])
    got = await _transport(s).send(_req(), timeout=5)
    assert s.calls == 2 and got.status == 200


async def test_twice_unsent_is_a_connect_failure_the_provider_never_saw() -> None:
    s = _Session([_UNSENT, _UNSENT])
    with pytest.raises(UpstreamConnectError) as got:
        await _transport(s).send(_req(), timeout=5)
    assert s.calls == 2 and got.value.reached is False


@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from(
        [
            aiohttp.ServerDisconnectedError(),
            aiohttp.ClientOSError(104, "Connection reset by peer"),
            aiohttp.ClientPayloadError("cut"),
            ConnectionResetError(104, "reset"),
        ]
    )
)
def test_other_connection_errors_are_not_sent_twice(exc: BaseException) -> None:
    import asyncio

    s = _Session([exc])
    with pytest.raises(UpstreamConnectError) as got:
        asyncio.run(_transport(s).send(_req(), timeout=5))
    assert s.calls == 1  # the provider may have acted on it: one request, never two
    assert got.value.reached is True

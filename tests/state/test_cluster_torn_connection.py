"""A command whose connection redis-py closed under it (a failed node's connections are all
closed at once, in-flight ones included) fails closed as an outage, not as an AttributeError
that escapes the store: seen in CI as ``'NoneType' object has no attribute 'writelines'``
during a master's failover."""

from __future__ import annotations

import pytest
from redis.asyncio.connection import Connection

from bastion.state.redis import _torn_down


async def test_redis_pys_own_closed_stream_error_is_an_outage() -> None:
    conn = Connection(host="127.0.0.1", port=6379)  # never connected: its writer is None
    with pytest.raises(AttributeError) as info:
        await conn._send_packed_command([b"PING\r\n"])
    assert _torn_down(info.value)


def test_an_attribute_error_elsewhere_is_not_swallowed() -> None:
    thing = None
    with pytest.raises(AttributeError) as info:
        thing.writelines([b"x"])  # type: ignore[attr-defined]
    assert not _torn_down(info.value)  # raised here, not in redis-py: a bug, re-raised

    class Obj:
        pass

    with pytest.raises(AttributeError) as info2:
        Obj().missing  # type: ignore[attr-defined]  # noqa: B018
    assert not _torn_down(info2.value)

"""A value too big for the state host's wire is the store refusing it, not the caller's bug.

A frame is at most ``MAX_FRAME`` bytes (64 MiB). An idempotent answer is stored whole, so a
very large one (a big embeddings batch) could not be sent: before, that raised ``WireError``
(a ``ValueError``) out of ``idem_complete``, which the gateway treats as a bug (a 500 after the
upstream call was made and paid for), where an unreachable store is logged and the answer still
goes out. It now raises ``StateUnavailable``: the store could not take it. Other calls on the
connection go on, and a value of a type the wire does not carry is still a ``WireError``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator

import pytest

from bastion.errors import StateUnavailable
from bastion.state import IdemOutcome, MemoryCounterStore, _wire
from bastion.state.host import StateHost
from bastion.state.remote import RemoteCounterStore


@pytest.fixture
async def host() -> AsyncIterator[StateHost]:
    d = tempfile.mkdtemp(prefix="shb-")
    h = StateHost(MemoryCounterStore(), os.path.join(d, "s.sock"))
    await h.start()
    try:
        yield h
    finally:
        await h.stop()
        shutil.rmtree(d, ignore_errors=True)


async def test_an_answer_too_big_to_keep_is_the_store_refusing_it(
    host: StateHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_wire, "MAX_FRAME", 4096)  # the worker's side of the wire
    remote = RemoteCounterStore(host.path, timeout_seconds=1.0)
    try:
        assert (await remote.idem_begin("k", "fp", 60.0, 30.0, "o")).outcome is IdemOutcome.NEW
        with pytest.raises(StateUnavailable, match="too big"):
            await remote.idem_complete("k", "fp", os.urandom(8192), 60.0)
        assert await remote.idem_complete("k", "fp", b"small", 60.0)  # the connection goes on
        with pytest.raises(_wire.WireError):
            await remote.set_flag("f", "on", {"x": object()})  # not on the wire: a bug
    finally:
        await remote.close()

"""The embedded state shares its flags through its file: a flip in one process reaches the others."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from bastion.errors import StateUnavailable
from bastion.reliability.killswitch import KillSwitchGuard, set_kill
from bastion.state import MemoryCounterStore


async def test_a_flag_set_by_one_store_is_seen_by_another_on_the_same_file(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    # a long write-behind interval: the flag must not wait for it
    gateway = MemoryCounterStore(path, flush_interval=60)
    cli = MemoryCounterStore(path, flush_interval=60)
    try:
        assert await gateway.get_flags("kill:") == {}
        await cli.set_flag("kill:global", "on", {"who": "oncall", "at": 1.5})
        assert await gateway.get_flags("kill:") == {"kill:global": "on"}
        assert await gateway.flag_meta("kill:global") == {"who": "oncall", "at": 1.5}
        await gateway.set_flag("kill:global", None, {"who": "bob"})
        assert await cli.get_flags("kill:") == {}
        assert await cli.flag_meta("kill:global") == {"who": "bob"}
    finally:
        await gateway.close()
        await cli.close()


async def test_a_flag_written_by_another_process_is_seen_without_a_restart(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    store = MemoryCounterStore(str(path), flush_interval=60)
    try:
        await store.incr("warm", 1, 60)  # started, file created
        script = (
            "import asyncio\n"
            "from bastion.state import MemoryCounterStore\n"
            "async def main():\n"
            f"    s = MemoryCounterStore({str(path)!r})\n"
            "    await s.set_flag('kill:feature:drafts', 'on', {'who': 'other process'})\n"
            "    await s.close()\n"
            "asyncio.run(main())\n"
        )
        subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
        assert await store.get_flags("kill:") == {"kill:feature:drafts": "on"}
        assert (await store.flag_meta("kill:feature:drafts") or {})["who"] == "other process"
    finally:
        await store.close()


async def test_own_write_behind_does_not_undo_a_flag_another_process_set(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    a = MemoryCounterStore(path, flush_interval=0.05)
    b = MemoryCounterStore(path, flush_interval=0.05)
    try:
        await a.set_flag("kill:global", "on", {"who": "a"})
        await b.set_flag("kill:global", None, {"who": "b"})
        await a.incr("busy", 1, 60)  # gives a's writer something to flush
        await asyncio.sleep(0.2)
        assert await a.get_flags("kill:") == {}
        assert await b.get_flags("kill:") == {}
    finally:
        await a.close()
        await b.close()
    reopened = MemoryCounterStore(path)
    try:
        assert await reopened.get_flags("kill:") == {}
        assert await reopened.flag_meta("kill:global") == {"who": "b"}
    finally:
        await reopened.close()


async def test_the_guard_of_one_gateway_obeys_a_switch_flipped_through_another_within_a_poll(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "state.db")
    mine, other = MemoryCounterStore(path), MemoryCounterStore(path)
    guard = KillSwitchGuard(mine, 0.05, fail_open=False)
    try:
        assert await guard.flags() == {}
        await set_kill(other, True, who="oncall", feature="default")
        await asyncio.sleep(0.06)
        assert await guard.flags() == {"kill:feature:default": "on"}
    finally:
        await mine.close()
        await other.close()


async def test_calls_arriving_during_a_flag_read_wait_for_that_one_read() -> None:
    reads = 0

    class SlowStore(MemoryCounterStore):
        async def get_flags(self, prefix: str = "") -> dict[str, str]:
            nonlocal reads
            reads += 1
            await asyncio.sleep(0.05)
            return await super().get_flags(prefix)

    store = SlowStore()
    await set_kill(store, True, who="before start", feature="default")
    guard = KillSwitchGuard(store, 10.0, fail_open=False)
    try:
        # a burst at start-up: one read, and no call passes before it has answered
        seen = await asyncio.gather(*(guard.flags() for _ in range(50)))
        assert reads == 1 and all(f == {"kill:feature:default": "on"} for f in seen)
        await set_kill(store, True, who="me")
        guard.invalidate()  # this replica flipped it: the next call reads again
        flags = await guard.flags()
        assert flags == {"kill:global": "on", "kill:feature:default": "on"} and reads == 2
    finally:
        await store.close()


async def test_a_failed_read_refuses_every_waiting_call_and_the_next_call_reads_again() -> None:
    fail = True

    class FlakyStore(MemoryCounterStore):
        async def get_flags(self, prefix: str = "") -> dict[str, str]:
            await asyncio.sleep(0.02)
            if fail:
                raise StateUnavailable("down")
            return await super().get_flags(prefix)

    store = FlakyStore()
    closed, open_ = (
        KillSwitchGuard(store, 10.0, fail_open=False),
        KillSwitchGuard(store, 10.0, fail_open=True),
    )
    try:
        results = await asyncio.gather(*(closed.flags() for _ in range(5)), return_exceptions=True)
        assert all(isinstance(r, StateUnavailable) for r in results)
        assert await open_.flags() == {}  # fail open: the last known flags (none yet)
        fail = False
        await set_kill(store, True, who="me")
        assert await closed.flags() == {"kill:global": "on"}
    finally:
        await store.close()

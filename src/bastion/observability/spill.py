"""Durable JSON-lines files that several processes share: the spill file and the quarantine.

Replicas started from one config share these paths, so each append takes an exclusive
``flock`` on the file, checks that the path still names the file it opened (a replayer may have
just moved it aside), writes, and fsyncs before returning: a record handed here survives power
loss. Replay takes the file by renaming it to a work file under a second lock, so exactly one
process replays at a time and an append never lands in a file that was already read.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["JsonlFile"]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class JsonlFile:
    """One shared, append-only, fsynced file of JSON lines."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.work = self.path.with_name(self.path.name + ".replay")
        self._claim_lock = self.path.with_name(self.path.name + ".lock")
        self._claim_fd: int | None = None

    def exists(self) -> bool:
        """Whether anything waits to be replayed (new lines, or a replay cut short)."""
        return self.path.exists() or self.work.exists()

    def append(self, lines: Iterable[bytes]) -> int:
        """Append lines (each ending in a newline) durably; raise ``OSError`` if that fails."""
        data = b"".join(lines)
        if not data:
            return 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(100):
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    same = False
                if not same:
                    continue  # moved aside for replay between open and lock: open the new one
                _write_all(fd, data)
                os.fsync(fd)
                return len(data)
            finally:
                os.close(fd)  # releases the lock
        raise OSError(f"could not append to {self.path}: it keeps being replaced")

    # -- replay -----------------------------------------------------------------------------------

    def claim(self) -> Path | None:
        """Become this file's only replayer and return the work file to read; None if another
        process is replaying or there is nothing to replay. Call ``release`` afterwards."""
        if self._claim_fd is not None:
            return None
        if not self.exists():
            return None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._claim_lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        self._claim_fd = fd
        if self.work.exists():
            return self.work  # a replay cut short (crash, outage): resume it first
        try:
            src = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            self.release()
            return None
        try:
            fcntl.flock(src, fcntl.LOCK_EX)  # wait out an append in progress
            try:
                os.replace(self.path, self.work)
            except FileNotFoundError:
                self.release()
                return None
        finally:
            os.close(src)
        return self.work

    def release(self) -> None:
        """Let another process (or a later round) replay."""
        fd, self._claim_fd = self._claim_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
